"""Which statistical test backs which claim of the paper, computed from results.json alone.

Each study states its verdicts from these (:meth:`stardomain.experiment.study.Study.tests`); the pipeline stores
them under ``results["tests"]`` and the report prints them. Keeping the choice of test here (and the arithmetic in
:mod:`stardomain.analysis.stats`) means a claim is worded in one place and tested in one place. Every test is seeded with the
experiment's seed, so the same results give the same intervals.
"""

from __future__ import annotations

from typing import Any, Mapping

from stardomain import defaults
from stardomain.analysis import stats

# results.json files written before eval.metric existed were judged on the test loss: re-reported, they are
# judged on the metric of the config they record, or the default where they record none
METRIC = defaults.BARRIER_METRIC


def metric_of(results: Mapping[str, Any]) -> str:
    """The barrier metric the verdicts of ``results`` are judged on (``eval.metric``; default: the ICLR version's)."""
    return str(results["config"]["eval"].get("metric", defaults.BARRIER_METRIC))


def _values(summary: Mapping[str, Any], group: str, key: str = METRIC) -> list[float] | None:
    g = summary.get(group)
    return list(g["values"][key]) if g and "values" in g and key in g["values"] else None


def setting_tests(
    summary: Mapping[str, Any], endpoints: Mapping[str, Any] | None, tolerance: float, seed: int, metric: str = METRIC
) -> dict[str, Any]:
    """The three barrier claims for one star and its zoo (main, each width/depth row, the optimizer study),
    judged on the barriers of ``metric``.

    ``comparable`` is False when the star is more than the margin below its sources' test accuracy:
    its barriers are then small because its endpoint is poor, and no barrier verdict stands.
    """
    rr, ss, sh = (_values(summary, g, metric) for g in ("regular-regular", "star-source", "star-held-out"))
    out: dict[str, Any] = {
        "metric": metric,
        "tolerance": tolerance,
        "comparable": not (endpoints or {}).get("star_below_sources", False),
        "converged": converged(endpoints),
    }
    if rr is not None:
        out["regular_regular_vs_zero"] = stats.near_zero(rr, tolerance)
    if ss is not None:
        out["star_source_near_zero"] = stats.near_zero(ss, tolerance)
    if sh is not None and rr is not None:
        out["star_held_out_vs_regular"] = stats.compare(sh, rr, seed=seed)
    out.update(over_star_tests(summary, rr, tolerance, seed, metric))
    return out


def by_metric(
    summary: Mapping[str, Any], endpoints: Mapping[str, Any] | None, tolerance: float, seed: int, metric: str
) -> dict[str, dict[str, Any]]:
    """The same claims on every metric the report shows side by side (train and test loss) and the verdict's
    own: on small, over-fitting data the two losses can disagree, and the reader must see where."""
    shown = dict.fromkeys((metric, *defaults.VERDICT_METRICS_SHOWN))
    return {m: setting_tests(summary, endpoints, tolerance, seed, m) for m in shown}


def converged(endpoints: Mapping[str, Any] | None) -> bool:
    """Whether the zoo behind these barriers reached the convergence threshold (results without the
    record, from before it existed, count as converged: nothing is known against them)."""
    return bool((endpoints or {}).get("convergence", {}).get("converged", True))


def star_means(holder: Mapping[str, Any] | None, key: str = METRIC) -> list[float] | None:
    """The per-star means of one figure (``holder["over_stars"][key]``: a summary group, a distances
    group or a |Z| row); None where the figure was not given over stars."""
    o = (holder or {}).get("over_stars", {}).get(key)
    return None if o is None else [ps["mean"] for ps in o["per_star"] if ps["n"] > 0]


def _per_star_means(summary: Mapping[str, Any], group: str, metric: str = METRIC) -> list[float] | None:
    return star_means(summary.get(group), metric)


def over_star_tests(
    summary: Mapping[str, Any], rr: list[float] | None, tolerance: float, seed: int, metric: str = METRIC
) -> dict[str, Any]:
    """The star claims with the star as the unit of replication: with k >= 2 stars, tested on the per-star
    means (n = k); with one star the spread over stars is unknown, and the report says so."""
    ss, sh = _per_star_means(summary, "star-source", metric), _per_star_means(summary, "star-held-out", metric)
    n_stars = len(ss or sh or [])
    if not n_stars:
        return {}
    out: dict[str, Any] = {"n_stars": n_stars}
    if n_stars < 2:
        return out
    if ss is not None:
        out["star_source_near_zero_over_stars"] = stats.near_zero(ss, tolerance)
    if sh is not None and rr is not None:
        out["star_held_out_vs_regular_over_stars"] = stats.compare(sh, rr, seed=seed)
    return out


def trend_over_stars(first: Mapping[str, Any], last: Mapping[str, Any], seed: int, metric: str) -> dict[str, Any]:
    """The |Z| trend with the star as the unit of replication: per-star mean star-held-out barriers
    at the largest |Z| against those at the smallest (only when both sizes have k >= 2 stars)."""
    a, b = star_means(last, metric) or [], star_means(first, metric) or []
    if len(a) < 2 or len(b) < 2:
        return {}
    return {"n_stars": min(len(a), len(b)), "trend_over_stars": stats.compare(a, b, seed=seed)}


def header(results: Mapping[str, Any]) -> dict[str, Any]:
    """What every verdict of ``results`` shares: the level, the tolerance, the accuracy margin and the metric."""
    ev = results["config"]["eval"]
    return {
        "level": stats.LEVEL,
        "tolerance": float(ev["near_zero_tolerance"]),
        "margin": float(ev["star_acc_margin"]),
        "metric": metric_of(results),
    }
