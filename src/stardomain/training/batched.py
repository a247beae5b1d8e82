"""K models of one architecture trained in one pass: stacked weights, one vmapped forward.

A width-16 MLP or a small convnet uses a sliver of a CPU (or GPU) per step; the time goes
to per-step overhead. Here the K models' parameters are stacked along a new leading axis
(``torch.func.stack_module_state``), one ``vmap(functional_call)`` runs all K forwards on
their own batches, and ONE optimizer steps the stacked tensors. Nothing is shared between
the models: the loss is the sum of the K per-model mean losses, so each model's gradient is
exactly its own; SGD (momentum, Nesterov, weight decay) and Adam are elementwise, so each
model takes exactly the step it takes alone; each model gets its own initial weights (built
by the caller after ``seed_everything(seed)``) and its own loader (:func:`train.make_loader`,
seeded by its seed). BatchNorm is per model too: under ``vmap`` each model normalises with
its own batch's statistics and updates its own slice of the stacked running averages. The
results equal one-at-a-time training up to float rounding (batched matmuls sum in another
order), which the tests check.

Not batched (:func:`batching_refusal` says why in one line, and the zoo falls back to one
at a time): dropout (its masks would come from one shared random stream), execution options
other than plain fp32 eager (precision, channels_last, compile), and models ``vmap`` cannot
run.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from stardomain.errors import StardomainError
from stardomain.training.loop import Recipe, lr_at, make_loader, make_optimizer
from stardomain.training.state import load_training_state, save_training_state

__all__ = ["StackedModels", "batching_refusal", "state_file", "train_models_batched"]

STATE_KIND = "batched-training-state"


class StackedModels:
    """K models of one architecture as stacked tensors, run together with ``vmap``.

    ``params``/``buffers`` map each name of the original state dict to a (K, ...) tensor;
    ``unstack(k)`` is model k's ordinary state dict.
    """

    def __init__(self, models: Sequence[nn.Module], device: str | torch.device = "cpu") -> None:
        if not models:
            raise StardomainError("StackedModels needs at least one model")
        self.device = torch.device(device)
        ms = [m.to(self.device) for m in models]
        params, buffers = stack_module_state(ms)
        self.params: dict[str, Tensor] = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.buffers: dict[str, Tensor] = {k: v.clone() for k, v in buffers.items()}
        self.base = copy.deepcopy(ms[0])  # supplies the code; its own tensors are never used
        self.k = len(ms)
        self._keys = list(ms[0].state_dict().keys())

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def _one(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: Tensor, shared_input: bool = False) -> Tensor:
        """Logits (K, B, classes) of x (K, B, ...) — or of one x (B, ...) fed to every model."""
        return vmap(self._one, in_dims=(0, 0, None if shared_input else 0), randomness="error")(self.params, self.buffers, x)

    def unstack(self, k: int) -> dict[str, Tensor]:
        """Model k's state dict, in the original key order, detached copies."""
        both = {**self.params, **self.buffers}
        return {name: both[name][k].detach().clone() for name in self._keys}

    def state_tensors(self) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in {**self.params, **self.buffers}.items()}

    @torch.no_grad()
    def load_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        for k, v in {**self.params, **self.buffers}.items():
            if k not in tensors or tensors[k].shape != v.shape:
                raise StardomainError(f"batched training state lacks or misshapes {k!r}; delete the state file and retrain")
            v.copy_(tensors[k])

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, batch_size: int = 1024) -> list[tuple[float, float]]:
        """Per-model (mean cross-entropy, accuracy) in eval mode, every model on the same data."""
        was = self.base.training
        self.base.eval()
        loss = torch.zeros(self.k, dtype=torch.float64, device=self.device)
        correct = torch.zeros(self.k, dtype=torch.long, device=self.device)
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(self.device, non_blocking=True)
            yb = y[i : i + batch_size].to(self.device, non_blocking=True)
            logits = self.forward(xb, shared_input=True)
            loss += _per_model_ce(logits, yb.expand(self.k, -1), "sum").double()
            correct += (logits.argmax(-1) == yb).sum(1)
        self.base.train(was)
        n = max(1, len(x))
        return [(float(lo) / n, int(c) / n) for lo, c in zip(loss.tolist(), correct.tolist())]


def _per_model_ce(logits: Tensor, y: Tensor, reduction: str) -> Tensor:
    """Cross-entropy of (K, B, C) logits against (K, B) targets, reduced per model: shape (K,)."""
    k, b = y.shape
    per = F.cross_entropy(logits.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b)
    return per.mean(1) if reduction == "mean" else per.sum(1)


