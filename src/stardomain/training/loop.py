"""Training of regular (source / held-out) models with the paper's recipe.

The recipe is data (a :class:`Recipe`) so it can be stored in checkpoint metadata and in
experiment configs. Training is deterministic on CPU for a given seed: the initial weights come
from ``torch.manual_seed(seed)`` and the batch order/augmentation of epoch ``e`` depends only on
``(seed, e)`` (see :class:`stardomain.data.TensorLoader`), which is also what makes a resumed run
identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from stardomain._util.logits import logits_of
from stardomain._util.progress import Progress, ProgressConfig
from stardomain.errors import StardomainError, reject_unknown_keys
from stardomain.training.execution import autocast, check_channels_last, grad_scaler, with_cudnn_autotune

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
STATE_KIND = "training-state"  # the kind of train_model's resumable state (stardomain.training.state)
# how a run executes rather than what it trains: left out of to_dict() at these defaults, so the
# identity of every fp32 run recorded before these fields existed is unchanged
_EXECUTION_DEFAULTS: dict[str, Any] = {"precision": "fp32", "channels_last": False, "compile": False}


@dataclass
class Recipe:
    """How a model is trained. Defaults are the paper's CIFAR recipe (App. A)."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    epochs: int = 200
    batch_size: int = 128
    schedule: str = "cosine"
    warmup_epochs: int = 0
    augment: bool = True
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + grad scaler, CUDA only)
    channels_last: bool = False  # NHWC convnets, where stardomain.training.memformat finds it safe
    compile: bool = False  # torch.compile the training forward/backward

    def __post_init__(self) -> None:
        self._check_types()
        for key in ("lr", "momentum", "weight_decay"):  # inf or NaN would train a whole zoo to NaN
            if not math.isfinite(getattr(self, key)):
                raise StardomainError(f"recipe: {key} must be a finite number (got {getattr(self, key)})")
        if self.momentum < 0 or self.momentum >= 1:
            raise StardomainError(f"recipe: momentum must be in [0, 1), e.g. 0.9 (got {self.momentum})")
        if self.weight_decay < 0:
            raise StardomainError(f"recipe: weight_decay must be >= 0, e.g. 5e-4 (got {self.weight_decay})")
        if self.optimizer not in OPTIMIZERS:
            raise StardomainError(f"recipe: unknown optimizer '{self.optimizer}'; use one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise StardomainError(f"recipe: unknown schedule '{self.schedule}'; use one of {', '.join(SCHEDULES)}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise StardomainError(f"recipe: {key} must be >= 1 (got {getattr(self, key)})")
        if not self.lr > 0:
            raise StardomainError(f"recipe: lr must be > 0 (got {self.lr})")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs + 1:
            raise StardomainError(f"recipe: warmup_epochs must be in [0, epochs] (got {self.warmup_epochs})")
        if self.precision not in PRECISIONS:
            raise StardomainError(f"recipe: unknown precision '{self.precision}'; use one of {', '.join(PRECISIONS)}")

    def _check_types(self) -> None:
        """Each field's type, naming the key: a YAML ``epochs: '2'`` must not reach a comparison (or an optimizer)."""
        for f in fields(self):
            value, want = getattr(self, f.name), _FIELD_TYPES[f.name]
            if want is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif want is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, want)
            if not ok:
                what = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}[want]
                raise StardomainError(f"recipe: {f.name} must be {what} (got {value!r})")

    def to_dict(self) -> dict[str, Any]:
        """Every field, except execution options (precision, channels_last, compile) at their defaults."""
        return {k: v for k, v in asdict(self).items() if _EXECUTION_DEFAULTS.get(k, object()) != v}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        reject_unknown_keys("recipe", d, (f.name for f in fields(cls)))
        return cls(**dict(d))

    def replace(self, **changes: Any) -> "Recipe":
        return Recipe.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})

    def without_execution(self) -> "Recipe":
        """The same schedule with the execution options at their defaults (fp32, NCHW, eager): what a
        star inherits from its sources, since Starlight implements none of them."""
        return self.replace(**_EXECUTION_DEFAULTS)


