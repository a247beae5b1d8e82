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
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from stardomain.errors import StardomainError, reject_unknown_keys

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")


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

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise StardomainError(f"recipe: unknown optimizer '{self.optimizer}'; use one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise StardomainError(f"recipe: unknown schedule '{self.schedule}'; use one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise StardomainError(f"recipe: epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size})")
        if not self.lr > 0:
            raise StardomainError(f"recipe: lr must be > 0 (got {self.lr})")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs + 1:
            raise StardomainError(f"recipe: warmup_epochs must be in [0, epochs] (got {self.warmup_epochs})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        reject_unknown_keys("recipe", d, (f.name for f in fields(cls)))
        return cls(**dict(d))

    def replace(self, **changes: Any) -> "Recipe":
        return Recipe.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})


_SMALL_RECIPES: dict[str, dict[str, Any]] = {
    # 1,437 training images: many short epochs, no augmentation (8x8 digits do not crop well)
    "digits": dict(lr=0.05, epochs=15, batch_size=64, weight_decay=5e-4, augment=False),
    "mnist": dict(lr=0.05, epochs=10, batch_size=128, weight_decay=5e-4, augment=False),
    "fashion_mnist": dict(lr=0.05, epochs=10, batch_size=128, weight_decay=5e-4, augment=False),
}


def default_recipe(dataset_name: str, optimizer: str = "sgd") -> Recipe:
    """The paper's recipe for CIFAR-style data, a short one for digits/MNIST; Adam at lr 1e-3."""
    recipe = Recipe(**_SMALL_RECIPES.get(dataset_name, {}))
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


def make_optimizer(params: Iterable[torch.nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0,
                           weight_decay=recipe.weight_decay)


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
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction in [0, 1]) of a model in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        yb = y[i:i + batch_size].to(device, non_blocking=True)
        logits = model(xb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    n = max(1, len(x))
    return total_loss / n, correct / n


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Flatten optimizer state into named tensors so it can live in a safetensors file."""
    out: dict[str, torch.Tensor] = {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for name, v in tensors.items():
        if not name.startswith("opt."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def train_model(
    model: nn.Module,
    dataset: Any,
    recipe: Recipe,
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    resume_path: str | os.PathLike | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    eval_every: int = 1,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``dataset`` (a :class:`stardomain.data.Dataset`).

    Returns per-epoch metrics (train loss/acc over the epoch's batches, test loss/acc).
    With ``resume_path`` the full training state (weights, optimizer, epoch, history) is saved
    atomically after each epoch and picked up again on the next call, so an interrupted run
    continues to exactly the weights an uninterrupted one reaches.
    """
    from stardomain.data import TensorLoader
    from stardomain import store

    model.to(device)
    loader = TensorLoader(dataset.train_x, dataset.train_y, batch_size=recipe.batch_size, shuffle=True,
                          augment=recipe.augment and dataset.augment, fill=dataset.black(), seed=seed, device=device)
    opt = make_optimizer(model.parameters(), recipe)
    steps_per_epoch = len(loader)
    total = recipe.epochs * steps_per_epoch
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume_path is not None and store.is_complete(resume_path):
        tensors, meta = store.load_state(resume_path)
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        _restore_optimizer(opt, tensors)
        start_epoch, history = int(meta["epoch"]), list(meta["history"])
    test_x, test_y = dataset.test_x.to(device), dataset.test_y.to(device)
    bar = tqdm(range(start_epoch, recipe.epochs), desc=f"train seed={seed}", disable=None if progress is None else not progress,
               initial=start_epoch, total=recipe.epochs, leave=False)
    for epoch in bar:
        model.train()
        loader.epoch = epoch
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for i, (xb, yb) in enumerate(loader):
            for group in opt.param_groups:
                group["lr"] = lr_at(recipe, epoch * steps_per_epoch + i, total, steps_per_epoch)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen}
        if (epoch + 1) % eval_every == 0 or epoch + 1 == recipe.epochs:
            record["test_loss"], record["test_acc"] = evaluate(model, test_x, test_y, device=device)
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", test_acc=f"{record.get('test_acc', float('nan')):.3f}")
        if on_epoch is not None:
            on_epoch(record)
        if resume_path is not None and epoch + 1 < recipe.epochs:
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | _optimizer_tensors(opt)
            store.save(resume_path, tensors, {"arch": getattr(model, "arch", {"name": "?"}), "epoch": epoch + 1,
                                              "history": history, "kind": "training-state"})
    model.eval()
    if resume_path is not None:
        for p in (Path(resume_path), store.metadata_path(resume_path)):
            if p.exists():
                p.unlink()
    return history


def final_metrics(model: nn.Module, dataset: Any, device: str | torch.device = "cpu") -> dict[str, float]:
    """Train/test loss and accuracy of a finished model (no augmentation), for checkpoint metadata."""
    tr_loss, tr_acc = evaluate(model, dataset.train_x, dataset.train_y, device=device)
    te_loss, te_acc = evaluate(model, dataset.test_x, dataset.test_y, device=device)
    return {"train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss, "test_acc": te_acc}
