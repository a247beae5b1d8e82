"""report.md's sections of the studies beyond the main barrier groups: |Z| sweep, BMA, fusion (each Study's report calls one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from stardomain.analysis.stats import NOT_SIGNIFICANT, undefined, verdict
from stardomain.report.bma_plot import AUROC_DEFINITION
from stardomain.report.formatting import (
    acc_loss,
    clip,
    compare_text,
    fmt,
    interval,
    num,
    table,
)

# Paper v1, Table 1 (CIFAR-10, ResNet-18): ℓ2 distances without / with the winning permutation.
from stardomain.report.markdown import PAPER_FUSION, flag_text, paper_key, with_convergence


def n_sources_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    """The |Z| sweep (paper Fig. 3): the table, the reference barrier, the trend's verdicts and the figure."""
    from stardomain.report.metrics_side import metric_label, verdict_metric

    ns = results["n_sources"]
    m = verdict_metric(results)  # the |Z| trend is tested on it; its numbers are shown on it
    lines = _n_sources_table(ns["rows"], m)
    ref = ns.get("regular_regular")
    if ref:
        lines += [f"Reference regular–regular {metric_label(m)} barrier: {fmt(ref[m], 100 if m.endswith('acc') else 1)}.", ""]
    t = results["tests"].get("n_sources")
    if t:
        lines += with_convergence(_n_sources_verdicts(t, ns["rows"]), results.get("endpoints")) + [""]
    name = _n_sources_figure(ns["rows"], m, ref, out)
    figures.append(name)
    return lines + [f"![barrier vs |Z|]({name})", ""]


def _n_sources_table(rows: list[dict[str, Any]], m: str) -> list[str]:
    """One row per |Z| (its stars, the endpoints, the barrier on metric ``m`` over stars and over pairs, the test
    accuracy barrier), the spread note and the held-out endpoints every row shares."""
    from stardomain.report.metrics_side import metric_label
    from stardomain.report.stars import SPREAD_NOTE, over_stars_cell

    acc = m.endswith("acc")
    cells = []
    for r in rows:
        ep = r["endpoints"]
        cells.append(
            [
                r["n_sources"],
                len(r.get("star_seeds", [r["star_seed"]])),
                ", ".join(str(x) for x in r.get("star_seeds", [r["star_seed"]])),
                acc_loss(ep["star"]),
                acc_loss(ep["sources"]),
                over_stars_cell(r, m, 100 if acc else 1, 2 if acc else 3),
                fmt(r["star_held_out"][m], 100 if acc else 1, 2 if acc else 3),
                fmt(r["star_held_out"]["test_acc"], 100, 2, n=False),
                "yes" if ep["star_below_sources"] else "no",
            ]
        )
    held = rows[0]["endpoints"].get("held_out") if rows else None
    header = [
        "\\|Z\\|",
        "stars",
        "star seeds",
        "star test acc (%) / loss (repeat 0)",
        "its sources' test acc (%) / loss",
        f"star–held-out {metric_label(m)} barrier over stars" + (" (pp)" if acc else ""),
        "over pairs",
        "test acc barrier (pp)",
        "star below sources?",
    ]
    return [
        "## Starness vs number of sources (paper Fig. 3)",
        "",
        table(header, cells),
        "",
        SPREAD_NOTE,
        "",
        f"Held-out endpoints (the same models for every row): test acc (%) / loss {acc_loss(held)}.",
        "",
    ]