_FIELD_TYPES: dict[str, type] = {f.name: {"str": str, "float": float, "bool": bool, "int": int}[str(f.type)] for f in fields(Recipe)}

_SMALL_RECIPES: dict[str, dict[str, Any]] = {
    # 1,437 training images: many short epochs, no augmentation (8x8 digits do not crop well)
    "digits": dict(lr=0.05, epochs=15, batch_size=64, weight_decay=5e-4, augment=False),
    "mnist": dict(lr=0.05, epochs=10, batch_size=128, weight_decay=5e-4, augment=False),
    "fashion_mnist": dict(lr=0.05, epochs=10, batch_size=128, weight_decay=5e-4, augment=False),
}


# the datasets with a default recipe: the paper's for CIFAR-style and image-folder data, a short one for the small ones;
# any other (a file, a dataset factory, a plugin's) gets a recipe only by an explicit choice of its epochs
RECIPE_DATASETS = ("cifar10", "cifar100", "imagefolder", *_SMALL_RECIPES)


def has_default_recipe(dataset_name: str) -> bool:
    """Whether ``dataset_name`` has a default recipe (:data:`RECIPE_DATASETS`); others need their epochs set."""
    from stardomain.data import canonical_name

    try:
        return canonical_name(dataset_name) in RECIPE_DATASETS
    except StardomainError:
        return False


def no_recipe_refusal(dataset_name: str, how: str) -> StardomainError:
    """The one line refusing to train ``dataset_name`` (no default recipe) with no epochs set; ``how`` says where to set them."""
    return StardomainError(
        f"dataset {dataset_name} has no default recipe (only {', '.join(sorted(RECIPE_DATASETS))} have one): "
        f"choose its training budget, {how}"
    )


def generic_values(recipe: Recipe, explicit: Iterable[str]) -> str:
    """The recipe values not chosen explicitly, in one phrase (what a dataset without a default recipe trains with)."""
    keys = ("optimizer", "lr", "batch_size", "weight_decay", "schedule", "augment")
    return ", ".join(f"{k} {getattr(recipe, k)}" for k in keys if k not in set(explicit))


def default_recipe(dataset_name: str, optimizer: str = "sgd") -> Recipe:
    """The paper's recipe for CIFAR-style data, a short one for digits/MNIST; Adam at lr 1e-3.

    The name is canonicalised first (``fmnist`` -> ``fashion_mnist``): looked up as typed, an
    alias would silently get the 200-epoch CIFAR recipe.
    """
    from stardomain.data import canonical_name

    recipe = Recipe(**_SMALL_RECIPES.get(canonical_name(dataset_name), {}))
    if optimizer == "adam":
        recipe = recipe.replace(optimizer="adam", lr=1e-3, nesterov=False)
    elif optimizer != "sgd":
        recipe = recipe.replace(optimizer=optimizer)  # validates, raises
    return recipe


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (used by layer initialisation) and return a private generator."""
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def make_optimizer(params: Iterable[torch.Tensor], recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0, weight_decay=recipe.weight_decay
    )


def make_loader(dataset: Any, recipe: Recipe, seed: int, device: str | torch.device = "cpu") -> Any:
    """The training loader of run ``seed``: its batch order and augmentation depend on (seed, epoch) only.

    Shared by one-at-a-time and batched training so a model sees the same batches either way.
    """
    if hasattr(dataset, "train_loader"):  # the SplitData protocol (tensor or streamed datasets)
        return dataset.train_loader(batch_size=recipe.batch_size, augment=recipe.augment, seed=seed, device=device)
    from stardomain.data import TensorLoader

    return TensorLoader(
        dataset.train_x,
        dataset.train_y,
        batch_size=recipe.batch_size,
        shuffle=True,
        augment=recipe.augment and bool(getattr(dataset, "augment", False)),  # a duck-typed dataset: no augmentation
        fill=dataset.black() if hasattr(dataset, "black") else 0.0,
        seed=seed,
        device=device,
    )


def lr_at(recipe: Recipe, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate at a global step: optional linear warm-up, then cosine decay to 0 (paper App. A)."""
    warm = recipe.warmup_epochs * steps_per_epoch
    if step < warm:
        return recipe.lr * (step + 1) / warm
    if recipe.schedule == "constant":
        return recipe.lr
    progress = (step - warm) / max(1, total_steps - warm)
    return 0.5 * recipe.lr * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024, device: str | torch.device = "cpu"
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction in [0, 1]) of a model in eval mode."""
    from stardomain.data.loader import slice_batches

    return evaluate_batches(model, slice_batches(x, y, batch_size), device=device)


@torch.no_grad()
def evaluate_batches(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: str | torch.device = "cpu"
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over ``batches`` (e.g. a streamed split), summed on the device.

    Sums stay device tensors (float64 loss, as exact as summing the batches' floats on the host),
    so a GPU evaluation synchronises once at the end, not twice per batch.
    """
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    n = 0
    for xb, yb in batches:
        xb = xb.to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        logits = logits_of(model(xb))  # a Hugging Face model's ModelOutput too
        total_loss += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
        n += len(yb)
    model.train(was_training)
    n = max(1, n)
    return total_loss.item() / n, correct.item() / n


