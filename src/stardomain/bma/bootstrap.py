"""Percentile-bootstrap intervals over test samples of every BMA metric, at every K (Figure 5's bands).

A BMA curve is computed on one fixed test set, so its points carry test-set noise: with 360 test
images one wrong prediction moves the accuracy by 0.28 pp. Resampling the test images (with
replacement) and recomputing each metric shows how much of a gap between two curves that noise
alone could make. It measures test-set noise only, not seed-to-seed variation of the posteriors.

Cheap by construction: a resample is a row of item multiplicities (``counts``, drawn once per curve
from a seeded ``torch.Generator`` and reused at every K, so the K points share their resamples and
the star-domain and ensemble curves are resampled alike), and every metric is a weighted sum over
items, so all resamples are one matrix product -- or, for the AUROC, one sort of the scores and a
weighted Mann-Whitney sum per tie group. With all weights 1 each weighted metric is exactly the
corresponding :mod:`stardomain.bma.metrics` number (the tests check this).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from stardomain.analysis.stats import LEVEL
from stardomain.bma import metrics
from stardomain.errors import StardomainError

__all__ = ["RESAMPLES", "describe", "intervals", "resample_counts", "weighted_summary"]

RESAMPLES = 1000  # bootstrap resamples per curve; the report states the number
_CELLS_PER_CHUNK = 1 << 22  # resample rows are processed in chunks of about this many (row x item) cells


def resample_counts(n: int, n_boot: int, seed: int) -> Tensor:
    """``(n_boot, n)`` float32 multiplicities of each test item in each resample (rows sum to ``n``).

    Drawn on the CPU from a private generator so the resamples depend only on ``(n, n_boot, seed)``,
    never on the device or on other random draws; float32 holds every count exactly.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise StardomainError(f"bma: the bootstrap needs at least one test sample; got n={n!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise StardomainError(f"bma: the number of bootstrap resamples must be an integer >= 1; got {n_boot!r}")
    g = torch.Generator()
    g.manual_seed(int(seed))
    idx = torch.randint(n, (n_boot, n), generator=g)
    counts = torch.zeros(n_boot, n, dtype=torch.float32)
    return counts.scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float32))


def _weighted_auroc(score: Tensor, correct: Tensor, w: Tensor) -> Tensor:
    """Mann-Whitney AUROC of ``score`` for correct vs wrong items under each row of weights ``w``.

    One sort of the scores serves every row: items are grouped by tied score, and a correct item
    beats the wrong weight strictly below its group plus half the wrong weight tied with it (ties
    count 1/2, as in :func:`stardomain.bma.metrics.auroc_correctness`). NaN where a row has no
    correct or no wrong weight, where the AUROC is undefined. The scatter-adds sum integer counts,
    which are exact in any order, so the result is deterministic on a GPU too.
    """
    sorted_scores, order = torch.sort(score)
    _, inverse = torch.unique_consecutive(sorted_scores, return_inverse=True)
    group = torch.empty_like(inverse)
    group[order] = inverse  # each item's tie-group index, groups in ascending score
    n_groups = int(inverse.max()) + 1
    pos, neg = correct.to(w.dtype), (~correct).to(w.dtype)
    wpos = torch.zeros(w.shape[0], n_groups, dtype=w.dtype, device=w.device).index_add_(1, group, w * pos)
    wneg = torch.zeros_like(wpos).index_add_(1, group, w * neg)
    below = wneg.cumsum(1) - wneg
    denom = wpos.sum(1) * wneg.sum(1)
    auc = (wpos * (below + 0.5 * wneg)).sum(1) / denom
    return torch.where(denom > 0, auc, torch.full_like(auc, float("nan")))


def _weighted_ece(conf: Tensor, correct: Tensor, w: Tensor, n_bins: int) -> Tensor:
    """Top-label ECE under each row of weights, binned exactly as :func:`stardomain.bma.metrics.ece` bins.

    The per-bin sums are a matrix product rather than a scatter-add: on a GPU the latter adds in a
    varying order, and these terms are not integers, so the interval would change in its last bits.
    """
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float32, device=conf.device)
    bins = (torch.bucketize(conf.float(), edges, right=True) - 1).clamp_(0, n_bins)
    gap_terms = torch.zeros(len(bins), n_bins + 1, dtype=w.dtype, device=w.device)
    gap_terms[torch.arange(len(bins), device=w.device), bins] = correct.to(w.dtype) - conf.to(w.dtype)
    return (w @ gap_terms).abs().sum(1) / w.sum(1)


def weighted_summary(probs: Tensor, targets: Tensor, w: Tensor, n_bins: int = 15) -> dict[str, Tensor]:
    """Every :func:`stardomain.bma.metrics.summary` number under each row of item weights ``w`` ``(B, N)``.

    Per-item terms are computed once; the rows only reweight them, so B resamples cost B weighted sums
    rather than B recomputations of the metrics.
    """
    dtype = w.dtype
    raw = probs.detach()  # scores ranked in the probabilities' own dtype, as metrics ranks them
    y = targets.to(raw.device).long()
    conf, pred = raw.max(dim=1)
    correct = pred.eq(y)
    p = raw.to(dtype)
    p_true = p.gather(1, y.unsqueeze(1)).squeeze(1)
    onehot = torch.zeros_like(p).scatter_(1, y.unsqueeze(1), 1.0)
    total = w.sum(1)
    per_item = torch.stack([correct.to(dtype), -p_true.clamp_min(1e-12).log(), (p - onehot).pow(2).sum(1)], dim=1)
    acc, nll, brier = (w @ per_item / total.unsqueeze(1)).unbind(1)
    return {
        "accuracy": acc,
        "nll": nll,
        "ece": _weighted_ece(conf, correct, w, n_bins),
        "brier": brier,
        "auroc_max_prob": _weighted_auroc(conf, correct, w),
        "auroc_neg_entropy": _weighted_auroc(-metrics.entropy(raw), correct, w),
    }


def intervals(probs: Tensor, targets: Tensor, counts: Tensor, level: float = LEVEL) -> dict[str, list[float]]:
    """Percentile-bootstrap ``level`` interval ``[lo, hi]`` of each summary metric over the rows of ``counts``.

    Rows are processed in chunks so memory stays near ``_CELLS_PER_CHUNK`` cells whatever the test-set
    size; the work runs on ``probs``' device (float64, or float32 on MPS, which has no float64).
    Resamples where a metric is undefined (an AUROC with no wrong prediction) are left out; a metric
    undefined in every resample gets ``[nan, nan]``.
    """
    n_boot, n = counts.shape
    if n != probs.shape[0]:
        raise StardomainError(f"bma: {n} bootstrap weights per resample but {probs.shape[0]} test samples")
    dtype = torch.float32 if probs.device.type == "mps" else torch.float64
    rows = max(1, _CELLS_PER_CHUNK // n)
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, n_boot, rows):
        w = counts[start : start + rows].to(device=probs.device, dtype=dtype)
        for name, values in weighted_summary(probs, targets, w).items():
            parts.setdefault(name, []).append(values.double().cpu())
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    return {name: [float(v) for v in torch.nanquantile(torch.cat(vals), q)] for name, vals in parts.items()}


def describe(n: int, n_boot: int, seed: int, level: float = LEVEL) -> dict[str, Any]:
    """What the intervals are, stored beside them so a report can say it without guessing."""
    return {"method": "percentile bootstrap over test samples", "level": level, "resamples": n_boot, "n_test": n, "seed": seed}
