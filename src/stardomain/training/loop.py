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
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from stardomain._util.logits import logits_of
from stardomain._util.metrics import LossAccuracy
from stardomain._util.progress import Progress, ProgressConfig
from stardomain.training.execution import autocast, check_channels_last, grad_scaler, with_cudnn_autotune
from stardomain.training.recipe import (  # noqa: F401  (re-exported: the recipe's names were defined here before)
    OPTIMIZERS,
    PRECISIONS,
    RECIPE_DATASETS,
    SCHEDULES,
    Recipe,
    default_recipe,
    generic_values,
    has_default_recipe,
    no_recipe_refusal,
)

if TYPE_CHECKING:
    from stardomain.data.protocol import AnyData, Data, TrainBatches

STATE_KIND = "training-state"  # the kind of train_model's resumable state (stardomain.training.state)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (used by layer initialisation) and return a private generator."""
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def make_optimizer(params: Iterable[torch.Tensor], recipe: Recipe, fused_sgd: bool = False) -> torch.optim.Optimizer:
    """The recipe's optimizer. ``fused_sgd``: SGD as one fused kernel per tensor (torch's ``fused=True``):
    the same update, to float rounding (its vectorised part matched the default SGD to the bit on CPU)."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        params,
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov and recipe.momentum > 0,
        weight_decay=recipe.weight_decay,
        **({"fused": True} if fused_sgd else {}),
    )


def make_loader(dataset: AnyData, recipe: Recipe, seed: int, device: str | torch.device = "cpu") -> TrainBatches:
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
    meter = LossAccuracy()
    for xb, yb in batches:
        xb = xb.to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        logits = logits_of(model(xb))  # a Hugging Face model's ModelOutput too
        meter.update(logits, yb, F.cross_entropy(logits, yb, reduction="sum"))
    model.train(was_training)
    return meter.compute()


def evaluate_split(
    model: nn.Module, dataset: AnyData, split: str, device: str | torch.device = "cpu", batch_size: int = 1024
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
    sums = LossAccuracy(dtype=torch.get_default_dtype())  # float32 sums: the recorded histories' arithmetic
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
        sums.update(logits, yb, loss.detach() * len(yb))
        meter.inner(i + 1, steps_per_epoch)
    train_loss, train_acc = sums.compute()
    return {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc}


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
    dataset: Data,
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

    Returns per-epoch metrics (train loss/acc over the epoch's batches, test loss/acc; accuracies as fractions in [0, 1]).
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


def final_metrics(model: nn.Module, dataset: Data, device: str | torch.device = "cpu") -> dict[str, float]:
    """Train/test loss and accuracy (a fraction in [0, 1]) of a finished model (no augmentation), for checkpoint metadata."""
    tr_loss, tr_acc = evaluate_split(model, dataset, "train", device=device)
    te_loss, te_acc = evaluate_split(model, dataset, "test", device=device)
    return {"train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss, "test_acc": te_acc}
