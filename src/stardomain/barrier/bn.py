"""BatchNorm statistics re-estimation for interpolated networks (paper App. A).

Averaging two networks' weights shrinks the variance of their hidden activations
("variance collapse", Jordan et al. 2023), so the running statistics stored in — or
interpolated from — the end points no longer describe the interpolated network. Following
Garipov et al. (2018) we recompute them with one pass over training data, without
augmentation, with every BatchNorm layer in training mode and everything else in eval mode.

Two estimators, both weighting every *sample* equally (PyTorch's ``momentum=None`` weights
every *batch* equally, which over-weights a short last batch):

``"pooled"`` (default)
    The running mean/variance become the mean and unbiased variance of each layer's input
    over all samples of the pass, as if the whole pass were one batch: within-batch variance
    plus between-batch variance of the batch means. For a BN layer whose input does not
    depend on other BN layers (e.g. the first one) this is exact and independent of the
    batch size.
``"cumulative"``
    Sample-weighted average of the per-batch means and unbiased per-batch variances, i.e.
    Garipov et al.'s ``momentum = b / (n + b)`` update. With equal-size batches it is what
    PyTorch's ``momentum=None`` cumulative average gives.

Either way every layer's per-batch statistics are read after a forward with ``momentum=1``
(so the running buffers hold exactly that batch's mean and unbiased variance) and summed in
float64 by a forward hook, which costs nothing beyond the forward pass itself.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal, Mapping

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from stardomain.errors import StardomainError

__all__ = ["Estimator", "batchnorm_layers", "bn_state", "has_batchnorm", "reset_bn", "sample_order"]

Estimator = Literal["pooled", "cumulative"]


def batchnorm_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """(name, module) of every BatchNorm that keeps running statistics (those need a reset)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None]


def _running_stats(m: _BatchNorm) -> tuple[Tensor, Tensor]:
    """The running mean and variance buffers of a layer from :func:`batchnorm_layers` (which has both)."""
    mean, var = m.running_mean, m.running_var
    assert mean is not None and var is not None, "batchnorm_layers keeps only layers with running statistics"
    return mean, var


def has_batchnorm(model: nn.Module) -> bool:
    """True when the model has BatchNorm layers with running statistics to re-estimate."""
    return bool(batchnorm_layers(model))


def bn_state(model: nn.Module) -> dict[str, Tensor]:
    """Copies of the BN buffers (running_mean, running_var, num_batches_tracked), state-dict keyed."""
    out: dict[str, Tensor] = {}
    for name, m in batchnorm_layers(model):
        prefix = f"{name}." if name else ""
        running_mean, running_var = _running_stats(m)
        out[prefix + "running_mean"] = running_mean.detach().clone()
        out[prefix + "running_var"] = running_var.detach().clone()
        if m.num_batches_tracked is not None:
            out[prefix + "num_batches_tracked"] = m.num_batches_tracked.detach().clone()
    return out


def sample_order(n: int, num_samples: int | None = None, generator: torch.Generator | None = None, seed: int = 0) -> Tensor:
    """The fixed, seeded sample order of a BN pass: the first ``num_samples`` of a permutation.

    A shuffled order keeps batches class-mixed even when a dataset is stored sorted by class;
    a fixed seed keeps the same samples and batches at every t of a curve.
    """
    if num_samples is not None and num_samples < 1:
        raise StardomainError(f"bn num_samples must be >= 1 (got {num_samples}); use None for the whole training set")
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    return order if num_samples is None or num_samples >= n else order[:num_samples]


class _Accumulator:
    """Float64 per-channel sums of one BN layer's batch statistics over the pass."""

    def __init__(self) -> None:
        self.count = 0  # values per channel seen (samples x spatial positions)
        self.sum_mean: Tensor | None = None  # sum_b n_b * mean_b
        self.sum_sq_mean: Tensor | None = None  # sum_b n_b * mean_b^2
        self.sum_within: Tensor | None = None  # sum_b (n_b - 1) * var_b   (pooled)
        self.sum_var: Tensor | None = None  # sum_b n_b * var_b         (cumulative)
        self.batches = 0

    def hook(self, module: _BatchNorm, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        """Called after each BN forward; with momentum=1 its buffers hold this batch's stats."""
        x = inputs[0]
        n = x.numel() // x.shape[1]
        running_mean, running_var = _running_stats(module)
        mean = running_mean.detach().double()
        var = running_var.detach().double()  # unbiased, n / (n - 1) applied by PyTorch
        if self.sum_mean is None:
            self.sum_mean = torch.zeros_like(mean)
            self.sum_sq_mean = torch.zeros_like(mean)
            self.sum_within = torch.zeros_like(mean)
            self.sum_var = torch.zeros_like(mean)
        assert self.sum_sq_mean is not None and self.sum_within is not None and self.sum_var is not None
        self.sum_mean += n * mean
        self.sum_sq_mean += n * mean * mean
        self.sum_within += (n - 1) * var
        self.sum_var += n * var
        self.count += n
        self.batches += 1

    def result(self, estimator: Estimator) -> tuple[Tensor, Tensor]:
        assert self.sum_mean is not None and self.sum_sq_mean is not None
        assert self.sum_within is not None and self.sum_var is not None
        n = self.count
        mean = self.sum_mean / n
        if estimator == "cumulative":
            return mean, self.sum_var / n
        between = (self.sum_sq_mean - n * mean * mean).clamp_min(0.0)
        return mean, (self.sum_within + between) / max(n - 1, 1)


@contextmanager
def _bn_pass_mode(model: nn.Module, layers: list[tuple[str, _BatchNorm]]) -> Iterator[None]:
    """BN layers in train mode with momentum=1, the rest in eval mode; restored on exit."""
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for _, m in layers}
    try:
        model.eval()
        for _, m in layers:
            m.train()
            m.momentum = 1.0
        yield
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for module, mode in modes.items():
            module.training = mode


