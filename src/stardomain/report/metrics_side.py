"""The barrier verdicts on train and test loss side by side (report.md and the end of ``stardomain run``).

Why a view of its own: the ICLR version of the paper (v2) builds its findings on the training loss and
shows test metrics in an appendix, while v1's figures use the test loss. On small, over-fitting data the
two disagree (a star can be near 0 on one and not on the other), so a verdict is never shown on one
metric alone: the configured metric (``eval.metric``) gives the verdict, the other stands beside it.
"""

from __future__ import annotations

from typing import Any, Mapping

from stardomain import defaults
from stardomain.analysis.stats import verdict
from stardomain.report.formatting import interval, num, table

METRIC_LABELS = {"train_loss": "train loss", "test_loss": "test loss", "train_acc": "train accuracy", "test_acc": "test accuracy"}
PAPER_NOTE = (
    "The ICLR version of the paper (v2) builds its findings on the training loss and shows test metrics in an "
    "appendix; v1's figures use the test loss."
)
# (test key, claim, word when the test says lower/near 0, word when it says higher/above)
CLAIMS = (
    ("regular_regular_vs_zero", "regular–regular barrier ≈ 0", "near 0 (already connected)", "above tolerance"),
    ("star_source_near_zero", "star–source barrier ≈ 0", "near 0", "NOT near 0"),
    ("star_held_out_vs_regular", "star–held-out < regular–regular", "below", "ABOVE"),
    ("star_source_near_zero_over_stars", "star–source ≈ 0, over stars", "near 0", "NOT near 0"),
    ("star_held_out_vs_regular_over_stars", "star–held-out < regular–regular, over stars", "below", "ABOVE"),
)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def verdict_metric(results: Mapping[str, Any]) -> str:
    """The metric the verdicts of ``results`` were judged on (results from before eval.metric: the test loss)."""
    return str(results.get("tests", {}).get("metric", "test_loss"))


def axis_label(metric: str) -> str:
    """A figure's y label for a barrier of ``metric``: losses in nats; accuracies as a fraction (a figure plots the
    stored value; 0.05 is 5 pp)."""
    return f"{metric_label(metric)} barrier " + ("(nats)" if metric.endswith("loss") else "(fraction; 0.05 = 5 pp)")


def ordered(by_metric: Mapping[str, Any], verdict: str) -> list[str]:
    """The verdict's metric first, then train and test loss (results.json sorts its keys, so order is chosen here)."""
    return [m for m in dict.fromkeys((verdict, *defaults.VERDICT_METRICS_SHOWN, *sorted(by_metric))) if m in by_metric]


def claim_word(tests: Mapping[str, Any], key: str, lower: str, higher: str) -> str:
    """One claim's verdict on one metric: its word, "–" where the claim was not tested, or why no verdict stands."""
    t = tests.get(key)
    if t is None:
        return "–"
    if not tests.get("comparable", True) and key != "regular_regular_vs_zero":
        return "not comparable (poor star)"
    return verdict(t, lower, higher)


def claim_cell(tests: Mapping[str, Any], key: str, lower: str, higher: str) -> str:
    """One claim on one metric: the verdict word and the number it rests on (mean and bound, or difference and CI);
    accuracy barriers in percentage points, as every human output shows them (``_util.units``)."""
    word = claim_word(tests, key, lower, higher)
    t = tests.get(key)
    if t is None or word.startswith("not comparable"):
        return word
    scale, unit = (100.0, " pp") if str(tests.get("metric", "")).endswith("acc") else (1.0, "")
    if "bounds" in t:
        return (
            f"{word}: mean {num(t['values']['mean'], scale)}{unit}, 95% bounds {interval(t['bounds'], scale)}{unit}, n = {t['values']['n']}"
        )
    return f"{word}: difference {num(t['diff'], scale)}{unit}, CI {interval(t['ci95'], scale)}{unit}, n = {t['a']['n']} vs {t['b']['n']}"


def side_by_side_lines(by_metric: Mapping[str, Mapping[str, Any]], verdict_metric: str) -> list[str]:
    """report.md's table: one row per claim, one column per metric, the verdict's metric marked."""
    metrics = ordered(by_metric, verdict_metric)
    header = ["claim", *(metric_label(m) + (" (verdict, eval.metric)" if m == verdict_metric else "") for m in metrics)]
    rows = [
        [claim, *(claim_cell(by_metric[m], key, lo, hi) for m in metrics)]
        for key, claim, lo, hi in CLAIMS
        if any(key in by_metric[m] for m in metrics)
    ]
    if not rows:
        return []
    return [
        f"The same claims on each loss (verdicts above: {metric_label(verdict_metric)}). {PAPER_NOTE}",
        "",
        table(header, rows),
        "",
    ]


def console_lines(results: Mapping[str, Any]) -> list[str]:
    """What ``stardomain run`` prints at its end: each claim's verdict on every shown metric, one line per claim."""
    tests = results.get("tests", {})
    by_metric = tests.get("barriers_by_metric")
    if not by_metric:
        return []
    metric = tests.get("metric", next(iter(by_metric)))
    metrics = ordered(by_metric, metric)
    out = [f"verdicts ({' | '.join(metric_label(m) for m in metrics)}; the verdict is on {metric_label(metric)}, eval.metric):"]
    for key, claim, lo, hi in CLAIMS:
        if any(key in by_metric[m] for m in metrics):
            out.append(f"  {claim}: " + " | ".join(claim_word(by_metric[m], key, lo, hi) for m in metrics))
    return out
