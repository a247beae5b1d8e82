"""A barrier curve's interpolated models evaluated together: one vmapped pass over the t-grid.

Without BatchNorm (or with its statistics interpolated rather than re-estimated, the
``bn="interpolate"`` ablation), the model at every t is a pure function of its state, so the T
interpolated states can be stacked along a leading axis and evaluated with
``vmap(functional_call)`` on each data batch at once: one batch of inputs is read once
for all T models and the T small matrix products become batched ones, which removes most of
the per-t overhead that dominates small models. Each model's numbers are what evaluating
it alone gives (sums in float64 per t), up to float rounding. Models with BatchNorm keep the
per-t path (their statistics are re-estimated at every t); models ``vmap`` cannot run are
detected by :func:`batchable` and evaluated one t at a time.
"""

from __future__ import annotations

import copy
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from stardomain._util.logits import logits_of
from stardomain._util.metrics import LossAccuracy
from stardomain.barrier.bn import has_batchnorm
from stardomain.errors import StardomainError

__all__ = ["batchable", "evaluate_states", "t_chunk"]

# rows (t values x samples) evaluated per vmapped call: bounds activation memory
_ROWS_CPU = 2048
_ROWS_ACCEL = 32768


def t_chunk(batch_size: int, device: torch.device) -> int:
    """How many t values share one pass, so that t x batch rows stay within a memory budget."""
    rows = _ROWS_CPU if device.type == "cpu" else _ROWS_ACCEL
    return max(1, rows // max(1, batch_size))


def batchable(model: nn.Module, example: Tensor, frozen_batchnorm: bool = False) -> bool:
    """True when ``model`` has no dropout, runs under vmap (tried on ``example``) and has no BatchNorm.

    ``frozen_batchnorm``: BatchNorm is fine because its statistics stay as interpolated (no
    per-t re-estimation), so in eval mode it is a pure function of the stacked state.
    """
    if (has_batchnorm(model) and not frozen_batchnorm) or any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()
    ):
        return False
    probe = copy.deepcopy(model).eval()
    state = {k: torch.stack([v, v]) for k, v in probe.state_dict().items()}
    try:
        with torch.inference_mode():
            vmap(lambda s, x: functional_call(probe, s, (x,)), in_dims=(0, None))(state, example[:2])
    except Exception:  # noqa: BLE001 - anything vmap cannot run is evaluated one t at a time
        return False
    return True


@torch.inference_mode()
def evaluate_states(
    model: nn.Module,
    state_at: Callable[[int], Mapping[str, Tensor]],
    count: int,
    splits: Mapping[str, tuple[Tensor, Tensor]],
    batch_size: int,
    device: str | torch.device = "cpu",
    on_done: Callable[[], None] | None = None,
) -> list[dict[str, tuple[float, float]]]:
    """(mean cross-entropy, accuracy) on every split of the states ``state_at(0..count-1)``.

    States are built and stacked one chunk (:func:`t_chunk`) at a time, so at most a chunk
    of them is in memory; ``on_done`` is called once per state when its chunk is done
    (progress). ``model`` supplies the code (a private eval-mode copy is used).
    Same reductions as :func:`stardomain.barrier.evaluate_splits`: per-batch sums in
    float32 accumulated in float64.
    """
    dev = torch.device(device)
    base = copy.deepcopy(model).to(dev).eval()
    keys = list(base.state_dict().keys())
    out: list[dict[str, tuple[float, float]]] = [{} for _ in range(count)]
    step = t_chunk(batch_size, dev)
    run = vmap(lambda st, x: logits_of(functional_call(base, st, (x,))), in_dims=(0, None))
    for lo in range(0, count, step):
        chunk = [state_at(i) for i in range(lo, min(count, lo + step))]
        if any(set(s) != set(keys) for s in chunk):
            raise StardomainError("state does not fit the model (keys differ); interpolate models of one architecture")
        stacked = {k: torch.stack([s[k].to(dev) for s in chunk]) for k in keys}
        for name, (x, y) in splits.items():
            if len(x) == 0:
                raise StardomainError(f"the {name} split is empty; evaluate a split with at least one sample")
            meter = LossAccuracy((len(chunk),))
            for i in range(0, len(x), batch_size):
                logits = run(stacked, x[i : i + batch_size].to(dev, non_blocking=True)).float()  # (t, B, C)
                yb = y[i : i + batch_size].to(dev, non_blocking=True)
                t, b = logits.shape[:2]
                ce = F.cross_entropy(logits.reshape(t * b, -1), yb.repeat(t), reduction="none").view(t, b)
                meter.update(logits, yb, ce.sum(1))
            for j, loss_acc in enumerate(meter.compute_each()):
                out[lo + j][name] = loss_acc
        for _ in chunk:
            if on_done is not None:
                on_done()
    return out