def evaluate_split(
    model: nn.Module, dataset: Any, split: str, device: str | torch.device = "cpu", batch_size: int = 1024
) -> tuple[float, float]:
    """Loss and accuracy on a whole split of any dataset (tensors or streamed)."""
    from stardomain.data.protocol import eval_batches

    return evaluate_batches(model, eval_batches(dataset, split, batch_size, device), device=device)


def _train_epoch(
    model: nn.Module,
    step_model: Callable[[torch.Tensor], torch.Tensor],
    loader: Any,
    opt: torch.optim.Optimizer,
    recipe: Recipe,
    epoch: int,
    steps_per_epoch: int,
    *,
    amp: Callable[[], Any],
    scaler: Any,
    channels_last: bool,
    device: str | torch.device,
    meter: Progress,
) -> dict[str, Any]:
    """One epoch of :func:`train_model`; its record: epoch number, train loss and accuracy over the epoch's batches."""
    total = recipe.epochs * steps_per_epoch
    model.train()
    loader.epoch = epoch
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for i, (xb, yb) in enumerate(loader):
        for group in opt.param_groups:
            group["lr"] = lr_at(recipe, epoch * steps_per_epoch + i, total, steps_per_epoch)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with amp():
            logits = step_model(xb)
            loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:  # fp16: scaled backward; a step with inf/nan gradients is skipped and the scale lowered
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        loss_sum += loss.detach() * len(yb)
        correct += (logits.detach().argmax(1) == yb).sum()
        seen += len(yb)
        meter.inner(i + 1, steps_per_epoch)
    return {"epoch": epoch + 1, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen}


def _restore(
    resume_path: str | os.PathLike | None, model: nn.Module, opt: torch.optim.Optimizer, scaler: Any
) -> tuple[int, list[dict[str, Any]]]:
    """Load a saved training state into model, optimizer and grad scaler: (first epoch to run, history so far)."""
    from stardomain.training.state import load_training_state

    history: list[dict[str, Any]] = []
    start_epoch = 0
    saved = load_training_state(resume_path, opt, kind=STATE_KIND)
    if saved is not None:
        model.load_state_dict(saved.model)
        start_epoch, history = saved.epoch, list(saved.meta["history"])
        if scaler is not None and saved.meta.get("grad_scaler"):
            scaler.load_state_dict(saved.meta["grad_scaler"])
    return start_epoch, history


