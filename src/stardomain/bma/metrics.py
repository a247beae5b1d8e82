"""Predictive-uncertainty metrics for Bayesian model averaging (paper Section 4.1).

Every function takes ``probs`` of shape ``(N, C)`` (already-normalised class
probabilities, e.g. a post-softmax average over posterior samples) and integer
``targets`` of shape ``(N,)``, and returns a Python ``float``. The work happens on
the device of ``probs``; only the final scalar is moved to the host.

Pure torch on purpose: torchmetrics / scikit-learn are used only in the tests, as
references that these implementations must agree with.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from stardomain.errors import StardomainError

__all__ = [
    "Confidence",
    "accuracy",
    "auroc_correctness",
    "brier",
    "ece",
    "entropy",
    "nll",
    "summary",
]

Confidence = Literal["max_prob", "neg_entropy"]


def _check(probs: Tensor, targets: Tensor) -> None:
    """Fail early with a fixable message instead of a shape error deep inside torch."""
    if not isinstance(probs, Tensor) or not isinstance(targets, Tensor):
        raise StardomainError("probs and targets must be torch tensors")
    if probs.ndim != 2:
        raise StardomainError(f"probs must have shape (N, C); got {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise StardomainError(f"probs must be a floating-point tensor; got dtype {probs.dtype}")
    if targets.ndim != 1 or targets.shape[0] != probs.shape[0]:
        raise StardomainError(f"targets must have shape (N,) matching probs (N={probs.shape[0]}); got {tuple(targets.shape)}")
    if probs.shape[0] == 0:
        raise StardomainError("metrics need at least one sample; got N=0")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise StardomainError(f"targets must be integer class indices; got dtype {targets.dtype}")
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= probs.shape[1]:
        raise StardomainError(f"targets must lie in [0, {probs.shape[1] - 1}] (C={probs.shape[1]}); got range [{lo}, {hi}]")


def _top1(probs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Top-1 confidence and correctness; ``max`` (first index on ties) as torchmetrics does."""
    conf, pred = probs.max(dim=1)
    return conf, pred.eq(targets.to(pred.device))


def entropy(probs: Tensor) -> Tensor:
    """Per-sample Shannon entropy in nats, shape ``(N,)``.

    Uses ``torch.special.entr`` so that 0 * log 0 = 0 exactly, with no eps bias.
    """
    if not isinstance(probs, Tensor) or probs.ndim != 2 or not probs.is_floating_point():
        raise StardomainError("entropy expects a floating-point probs tensor of shape (N, C)")
    return torch.special.entr(probs.detach()).sum(dim=1)


def accuracy(probs: Tensor, targets: Tensor) -> float:
    """Fraction of samples whose arg-max class equals the target, in [0, 1]."""
    _check(probs, targets)
    _, correct = _top1(probs.detach(), targets)
    return float(correct.double().mean())


def nll(probs: Tensor, targets: Tensor, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class.

    Probabilities are clamped to ``eps`` so a confidently wrong zero gives a large
    finite penalty (-log eps) rather than ``inf``.
    """
    _check(probs, targets)
    p = probs.detach().double()
    p_true = p.gather(1, targets.to(p.device).long().unsqueeze(1)).squeeze(1)
    return float(-p_true.clamp_min(eps).log().mean())


def brier(probs: Tensor, targets: Tensor) -> float:
    """Multiclass Brier score: mean over samples of sum_c (p_c - onehot_c)^2, in [0, 2]."""
    _check(probs, targets)
    p = probs.detach().double()
    onehot = torch.zeros_like(p)
    onehot.scatter_(1, targets.to(p.device).long().unsqueeze(1), 1.0)
    return float((p - onehot).pow(2).sum(dim=1).mean())


def ece(probs: Tensor, targets: Tensor, n_bins: int = 15) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width bins (L1, count-weighted).

    ECE = sum_b (|B_b| / N) * |acc(B_b) - conf(B_b)|.

    Binning follows torchmetrics' ``multiclass_calibration_error(norm="l1")`` exactly
    so numbers are comparable with published results: edges are
    ``torch.linspace(0, 1, n_bins + 1)`` and bins are left-closed / right-open,
    ``[e_k, e_{k+1})``, found with ``bucketize(right=True)``. A confidence of exactly
    1.0 therefore lands in its own extra bin (it is not merged into the last one).
    Bin membership is decided in float32 (as torchmetrics does after its downcast),
    so even float64 inputs sitting on an edge land in the same bin; the per-bin
    sums are accumulated in float64.
    """
    _check(probs, targets)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise StardomainError(f"n_bins must be a positive integer; got {n_bins!r}")
    conf, correct = _top1(probs.detach(), targets)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float32, device=conf.device)
    idx = torch.bucketize(conf.float(), edges, right=True) - 1  # in [0, n_bins]; n_bins holds conf >= 1
    idx = idx.clamp_(0, n_bins)
    conf_sum = torch.zeros(n_bins + 1, dtype=torch.float64, device=conf.device)
    acc_sum = torch.zeros_like(conf_sum)
    conf_sum.index_add_(0, idx, conf.double())
    acc_sum.index_add_(0, idx, correct.double())
    # (|B|/N) * |acc_mean - conf_mean| == |acc_sum - conf_sum| / N; empty bins add 0.
    return float((acc_sum - conf_sum).abs().sum() / conf.shape[0])


def _average_ranks(scores: Tensor) -> Tensor:
    """1-based ranks with ties given their mean rank (what Mann-Whitney U needs)."""
    sorted_scores, order = torch.sort(scores)
    _, counts = torch.unique_consecutive(sorted_scores, return_counts=True)
    ends = counts.cumsum(0)  # 1-based rank of the last member of each tie group
    group_rank = (ends - counts).double() + (counts.double() + 1.0) / 2.0
    ranks_sorted = group_rank.repeat_interleave(counts)
    ranks = torch.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    return ranks


def auroc_correctness(probs: Tensor, targets: Tensor, confidence: Confidence = "max_prob") -> float:
    """AUROC of a confidence score for telling correct top-1 predictions from wrong ones.

    ``confidence="max_prob"`` scores each sample by max_c p_c; ``"neg_entropy"`` by
    -H(p). Computed exactly as the Mann-Whitney statistic
    U / (n_correct * n_wrong) with average ranks for tied scores, i.e. a tie between
    a correct and a wrong sample counts 1/2 -- identical to the trapezoidal ROC area.

    Returns ``float('nan')`` when every prediction is correct or every one is wrong:
    the AUROC is undefined then (one class is empty), and NaN keeps that visible
    rather than a misleading 0 or 0.5.
    """
    _check(probs, targets)
    p = probs.detach()
    _, correct = _top1(p, targets)
    if confidence == "max_prob":
        score = p.max(dim=1).values
    elif confidence == "neg_entropy":
        score = -entropy(p)
    else:
        raise StardomainError(f"confidence must be 'max_prob' or 'neg_entropy'; got {confidence!r}")
    n_pos = int(correct.sum())
    n_neg = correct.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(score)
    u = ranks[correct].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (float(n_pos) * float(n_neg)))


def summary(probs: Tensor, targets: Tensor, n_bins: int = 15) -> dict[str, float]:
    """All BMA evaluation numbers at once, keyed as used in the experiment reports."""
    return {
        "accuracy": accuracy(probs, targets),
        "nll": nll(probs, targets),
        "ece": ece(probs, targets, n_bins=n_bins),
        "brier": brier(probs, targets),
        "auroc_max_prob": auroc_correctness(probs, targets, "max_prob"),
        "auroc_neg_entropy": auroc_correctness(probs, targets, "neg_entropy"),
    }
