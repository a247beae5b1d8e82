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

Plain MLPs (Flatten, then Linear and ReLU layers: :class:`~stardomain.models.mlp.MLP` without
BatchNorm, or an ``nn.Sequential`` of those) skip ``vmap`` and most of autograd: each layer is one
``baddbmm`` over the stacked weights and the backward is written out (:func:`_chain_backward`;
autograd only for the loss), each Linear's as ``nn.Linear``'s own, from the same rows in the same
order. When every model's loader is a plain shuffled :class:`~stardomain.data.TensorLoader` over
the same tensors, the K batches of a step are one ``index_select`` of the K epoch orders (exactly
the loaders' batches), and on the CPU SGD is torch's fused kernel (one pass per stacked tensor).
Same contract: one-at-a-time results to float rounding. On one CPU thread the weights have come out
equal to the bit (16 width-16 Fashion-MNIST MLPs, 2 epochs); with more threads one model's GEMMs
split their sums differently from K models' batched GEMMs.

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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from stardomain._util.metrics import LossAccuracy
from stardomain.errors import StardomainError
from stardomain.training.loop import Recipe, lr_at, make_loader, make_optimizer
from stardomain.training.state import load_training_state, save_training_state

if TYPE_CHECKING:
    from stardomain.data.protocol import AnyData, Data

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
        self.chain = _linear_chain(ms[0], self.params)  # a plain MLP: run with baddbmm, not vmap

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def _one(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: Tensor, shared_input: bool = False) -> Tensor:
        """Logits (K, B, classes) of x (K, B, ...) — or of one x (B, ...) fed to every model."""
        if self.chain is not None:
            return _chain_forward(self.chain, self.params, x, self.k, shared_input)
        return vmap(self._one, in_dims=(0, 0, None if shared_input else 0), randomness="error")(self.params, self.buffers, x)

    def step_grads(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One training step on x (K, B, ...), y (K, B): per-model mean losses (K,) and the logits, detached,
        with each parameter's ``.grad`` its models' gradients (call it after ``zero_grad(set_to_none=True)``).

        The gradients ``_per_model_ce(forward(x), y, "mean").sum().backward()`` gives; a plain MLP
        computes them by hand (:func:`_chain_backward`), autograd only for the loss.
        """
        if self.chain is None:
            logits = self.forward(x)
            losses = _per_model_ce(logits, y, "mean")
            losses.sum().backward()
            return losses.detach(), logits.detach()
        saved: list[Tensor] = []
        with torch.no_grad():
            logits = _chain_forward(self.chain, self.params, x, self.k, False, saved).requires_grad_()
        losses = _per_model_ce(logits, y, "mean")
        (grad,) = torch.autograd.grad(losses.sum(), logits)
        with torch.no_grad():
            _chain_backward(self.chain, self.params, saved, grad)
        return losses.detach(), logits.detach()

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
        from stardomain.data.loader import slice_batches

        return self.evaluate_batches(slice_batches(x, y, batch_size))

    @torch.no_grad()
    def evaluate_batches(self, batches: Iterable[tuple[Tensor, Tensor]]) -> list[tuple[float, float]]:
        """:meth:`evaluate` over ``batches`` (e.g. a streamed split), every model on each batch."""
        was = self.base.training
        self.base.eval()
        meter = LossAccuracy((self.k,))
        for xb, yb in batches:
            xb = xb.to(self.device, non_blocking=True)
            yb = yb.to(self.device, non_blocking=True)
            logits = self.forward(xb, shared_input=True)
            meter.update(logits, yb, _per_model_ce(logits, yb.expand(self.k, -1), "sum"))
        self.base.train(was)
        return meter.compute_each()

    def final_metrics(self, dataset: AnyData, batch_size: int = 1024) -> list[dict[str, float]]:
        """Every model's :func:`~stardomain.training.loop.final_metrics` (train/test loss and accuracy),
        each split read once for all K models."""
        from stardomain.data.protocol import eval_batches

        split = {s: self.evaluate_batches(eval_batches(dataset, s, batch_size, self.device)) for s in ("train", "test")}
        return [
            {"train_loss": tr[0], "train_acc": tr[1], "test_loss": te[0], "test_acc": te[1]}
            for tr, te in zip(split["train"], split["test"])
        ]


def _per_model_ce(logits: Tensor, y: Tensor, reduction: str) -> Tensor:
    """Cross-entropy of (K, B, C) logits against (K, B) targets, reduced per model: shape (K,)."""
    # classes on dim 1, (K, C, B): the log-softmax runs across rows, far faster on the CPU than along
    # rows of 10, and gives the same numbers as F.cross_entropy on each model's (B, C) logits
    per = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
    return per.mean(1) if reduction == "mean" else per.sum(1)


_Step = tuple[str, str, str | None]  # ("flatten" | "relu", "", None) or ("linear", weight key, bias key or None)


def _linear_chain(model: nn.Module, params: Mapping[str, Tensor]) -> list[_Step] | None:
    """``model`` as a chain Flatten -> (Linear | ReLU)*, with the stacked keys of each Linear; None if it is not one.

    Only the exact module types whose forward is known qualify (an MLP without BatchNorm or
    dropout, or an ``nn.Sequential``), and no module may carry hooks.
    """
    from stardomain.models.mlp import MLP

    if type(model) is MLP:
        modules = [model.flatten, *model.layers, model.classifier]
    elif type(model) is nn.Sequential:
        modules = list(model)
    else:
        return None
    names = {id(m): n for n, m in model.named_modules()}
    hooked = nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks
    if hooked or not modules or type(modules[0]) is not nn.Flatten:
        return None
    chain: list[_Step] = []
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return None
        if type(m) is nn.Flatten and (m.start_dim, m.end_dim) == (1, -1):
            chain.append(("flatten", "", None))
        elif type(m) is nn.ReLU:
            chain.append(("relu", "", None))
        elif type(m) is nn.Linear:
            w, b = f"{names[id(m)]}.weight", None if m.bias is None else f"{names[id(m)]}.bias"
            if w not in params or (b is not None and b not in params):
                return None
            chain.append(("linear", w, b))
        else:
            return None
    return chain


def _chain_forward(
    chain: Sequence[_Step], params: Mapping[str, Tensor], x: Tensor, k: int, shared: bool, saved: list[Tensor] | None = None
) -> Tensor:
    """Logits (K, B, classes) of a :func:`_linear_chain` model, each Linear one ``baddbmm`` over the stacked weights.

    A ``shared`` x (B, ...) meets all K first layers in one wide GEMM. With ``saved``, the input of
    every Linear and the output of every ReLU are appended to it, in order (for :func:`_chain_backward`).
    """
    h = x
    for op, w_key, b_key in chain:
        if op == "flatten":
            h = h.flatten(1 if shared else 2)
        elif op == "relu":
            h = torch.relu(h)
            if saved is not None:
                saved.append(h)
        elif shared:  # (B, in) @ (in, K*out): one wide GEMM, no K copies of the input
            w = params[w_key]
            wide = w.reshape(-1, w.shape[-1]).t()
            h = torch.mm(h, wide) if b_key is None else torch.addmm(params[b_key].reshape(-1), h, wide)
            h = h.view(h.shape[0], k, -1).transpose(0, 1)
            shared = False
        else:
            if saved is not None:
                saved.append(h)
            wt = params[w_key].transpose(1, 2)
            h = torch.bmm(h, wt) if b_key is None else torch.baddbmm(params[b_key].unsqueeze(1), h, wt)
    return h.unsqueeze(0).expand(k, *h.shape) if shared else h


def _chain_backward(chain: Sequence[_Step], params: Mapping[str, Tensor], saved: list[Tensor], grad: Tensor) -> None:
    """Set every parameter's ``.grad`` from the logits' gradient, back through the chain as autograd would.

    Each Linear as ``nn.Linear``'s backward: weight gradient grad^T @ input and bias gradient
    summed over the batch, from the gradient's (K, B, out) rows (so the sums run in the order
    they run for one model alone), and the input gradient grad @ weight only above the first
    Linear; each ReLU as ``threshold_backward`` (0 where its output is <= 0).
    """
    first = next(i for i, (op, _, _) in enumerate(chain) if op == "linear")
    for i in range(len(chain) - 1, first - 1, -1):
        op, w_key, b_key = chain[i]
        if op == "relu":  # ReLU's own backward op (masked_fill or where would be ~20x slower on the CPU)
            grad = torch.ops.aten.threshold_backward(grad, saved.pop(), 0)
        elif op == "linear":
            x = saved.pop()
            grad = grad.contiguous()
            params[w_key].grad = grad.transpose(1, 2).bmm(x)
            if b_key is not None:
                params[b_key].grad = grad.sum(1)
            if i > first:
                grad = grad.bmm(params[w_key])


def _gathered_batches(loaders: Sequence[Any]) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]] | None:
    """Epoch ``e``'s stacked batches ((K, B, ...) inputs, (K, B) targets), each step one gather of
    the K loaders' epoch orders; None unless every loader is a plain shuffled TensorLoader
    (no augmentation) over the same tensors, whose batches are exactly such gathers."""
    from stardomain.data.loader import TensorLoader

    first = loaders[0]
    plain = all(
        type(ld) is TensorLoader
        and ld.shuffle
        and not ld.augment
        and not ld.drop_last
        and ld.x is first.x
        and ld.y is first.y
        and ld.batch_size == first.batch_size
        for ld in loaders
    )
    if not plain:
        return None
    x, y, size, k = first.x, first.y, first.batch_size, len(loaders)

    def epoch(e: int) -> Iterator[tuple[Tensor, Tensor]]:
        orders = torch.stack([ld.order(e) for ld in loaders])  # (K, n)
        for start in range(0, len(x), size):
            idx = orders[:, start : start + size].reshape(-1)
            yield x.index_select(0, idx).view(k, -1, *x.shape[1:]), y.index_select(0, idx).view(k, -1)

    return epoch


def _mean(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Mean of one metric over the group (for the progress line), None when not measured this epoch."""
    return sum(r[key] for r in records) / len(records) if key in records[0] else None


def _stacked(loaders: Sequence[Any]) -> Iterator[tuple[Tensor, Tensor]]:
    """The loaders' batches of a step stacked: (K, B, ...) inputs, (K, B) targets."""
    for batches in zip(*loaders):
        yield torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])


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
    dataset: Data,
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
    from stardomain.data.protocol import eval_batches  # a streamed test split too

    if len(models) != len(seeds) or not models:
        raise StardomainError(f"train_models_batched: {len(models)} models for {len(seeds)} seeds")
    stack = StackedModels(models, device)
    loaders = [make_loader(dataset, recipe, s, stack.device) for s in seeds]
    # fused SGD on the CPU: the same steps to the bit, in one pass over each stacked tensor instead of five
    opt = make_optimizer(list(stack.params.values()), recipe, fused_sgd=stack.device.type == "cpu")
    gathered = _gathered_batches(loaders)  # None: each loader iterated, its batches stacked
    steps_per_epoch = len(loaders[0])
    total = recipe.epochs * steps_per_epoch
    ident = dict(identity or {"seeds": list(seeds)})
    histories: list[list[dict[str, Any]]] = [[] for _ in seeds]
    start_epoch = 0
    saved = load_training_state(resume_path, opt, kind=STATE_KIND, identity=ident)
    if saved is not None:
        stack.load_tensors(saved.model)
        start_epoch, histories = saved.epoch, [list(h) for h in saved.meta["histories"]]
    meter = Progress(
        f"train seeds={seeds[0]}..{seeds[-1]} ({len(seeds)} batched)", recipe.epochs, unit="epoch", progress=progress, initial=start_epoch
    )
    for epoch in range(start_epoch, recipe.epochs):
        stack.train()
        for ld in loaders:
            ld.epoch = epoch
        sums = LossAccuracy((stack.k,), dtype=torch.get_default_dtype())  # float32, as train_model's epochs
        for i, (xb, yb) in enumerate(_stacked(loaders) if gathered is None else gathered(epoch)):
            lr = lr_at(recipe, epoch * steps_per_epoch + i, total, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            losses, logits = stack.step_grads(xb, yb)
            opt.step()
            sums.update(logits, yb, losses * yb.shape[1])
            meter.inner(i + 1, steps_per_epoch)
        records = [{"epoch": epoch + 1, "train_loss": lo, "train_acc": acc} for lo, acc in sums.compute_each()]
        if (epoch + 1) % eval_every == 0 or epoch + 1 == recipe.epochs:
            for rec, (te_loss, te_acc) in zip(records, stack.evaluate_batches(eval_batches(dataset, "test", 1024, stack.device))):
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
