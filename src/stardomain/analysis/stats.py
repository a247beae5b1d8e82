"""Statistics behind every cell and verdict of a report: mean ± sample std with n, and the tests.

Why a module of its own: a verdict ("below", "near 0", "better") is a claim, and a claim from
five numbers needs a test that can say "not significant at this n". Every test here returns a
plain dict (JSON-ready, deterministic for a given seed) holding its numbers and a ``direction``
(-1, 0 or +1; 0 when the test does not support a difference), and :func:`verdict` turns that into
the words the report prints. Nothing here knows about models: it only sees lists of floats.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats as sps

NOT_SIGNIFICANT = "not significant at this n"
LEVEL = 0.95  # two-sided confidence level of every interval printed
N_BOOT = 10_000


def undefined(x: float | None) -> bool:
    """Whether ``x`` is no number: NaN, or None (how a strict JSON file stardomain wrote holds NaN and
    infinities: :mod:`stardomain._util.strictjson`)."""
    return x is None or math.isnan(float(x))


def as_float(x: float | None) -> float:
    """``x`` as a float, None (null in a results file) as NaN."""
    return math.nan if x is None else float(x)


def clean(values: Sequence[float | None]) -> list[float]:
    """The finite values of ``values`` (None and NaN dropped: a diverged pair is not a number)."""
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def mean_std(values: Sequence[float | None]) -> dict[str, float]:
    """Mean, *sample* standard deviation (ddof=1) and count; std is 0 for one value, NaN for none."""
    vals = clean(values)
    if not vals:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def over_stars(values_by_star: Sequence[Sequence[float | None]]) -> dict[str, Any]:
    """A star figure over k repeated stars, with both spreads kept apart.

    ``values_by_star[i]`` are star i's values over its pairs (e.g. its star–held-out barriers).
    Pairs of one star share that star, so they are not independent draws: the spread that
    says whether an effect is more than one star's luck is the one *over stars* — the mean ±
    sample std of the per-star means (n_stars). ``over_pairs`` pools every pair of every star
    (n_pairs): it mixes star-to-star and pair-to-pair variation and is given for comparison.
    A star with no finite value does not count towards n_stars.
    """
    per_star = [mean_std(v) for v in values_by_star]
    return {
        "per_star": per_star,
        "over_stars": mean_std([ps["mean"] for ps in per_star]),
        "over_pairs": mean_std([v for vals in values_by_star for v in vals]),
        "n_stars": sum(ps["n"] > 0 for ps in per_star),
        "n_pairs": sum(ps["n"] for ps in per_star),
        "spread": "over_stars: sample std of the per-star means (each over its pairs); over_pairs: sample std of all pairs pooled",
    }


def _direction(lo: float, hi: float) -> int:
    return -1 if hi < 0 else (1 if lo > 0 else 0)


def bootstrap_diff_ci(
    a: Sequence[float], b: Sequence[float], seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) − mean(b), resampling each group independently.

    Seeded with a private generator, so the same inputs always give the same interval.
    NaN bounds when a group is empty.
    """
    x, y = np.asarray(clean(a)), np.asarray(clean(b))
    if not len(x) or not len(y):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    mx = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    my = y[rng.integers(0, len(y), (n_boot, len(y)))].mean(axis=1)
    lo, hi = np.quantile(mx - my, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def welch(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Welch's two-sample t-test (unequal variances): t, degrees of freedom and two-sided p.

    NaN when either group has fewer than two values or both have zero spread.
    """
    x, y = clean(a), clean(b)
    if len(x) < 2 or len(y) < 2 or (np.var(x) == 0 and np.var(y) == 0):
        return {"t": float("nan"), "df": float("nan"), "p": float("nan")}
    r = sps.ttest_ind(x, y, equal_var=False)
    vx, vy = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return {"t": float(r.statistic), "df": float(df), "p": float(r.pvalue)}


def compare(a: Sequence[float], b: Sequence[float], seed: int = 0, alpha: float = 1 - LEVEL) -> dict[str, Any]:
    """Is mean(a) different from mean(b)? Both the bootstrap interval and Welch's test must agree.

    ``direction`` is -1 (a lower) or +1 (a higher) only when the 95% bootstrap interval of the
    difference excludes 0 *and* Welch's p < alpha; requiring both keeps the bootstrap's optimism
    at small n in check.
    """
    lo, hi = bootstrap_diff_ci(a, b, seed=seed)
    w = welch(a, b)
    ma, mb = mean_std(a), mean_std(b)
    d = _direction(lo, hi) if not math.isnan(w["p"]) and w["p"] < alpha else 0
    return {
        "test": "bootstrap CI of the difference + Welch t",
        "a": ma,
        "b": mb,
        "diff": ma["mean"] - mb["mean"],
        "ci95": [lo, hi],
        "welch": w,
        "direction": d,
    }


def paired_t(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
    """Mean of the per-pair differences a[i] − b[i] with its two-sided t interval: the test for two
    measurements of the same pairs (e.g. one pair's barrier under two protocols), where the pair-to-pair
    spread that a two-sample test must carry cancels. ``direction`` as in :func:`compare`; 0 below n = 2."""
    d = [float(x) - float(y) for x, y in zip(a, b) if not (undefined(x) or undefined(y))]
    ms = mean_std(d)
    n = ms["n"]
    if n < 2:
        lo = hi = p = float("nan")
    else:
        half = float(sps.t.ppf((1 + level) / 2, n - 1)) * ms["std"] / math.sqrt(n)
        lo, hi = ms["mean"] - half, ms["mean"] + half
        p = float(sps.ttest_1samp(d, 0.0).pvalue) if ms["std"] > 0 else (0.0 if ms["mean"] != 0 else 1.0)
    return {
        "test": f"paired t: {level:.0%} interval of the mean per-pair difference",
        "difference": ms,
        "ci": [lo, hi],
        "p": p,
        "direction": 0 if n < 2 or p >= 1 - level else _direction(lo, hi),
    }


def near_zero(values: Sequence[float], tolerance: float, level: float = LEVEL) -> dict[str, Any]:
    """Is the mean of ``values`` below ``tolerance``? One-sided t bounds of the mean.

    ``direction`` -1: the upper bound is below the tolerance ("near 0"); +1: the lower bound is
    above it (a real barrier); 0 otherwise, and always for fewer than two values.
    """
    ms = mean_std(values)
    n = ms["n"]
    if n < 2:
        lo = hi = float("nan")
        d = 0
    else:
        half = float(sps.t.ppf(level, n - 1)) * ms["std"] / math.sqrt(n)
        lo, hi = ms["mean"] - half, ms["mean"] + half
        d = -1 if hi < tolerance else (1 if lo > tolerance else 0)
    return {
        "test": f"one-sided {level:.0%} t bounds of the mean vs tolerance",
        "values": ms,
        "tolerance": tolerance,
        "bounds": [lo, hi],
        "direction": d,
    }


def against_population(values: Sequence[float], x: float, level: float = LEVEL) -> dict[str, Any]:
    """Is the single value ``x`` outside the ``level`` prediction interval of one new draw like ``values``?

    The right test for "one fused star vs a single regular model": the star is one model, so it
    is compared with where one more regular model would land, not with the regular mean.
    """
    ms = mean_std(values)
    n = ms["n"]
    out: dict[str, Any] = {"test": f"{level:.0%} prediction interval of one regular model", "values": ms, "x": x}
    if n >= 2 and ms["std"] == 0:
        # all regular models tie (accuracy on a finite test set is discrete; two models often do): a zero-width
        # interval would call any other value "better" or "worse", but the sample says nothing about the spread
        out["no_verdict"] = "the regular models all score the same, so their spread is unknown"
    if n < 2 or undefined(x) or "no_verdict" in out:
        lo = hi = float("nan")
        d = 0
    else:
        half = float(sps.t.ppf((1 + level) / 2, n - 1)) * ms["std"] * math.sqrt(1 + 1 / n)
        lo, hi = ms["mean"] - half, ms["mean"] + half
        d = 1 if x > hi else (-1 if x < lo else 0)
    return {**out, "interval": [lo, hi], "direction": d}


def bootstrap_counts(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) multiplicities of each item in each bootstrap resample (rows sum to n), seeded."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def weighted_auroc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of ``score`` for ``positive`` items under each row of item ``weights`` (ties count 1/2).

    With all weights 1 this is the Mann–Whitney AUROC of :func:`stardomain.bma.metrics.auroc_correctness`;
    one sort serves every bootstrap row. NaN where a row has no positive or no negative weight.
    """
    order = np.argsort(score, kind="stable")
    s, pos, w = score[order], positive[order].astype(bool), weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    wpos = np.add.reduceat(w * pos, starts, axis=1)
    wneg = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(wneg, axis=1) - wneg
    denom = wpos.sum(axis=1) * wneg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (wpos * (below + 0.5 * wneg)).sum(axis=1) / denom, np.nan)


def weighted_ece(bins: np.ndarray, conf: np.ndarray, correct: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Count-weighted L1 calibration error under each row of item ``weights``; ``bins`` are the items'
    bin indices in [0, n_bins) (computed by the caller exactly as :func:`stardomain.bma.metrics.ece` bins)."""
    onehot = np.zeros((len(bins), n_bins))
    onehot[np.arange(len(bins)), bins] = 1.0
    gap = weights @ (onehot * (correct.astype(np.float64) - conf)[:, None])
    return np.abs(gap).sum(axis=1) / weights.sum(axis=1)


def paired_bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray], n: int, seed: int = 0, n_boot: int = 1000, level: float = LEVEL, chunk: int = 100
) -> dict[str, Any]:
    """Bootstrap over *items* (e.g. test examples) of a difference between two methods on the same items.

    ``statistic(weights)`` maps (rows, n) item multiplicities to the difference (method A − method B)
    per row; the same resample feeds both methods, so item difficulty cancels. Vectorised over
    rows (``chunk`` at a time) because a per-resample Python loop costs minutes on a test set.
    This measures test-set noise only, not seed-to-seed variation.
    """
    full = float(statistic(np.ones((1, n)))[0])
    counts = bootstrap_counts(n, n_boot, seed)
    boots = np.concatenate([np.asarray(statistic(counts[i : i + chunk]), dtype=np.float64) for i in range(0, n_boot, chunk)])
    boots = boots[np.isfinite(boots)]
    if not len(boots):
        return {"test": "paired bootstrap over test examples", "diff": full, "ci95": [float("nan")] * 2, "n_items": n, "direction": 0}
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return {
        "test": "paired bootstrap over test examples",
        "diff": full,
        "ci95": [float(lo), float(hi)],
        "n_items": n,
        "direction": _direction(float(lo), float(hi)),
    }


def verdict(result: Mapping[str, Any], lower: str, higher: str) -> str:
    """The words for a test result: ``lower``/``higher`` only where the test supports it."""
    d = result.get("direction", 0)
    return lower if d < 0 else (higher if d > 0 else NOT_SIGNIFICANT)