def _save(
    resume_path: str | os.PathLike, epoch: int, model: nn.Module, opt: torch.optim.Optimizer, scaler: Any, history: list[dict[str, Any]]
) -> None:
    """Save the training state after ``epoch`` epochs (atomically), for :func:`_restore`."""
    from stardomain.training.state import save_training_state

    save_training_state(
        resume_path,
        kind=STATE_KIND,
        epoch=epoch,
        model=model.state_dict(),
        optimizer=opt,
        arch=getattr(model, "arch", None),
        history=history,
        **({"grad_scaler": scaler.state_dict()} if scaler is not None else {}),
    )


@with_cudnn_autotune
def train_model(
    model: nn.Module,
    dataset: Any,
    recipe: Recipe,
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool | ProgressConfig | None = None,
    resume_path: str | os.PathLike | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    eval_every: int = 1,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``dataset`` (a :class:`stardomain.data.Dataset`, or any
    dataset of :mod:`stardomain.data.protocol`, e.g. a streamed image folder).

    Returns per-epoch metrics (train loss/acc over the epoch's batches, test loss/acc).
    With ``resume_path`` the full training state (weights, optimizer, epoch, history) is saved
    atomically after each epoch and picked up again on the next call, so an interrupted run
    continues to exactly the weights an uninterrupted one reaches. The recipe's precision,
    channels_last and compile options change how steps execute, never what is stored: weights
    stay fp32 and the model is handed back in NCHW. Inside an epoch nothing waits for the
    device (except fp16's grad scaler, which checks every step for overflow).
    """
    from stardomain.data.protocol import example_input
    from stardomain.training.memformat import module_to_format, to_channels_last
    from stardomain.training.state import remove_training_state

    dev = torch.device(device)
    amp = autocast(recipe.precision, dev)  # refuses e.g. fp16 on a CPU before any work
    check_channels_last(recipe.channels_last, dev)  # likewise NHWC training off CUDA
    scaler = grad_scaler(recipe.precision, dev)
    model.to(dev)
    loader = make_loader(dataset, recipe, seed, device)
    # NHWC only where a trial forward agrees; compile the step's forward (the weights stay `model`'s)
    channels_last = recipe.channels_last and to_channels_last(model, example_input(dataset))
    step_model = torch.compile(model) if recipe.compile else model
    opt = make_optimizer(model.parameters(), recipe)
    steps_per_epoch = len(loader)
    start_epoch, history = _restore(resume_path, model, opt, scaler)
    meter = Progress(f"train seed={seed}", recipe.epochs, unit="epoch", progress=progress, initial=start_epoch)
    for epoch in range(start_epoch, recipe.epochs):
        record = _train_epoch(
            model,
            step_model,
            loader,
            opt,
            recipe,
            epoch,
            steps_per_epoch,
            amp=amp,
            scaler=scaler,
            channels_last=channels_last,
            device=device,
            meter=meter,
        )
        if (epoch + 1) % eval_every == 0 or epoch + 1 == recipe.epochs:
            record["test_loss"], record["test_acc"] = evaluate_split(model, dataset, "test", device=device)
        history.append(record)
        meter.step(train_loss=record["train_loss"], test_loss=record.get("test_loss"), test_acc=record.get("test_acc"))
        if on_epoch is not None:
            on_epoch(record)
        if resume_path is not None and epoch + 1 < recipe.epochs:
            _save(resume_path, epoch + 1, model, opt, scaler, history)
    meter.close()
    model.eval()
    if channels_last:  # hand back an ordinary NCHW model (view-flattening callers, checkpoints)
        module_to_format(model, torch.contiguous_format)
    remove_training_state(resume_path)
    return history


def final_metrics(model: nn.Module, dataset: Any, device: str | torch.device = "cpu") -> dict[str, float]:
    """Train/test loss and accuracy of a finished model (no augmentation), for checkpoint metadata."""
    tr_loss, tr_acc = evaluate_split(model, dataset, "train", device=device)
    te_loss, te_acc = evaluate_split(model, dataset, "test", device=device)
    return {"train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss, "test_acc": te_acc}