def model_device(model: nn.Module) -> torch.device:
    """Where a model's tensors live (CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _batch_bounds(n: int, batch_size: int) -> tuple[list[int], list[int]]:
    """(starts, ends) of a pass's batches; never a batch of one at the end (BatchNorm1d cannot normalise it): merged."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    ends = starts[1:] + [n]
    return starts, ends


def _store(m: _BatchNorm, acc: _Accumulator, estimator: Estimator) -> None:
    """Write a pass's statistics into a layer's running buffers."""
    if acc.count == 0:  # never reached by forward: keeps reset defaults (mean 0, var 1)
        return
    mean, var = acc.result(estimator)
    running_mean, running_var = _running_stats(m)
    running_mean.copy_(mean.to(running_mean.dtype))
    running_var.copy_(var.to(running_var.dtype))
    if m.num_batches_tracked is not None:
        m.num_batches_tracked.fill_(acc.batches)


@torch.no_grad()
def reset_bn(
    model: nn.Module,
    x: Tensor | Any,
    num_samples: int | None = None,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
    state: Mapping[str, Tensor] | None = None,
    *,
    estimator: Estimator = "pooled",
    indices: Tensor | None = None,
    seed: int = 0,
    memory_format: torch.memory_format | None = None,
    forward: Callable[[Tensor], Any] | None = None,
) -> dict[str, Tensor]:
    """Re-estimate every BN layer's running statistics from one pass over ``x``; return them.

    ``x`` is un-augmented training data (on any device; batches move to the model's device), or
    a dataset (:mod:`stardomain.data.protocol`, e.g. a streamed image folder) whose training
    split is read batch by batch in the same seeded order, never held in memory whole.
    ``num_samples`` samples (default: all) are taken from one pass of a seeded permutation
    (``generator``, else ``seed``), so repeated calls see the same samples and batches;
    ``indices`` gives the pass order explicitly instead. ``state``, when given, is loaded
    into the model first. Momentum and every module's training mode are restored afterwards.
    The result maps state-dict keys (``*.running_mean``, ``*.running_var``,
    ``*.num_batches_tracked``) to copies of the new buffers; merge it with ``{**state, **new}``.
    ``forward`` replaces ``model(x)`` for the pass (e.g. an optimised trace sharing the
    model's BN modules); ``memory_format`` is applied to each batch.
    """
    if estimator not in ("pooled", "cumulative"):
        raise StardomainError(f"unknown BN estimator {estimator!r}; use 'pooled' or 'cumulative'")
    if batch_size < 2:
        raise StardomainError(f"BN reset batch_size must be >= 2 (got {batch_size}): a batch of one has no variance")
    if state is not None:
        model.load_state_dict(state)
    layers = batchnorm_layers(model)
    if not layers:
        return {}
    from stardomain.data.protocol import index_batches, split_size

    n_total = len(x) if torch.is_tensor(x) else split_size(x, "train")
    if n_total == 0:
        raise StardomainError("BN reset needs training samples but x is empty")
    order = indices if indices is not None else sample_order(n_total, num_samples, generator, seed)
    order = order.to(x.device) if torch.is_tensor(x) else order.cpu()
    n = len(order)
    if n == 0:
        raise StardomainError("BN reset got an empty sample order")
    device = model_device(model)
    starts, ends = _batch_bounds(n, batch_size)

    for _, m in layers:  # finite start values: momentum=1 multiplies the old ones by 0
        m.reset_running_stats()
    accs = {m: _Accumulator() for _, m in layers}
    handles = [m.register_forward_hook(accs[m].hook) for _, m in layers]
    try:
        with _bn_pass_mode(model, layers):
            batches = (
                (x[order[s:e]] for s, e in zip(starts, ends))
                if torch.is_tensor(x)
                else (xb for xb, _ in index_batches(x, "train", [order[s:e] for s, e in zip(starts, ends)], device))
            )
            for xb in batches:
                xb = xb.to(device, non_blocking=True)
                if memory_format is not None:
                    xb = xb.contiguous(memory_format=memory_format)
                (forward or model)(xb)
    finally:
        for h in handles:
            h.remove()

    for _name, m in layers:
        _store(m, accs[m], estimator)
    return bn_state(model)
