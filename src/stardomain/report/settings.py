"""The report's sections for other training settings: the width/depth rows and the optimizer study.

Each setting is the main barrier study again (its own zoo and stars), so one table layout serves
both; the width-trend figure is drawn from the same rows when they differ only in width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from stardomain.analysis.convergence import NOT_CONVERGED
from stardomain.analysis.stats import verdict
from stardomain.report.formatting import GROUP_LABELS, acc_loss, fmt, interval, poor_star, table
from stardomain.report.stars import over_stars_cell, width_trend_lines

SETTING_HEADER = [
    "setting",
    "options",
    "regular–regular",
    "star–held-out",
    "star–source",
    "sources' test acc (%) / loss",
    "held-out test acc (%) / loss",
    "star test acc (%) / loss",
    "star–held-out vs regular–regular",
]


def _barrier_cell(summary: Mapping[str, Any], tests: Mapping[str, Any], group: str) -> str:
    """One group's barrier on the verdict's metric over pairs, and over stars where the setting repeated its star."""
    metric = tests.get("metric", "test_loss")
    pooled = fmt(summary.get(group, {}).get("barriers", {}).get(metric))
    if (tests.get("n_stars") or 1) < 2 or "over_stars" not in summary.get(group, {}):
        return pooled
    return f"{pooled}; over stars {over_stars_cell(summary[group], metric)}"


def setting_rows(rows: Sequence[Mapping[str, Any]], tests: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    out = []
    for r, t in zip(rows, tests):
        s, ep = r["summary"], r["endpoints"]
        per_star = t.get("star_held_out_vs_regular_over_stars")  # the star as the unit of replication, where repeated
        cmp = per_star or t.get("star_held_out_vs_regular")
        word = verdict(cmp, "below", "ABOVE") if cmp else "–"
        if not t["comparable"]:
            word = f"not comparable ({poor_star(ep)})"
        elif cmp:
            word += f" (CI {interval(cmp['ci95'])}" + (f", over {t['n_stars']} stars)" if per_star else ", over pairs)")
        if not t.get("converged", True):
            word += f" [{NOT_CONVERGED}]"

        out.append(
            [
                r["tag"],
                ", ".join(f"{k}={v}" for k, v in r["options"].items()),
                *(_barrier_cell(s, t, g) for g in ("regular-regular", "star-held-out", "star-source")),
                acc_loss(ep["sources"]),
                acc_loss(ep.get("held_out")),
                acc_loss(ep["star"]),
                word,
            ]
        )
    return out


def width_depth_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    from stardomain.report.metrics_side import axis_label, metric_label, verdict_metric
    from stardomain.report.plots import plot_series

    rows = results["width_depth"]["rows"]
    metric = verdict_metric(results)
    lines = [
        f"## Width and depth (paper v2 Fig. 2): {metric_label(metric)} barriers (eval.metric)",
        "",
        table(SETTING_HEADER, setting_rows(rows, results["tests"]["width_depth"])),
        "",
    ]
    xs = [r["tag"] for r in rows]  # categorical ticks named by setting
    series = {}
    for g in ("regular-regular", "star-held-out"):
        ms = [r["summary"].get(g, {}).get("barriers", {}).get(metric, {"mean": float("nan"), "std": 0.0}) for r in rows]
        series[GROUP_LABELS[g]] = ([m["mean"] for m in ms], [m["std"] for m in ms])
    path = out / "width_depth.png"
    plot_series(xs, series, "setting", axis_label(metric), path)
    figures.append(path.name)
    return lines + [f"![barriers across width/depth]({path.name})", ""] + width_trend_lines(results, out, figures)


def optimizer_section(results: Mapping[str, Any]) -> list[str]:
    r = results["optimizer"]
    rec, star = r["recipe"], r["star_recipe"]
    return [
        f"## Optimizer: {r['optimizer']}-trained sources and star (paper v2 Table 1, second row)",
        "",
        f"Sources: {rec['optimizer']} lr {rec['lr']:g} × {rec['epochs']} epochs; star: {star['optimizer']} lr {star['lr']:g} × "
        f"{star['epochs']} epochs (studies.optimizer.star_recipe; the main star's overrides do not apply).",
        "",
        table(SETTING_HEADER, setting_rows([{**r, "options": {"optimizer": r["optimizer"]}}], [results["tests"]["optimizer"]])),
        "",
    ]