def _n_sources_verdicts(t: Mapping[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The trend test (the barrier at the largest |Z| minus at the smallest) over pairs and, with repeated stars, over
    stars; flagged when the compared sizes' endpoints are not comparable (a star below its sources)."""
    flagged = [r for r in rows if r["n_sources"] in (t["first"], t["last"])]
    ep = next((r["endpoints"] for r in flagged if r["endpoints"]["star_below_sources"]), None)
    flag = "" if t["comparable"] else flag_text(ep)
    verdict_lines = [
        "- "
        + compare_text(
            t["trend"],
            f"star–held-out barrier at |Z|={t['last']} minus at |Z|={t['first']}",
            "the barrier decreases with |Z|",
            "the barrier INCREASES with |Z|",
            flag=flag,
        )
    ]
    if "trend_over_stars" in t:
        verdict_lines.append(
            "  - "
            + compare_text(
                t["trend_over_stars"],
                f"over {t['n_stars']} stars per size (n = per-star means): the same difference",
                "the barrier decreases with |Z|",
                "the barrier INCREASES with |Z|",
                flag=flag,
            )
        )
    return verdict_lines


def _n_sources_figure(rows: list[dict[str, Any]], m: str, ref: Mapping[str, Any] | None, out: Path) -> str:
    """n_sources.png: the star–held-out barrier vs |Z| with a ± std band (over stars where every size has repeated
    stars, else over pairs) and the regular–regular reference; returns the file name."""
    from stardomain.report.metrics_side import axis_label
    from stardomain.report.plots import plot_series

    xs = [r["n_sources"] for r in rows]
    repeated = all(r.get("over_stars", {}).get(m, {}).get("n_stars", 1) > 1 for r in rows)
    spread = [r["over_stars"][m]["over_stars"] if repeated else r["star_held_out"][m] for r in rows]
    k = min(r["over_stars"][m]["n_stars"] for r in rows) if repeated else None
    star_label = f"star – held-out (± std over {k} stars)" if repeated else f"star – held-out (± std over {spread[0]['n']} pairs)"
    series = {star_label: ([s["mean"] for s in spread], [s["std"] for s in spread])}
    if ref:
        series[f"regular – regular (± std over {ref[m]['n']} pairs)"] = (
            [ref[m]["mean"]] * len(xs),
            [ref[m]["std"]] * len(xs),
        )
    path = out / "n_sources.png"
    plot_series(xs, series, "number of source models |Z|", axis_label(m), path, band_label=None)
    return path.name


BMA_METRICS = ["accuracy", "nll", "ece", "brier", "auroc_max_prob", "auroc_neg_entropy"]
BMA_COLUMNS = [
    "accuracy (%)",
    "NLL",
    "ECE",
    "Brier",
    "misclassification AUROC (max prob)",
    "misclassification AUROC (neg. entropy)",
]


def _bma_cells(values: Mapping[str, Any], ci: Mapping[str, Any] | None = None) -> list[str]:
    """One row's metric cells: accuracy in % as in the figure, the rest as computed, each with its
    bootstrap interval where the result has one (results written before the intervals: none)."""
    out = []
    for name in BMA_METRICS:
        scale, digits = (100.0, 2) if name == "accuracy" else (1.0, 4)
        cell = num(values[name], scale, digits)  # null: "–"
        if ci and ci.get(name):
            cell += " " + interval(ci[name], scale, digits)
        out.append(cell)
    return out


def _bma_table(b: Mapping[str, Any]) -> list[str]:
    """The table at the largest K, the AUROC's definition, and what the brackets are."""
    rows = []
    for key, label in (("star_domain", "star-domain BMA"), ("ensemble", "deep ensemble")):
        m, ci = b[key]["metrics"], b[key].get("ci", {})
        last = {name: m[name][-1] for name in BMA_METRICS}
        rows.append([label, b[key]["k"][-1]] + _bma_cells(last, {name: ci[name][-1] for name in BMA_METRICS if ci.get(name)}))
    for key, label in (("star", "star model alone"), ("single", "single regular model")):
        if key in b:
            rows.append([label, 1] + _bma_cells(b[key]))
    lines = [table(["posterior", "K"] + BMA_COLUMNS, rows), "", f"{AUROC_DEFINITION}. NLL and ECE (15 bins) are lower-is-better."]
    boot = b["star_domain"].get("bootstrap")
    if boot and "ci" in b["star_domain"]:
        shared = ", the same resamples for both posteriors at every K" if b["ensemble"].get("bootstrap") == boot else ""
        lines[-1] += (
            f" Brackets: {100 * boot['level']:g}% bootstrap interval over the {boot['n_test']} test images, {boot['resamples']} "
            f"resamples (percentile, seed {boot['seed']}{shared}; the figure's bands). It is test-set noise only, not "
            "seed-to-seed variation."
        )
    return lines + [""]


def bma_test_lines(b: Mapping[str, Any], t: Mapping[str, Any]) -> list[str]:
    """The BMA posterior tests in words (a heading, then one ``- `` line per metric): the report and the CLI's
    ``bma`` say them alike."""
    lines = [
        f"Star-domain BMA (K={b['star_domain']['k'][-1]}) minus deep ensemble (K={b['ensemble']['k'][-1]}); paired bootstrap "
        "over test examples (one run of each posterior, so seed-to-seed variation is not included):"
    ]
    higher, lower = "higher for star-domain BMA", "lower for star-domain BMA"
    for name, label, if_lower, if_higher in (
        ("auroc_max_prob", "misclassification AUROC (max prob)", lower, higher),
        ("auroc_neg_entropy", "misclassification AUROC (neg. entropy)", lower, higher),
        ("ece", "ECE", "star-domain BMA is better calibrated", "star-domain BMA is worse calibrated"),
    ):
        if name in t:
            lines.append(
                f"- {label}: {verdict(t[name], if_lower, if_higher)} (difference {num(t[name]['diff'], digits=4)}, "
                f"95% CI {interval(t[name]['ci95'], digits=4)})"
            )
    return lines


def bma_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    from stardomain.report.bma_plot import plot_bma

    b = results["bma"]
    lines = ["## Bayesian model averaging over the star domain (paper Fig. 5)", ""] + _bma_table(b)
    t = results["tests"].get("bma")
    if t:
        head, *rows = bma_test_lines(b, t)
        lines += [head, "", *rows, "", "Paper: star-domain BMA has the better misclassification AUROC and the worse ECE.", ""]
    path = out / "bma.png"
    plot_bma(b, path)
    figures.append(path.name)
    return lines + [f"![BMA vs K]({path.name})", ""]


def fusion_section(results: Mapping[str, Any]) -> list[str]:
    f = results["fusion"]
    ref = PAPER_FUSION.get(paper_key(results))
    tests = {t["n_sources"]: t for t in results["tests"].get("fusion", [])}
    header = ["\\|Z\\|", "regular models (%)", "best regular (%)", "ensemble (%)", "fused star (%)", "fused star vs one regular model"] + (
        ["paper regular / ens. / star"] if ref else []
    )
    rows = []
    for r in f["rows"]:
        t = tests.get(r["n_sources"])
        word = verdict(t, "worse", "better") if t else NOT_SIGNIFICANT
        regular = {"mean": r["regular_acc_mean"], "std": r["regular_acc_std"], "n": len(r["regular_accs"])}
        if t and "no_verdict" in t:
            word = f"no verdict: {t['no_verdict']}"
        row = [
            r["n_sources"],
            fmt(regular, 100, 2),
            f"{100 * r['best_regular_acc']:.2f}",
            f"{100 * r['ensemble_acc']:.2f}",
            f"{100 * r['star_acc']:.2f}",
            f"{word}"
            + (
                f" (95% prediction interval {interval(clip(t['interval']), 100, 2)})"
                if t and not any(undefined(v) for v in t["interval"])  # null in results.json: no interval
                else ""
            ),
        ]
        if ref:
            row.append(" / ".join(ref[r["n_sources"]]) if r["n_sources"] in ref else "–")
        rows.append(row)
    lines = [
        f"## Model fusion (paper Table 2; star trained with μ = {f['mu']:g})",
        "",
        table(header, rows),
        "",
        "A fused star is one model, so it is tested against where one more regular model would land "
        "(the 95% prediction interval of the regular models' accuracy), not against their mean.",
        "",
    ]
    if results["models"].get("repeats", 1) > 1:
        lines += [f"One fused star per |Z|: star.repeats ({results['models']['repeats']}) applies to the other studies, not to fusion.", ""]
    cost = f["rows"][-1].get("cost", {})
    if cost:
        lines += [
            "Inference cost per input (for the largest |Z|): "
            + "; ".join(f"{name}: {c['forward_passes']} forward pass(es), {c['parameters']:,} parameters held" for name, c in cost.items()),
            "",
        ]
    return lines
