"""Model fusion (paper Sec. 4.2, Table 2): the fused star model (Eq. 9) against its sources and their ensemble,
in accuracy and in inference cost."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from stardomain.bma import metrics
from stardomain.bma.core import RunningMean, State, check_state, predict_probs, test_split
from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.data.protocol import Splits

__all__ = ["fusion_row"]


def fusion_row(
    model: nn.Module,
    source_states: Sequence[State],
    fused_star_state: State,
    dataset: Splits,
    device: str | torch.device = "cpu",
    batch_size: int = 1024,
) -> dict[str, Any]:
    """One row of Table 2 for |Z| = len(source_states): accuracy (fractions) and inference cost.

    Regular models: mean, sample std (ddof=1; 0 for a single model) and best test accuracy of
    the sources. Ensemble: post-softmax average of all of Z. Star: the fused star model (Eq. 9).
    ``cost[name] = {"forward_passes": per input, "parameters": held}`` for regular / ensemble /
    star: (1, P), (|Z|, |Z|·P), (1, P) with P the trainable parameters of one model.
    """
    sources = list(source_states)
    if not sources:
        raise StardomainError("bma: fusion_row needs at least one source model")
    check_state(model, fused_star_state, "fused star state")
    for i, s in enumerate(sources):
        check_state(model, s, f"source {i}")
    dev = torch.device(device)
    test_x, test_y = test_split(dataset, dev)
    running = RunningMean()
    accs: list[float] = []
    for s in sources:
        probs = predict_probs(model, s, test_x, dev, batch_size)
        accs.append(metrics.accuracy(probs, test_y))
        running.add(probs)
    z = len(sources)
    mean = sum(accs) / z
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (z - 1)) if z > 1 else 0.0
    n_params = sum(p.numel() for p in model.parameters())
    cost = {"forward_passes": 1, "parameters": n_params}
    return {
        "n_sources": z,
        "regular_accs": accs,
        "regular_acc_mean": mean,
        "regular_acc_std": std,
        "best_regular_acc": max(accs),
        "ensemble_acc": metrics.accuracy(running.mean(), test_y),
        "star_acc": metrics.accuracy(predict_probs(model, fused_star_state, test_x, dev, batch_size), test_y),
        "cost": {
            "regular": dict(cost),
            "ensemble": {"forward_passes": z, "parameters": z * n_params},
            "star": dict(cost),
        },
    }


# -- figure ---------------------------------------------------------------------------------------