def _mean(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Mean of one metric over the group (for the progress line), None when not measured this epoch."""
    return sum(r[key] for r in records) / len(records) if key in records[0] else None


def batching_refusal(model: nn.Module, recipe: Recipe, in_shape: Sequence[int], device: str | torch.device = "cpu") -> str | None:
    """Why models like ``model`` cannot be trained batched with ``recipe`` (one line), or None.

    Runs one tiny vmapped forward (eval mode, 2 models x 2 samples, no state change) so a
    model vmap cannot run is refused up front rather than failing mid-training.
    """
    name = getattr(model, "arch", {}).get("name", type(model).__name__)
    for opt, default in (("precision", "fp32"), ("channels_last", False), ("compile", False)):
        if getattr(recipe, opt, default) != default:
            return f"batched training runs plain fp32 eager; recipe {opt}={getattr(recipe, opt)!r} trains one model at a time"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return f"{name} uses dropout, whose masks would not match one-at-a-time training; training one model at a time"
    try:
        probe = StackedModels([copy.deepcopy(model), copy.deepcopy(model)], device)
        probe.base.eval()
        with torch.no_grad():
            probe.forward(torch.zeros(2, 2, *in_shape, device=probe.device))
    except Exception as e:  # noqa: BLE001 - any failure means: not batchable, say why
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        return f"{name} cannot run under torch.func.vmap ({type(e).__name__}: {first}); training one model at a time"
    return None


def state_file(out_dir: str | Path, seeds: Sequence[int]) -> Path:
    """Hidden per-group training-state file; its name pins the group's seeds."""
    digest = hashlib.blake2b(",".join(map(str, seeds)).encode(), digest_size=4).hexdigest()
    return Path(out_dir) / f".batch-{seeds[0]}-{seeds[-1]}-{len(seeds)}-{digest}.train-state.safetensors"


def train_models_batched(
    models: Sequence[nn.Module],
    dataset: Any,
    recipe: Recipe,
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    progress: Any = None,
    resume_path: str | os.PathLike | None = None,
    identity: Mapping[str, Any] | None = None,
    eval_every: int = 1,
    on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> tuple[StackedModels, list[list[dict[str, Any]]]]:
    """Train ``models[k]`` as run ``seeds[k]`` would be trained alone by :func:`train.train_model`.

    Returns the trained stack and one per-epoch history per model (same records as
    ``train_model``). With ``resume_path`` the whole group's state (stacked weights,
    optimizer, epoch, histories) is saved atomically after each epoch and resumed on the
    next call; ``identity`` (run config and seeds) is stored with it and must match on
    resume. The caller removes the state file once the members are written.
    """
    from stardomain._util.progress import Progress

    if len(models) != len(seeds) or not models:
        raise StardomainError(f"train_models_batched: {len(models)} models for {len(seeds)} seeds")
    stack = StackedModels(models, device)
    loaders = [make_loader(dataset, recipe, s, stack.device) for s in seeds]
    opt = make_optimizer(list(stack.params.values()), recipe)
    steps_per_epoch = len(loaders[0])
    total = recipe.epochs * steps_per_epoch
    ident = dict(identity or {"seeds": list(seeds)})
    histories: list[list[dict[str, Any]]] = [[] for _ in seeds]
    start_epoch = 0
    saved = load_training_state(resume_path, opt, kind=STATE_KIND, identity=ident)
    if saved is not None:
        stack.load_tensors(saved.model)
        start_epoch, histories = saved.epoch, [list(h) for h in saved.meta["histories"]]
    test_x, test_y = dataset.test_x.to(stack.device), dataset.test_y.to(stack.device)
    meter = Progress(
        f"train seeds={seeds[0]}..{seeds[-1]} ({len(seeds)} batched)", recipe.epochs, unit="epoch", progress=progress, initial=start_epoch
    )
    for epoch in range(start_epoch, recipe.epochs):
        stack.train()
        for ld in loaders:
            ld.epoch = epoch
        loss_sum = torch.zeros(stack.k, device=stack.device)
        correct = torch.zeros(stack.k, device=stack.device, dtype=torch.long)
        seen = 0
        for i, batches in enumerate(zip(*loaders)):
            xb = torch.stack([b[0] for b in batches])
            yb = torch.stack([b[1] for b in batches])
            lr = lr_at(recipe, epoch * steps_per_epoch + i, total, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            logits = stack.forward(xb)
            losses = _per_model_ce(logits, yb, "mean")
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            n = yb.shape[1]
            loss_sum += losses.detach() * n
            correct += (logits.detach().argmax(-1) == yb).sum(1)
            seen += n
            meter.inner(i + 1, steps_per_epoch)
        records = [
            {"epoch": epoch + 1, "train_loss": lo / seen, "train_acc": c / seen} for lo, c in zip(loss_sum.tolist(), correct.tolist())
        ]
        if (epoch + 1) % eval_every == 0 or epoch + 1 == recipe.epochs:
            for rec, (te_loss, te_acc) in zip(records, stack.evaluate(test_x, test_y)):
                rec["test_loss"], rec["test_acc"] = te_loss, te_acc
        for h, rec in zip(histories, records):
            h.append(rec)
        meter.step(train_loss=_mean(records, "train_loss"), test_acc=_mean(records, "test_acc"))
        if on_epoch is not None:
            on_epoch(records)
        if resume_path is not None and epoch + 1 < recipe.epochs:
            save_training_state(
                resume_path,
                kind=STATE_KIND,
                epoch=epoch + 1,
                model=stack.state_tensors(),
                optimizer=opt,
                arch=getattr(models[0], "arch", None),
                histories=histories,
                identity=ident,
            )
    meter.close()
    stack.train(False)
    return stack, histories
