"""results.json -> report.md + PNG figures, tables ready to paste into a paper.

Every claim of the paper gets a table, a verdict computed from our numbers (never hard-coded)
and — where our setting matches one of the paper's — the paper's figure beside ours. Every cell
is ``mean ± sample std (n=…)``. A verdict ("below", "near 0", "better") is printed only where the
test stored in ``results["tests"]`` (see :mod:`stardomain.analysis.verdicts`) supports it; otherwise the
report says the difference is not significant at this n. A barrier is always shown beside its
endpoints' accuracy and loss, and a star far below its sources is flagged as not comparable.
The report reads only ``results`` (never run order or timings), so equal results.json give
byte-identical report.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from stardomain.analysis.convergence import NOT_CONVERGED, describe, flag_suffix
from stardomain.checkpoints import store
from stardomain.report.formatting import (
    GROUP_LABELS,
    GROUPS,
    compare_text,
    fmt,
    near_zero_text,
    num,
    poor_star,
    star_claim_lines,
    table,
)

# Paper v1, Table 1 (CIFAR-10, ResNet-18): ℓ2 distances without / with the winning permutation.

PAPER_DISTANCES = {
    ("cifar10", "resnet18"): {
        "regular-regular": ("30.7 ± 0.19", "28.2 ± 0.37"),
        "star-held-out": ("29.7 ± 0.18", "26.8 ± 0.45"),
        "star-source": ("29.8 ± 0.08", "26.8 ± 0.07"),
    },
}
# Paper v1, Table 2 (ResNet-18): test accuracy (%) of regular models, the ensemble and the fused star model.
PAPER_FUSION = {
    ("cifar10", "resnet18"): {
        2: ("95.2 ± 0.03", "95.8", "95.3 ± 0.16"),
        5: ("95.1 ± 0.14", "96.0", "95.2 ± 0.15"),
        50: ("95.1 ± 0.16", "96.3", "95.3 ± 0.20"),
    },
    ("cifar100", "resnet18"): {
        2: ("77.3 ± 0.16", "79.6", "78.0 ± 0.24"),
        5: ("77.4 ± 0.21", "80.4", "78.1 ± 0.02"),
        50: ("77.3 ± 0.28", "81.3", "78.4 ± 0.10"),
    },
}


def paper_key(results: Mapping[str, Any]) -> tuple[str, str]:
    return results["dataset"]["name"], results["config"]["model"]["name"]


# -- shared pieces: endpoints, flags and the wording of each test ---------------------------------
def flag_reason(ep: Mapping[str, Any]) -> str:
    return (
        f"{poor_star(ep)}, beyond the margin of {100 * ep['margin']:.2f} pp, so its barriers are small partly because its endpoint is poor"
    )


def flag_text(ep: Mapping[str, Any] | None) -> str:
    """'' for a comparable star, else why its barriers cannot be read against regular–regular ones."""
    if not ep or not ep.get("star_below_sources"):
        return ""
    return f"not comparable: {flag_reason(ep)}"


def endpoints_table(ep: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            "star θ⋆" + (" (repeat 0)" if "stars_over_repeats" in ep else ""),
            1,
            num(ep["star"]["test_acc"], 100, 2),
            num(ep["star"]["test_loss"]),
        ],
        [
            "sources Z",
            ep["sources"]["test_acc"]["n"],
            fmt(ep["sources"]["test_acc"], 100, 2, n=False),
            fmt(ep["sources"]["test_loss"], n=False),
        ],
    ]
    if "stars_over_repeats" in ep:
        sr = ep["stars_over_repeats"]
        rows.append(["every repeat of θ⋆", sr["test_acc"]["n"], fmt(sr["test_acc"], 100, 2, n=False), fmt(sr["test_loss"], n=False)])
    if ep.get("held_out"):
        rows.append(
            [
                "held-out H",
                ep["held_out"]["test_acc"]["n"],
                fmt(ep["held_out"]["test_acc"], 100, 2, n=False),
                fmt(ep["held_out"]["test_loss"], n=False),
            ]
        )
    return [
        "Endpoints of these barriers (test split):",
        "",
        table(["model", "n", "test acc (%)", "test loss"], rows),
        "",
    ] + convergence_lines(ep)


def convergence_lines(ep: Mapping[str, Any]) -> list[str]:
    """The regular models' final train accuracy and loss against the threshold (nothing for older results)."""
    conv = ep.get("convergence")
    if not conv:
        return []
    state = "converged" if conv["converged"] else f"**NOT converged** — {NOT_CONVERGED}"
    return [
        f"Convergence of the {conv['n']} regular models on their training data: train accuracy "
        f"{fmt(conv['train_acc'], 100, 2, n=False)} % (lowest {100 * conv['min_train_acc']:.2f} %), train loss "
        f"{fmt(conv['train_loss'], digits=4, n=False)}; threshold {100 * conv['threshold']:.1f} %"
        + (f" and train loss ≤ {conv['loss_threshold']:g}" if "loss_threshold" in conv else "")
        + f": {state}.",
        "",
    ]


def setting_verdicts(tests: Mapping[str, Any], ep: Mapping[str, Any] | None) -> list[str]:
    """The three barrier verdicts of one star (main, width/depth row, optimizer study)."""
    flag = "" if tests["comparable"] else flag_text(ep)
    lines = []
    if "regular_regular_vs_zero" in tests:
        lines.append(
            "- "
            + near_zero_text(
                tests["regular_regular_vs_zero"],
                "regular–regular barrier",
                "near 0 (the setting is already linearly connected after matching)",
                "above the tolerance (regular solutions are not linearly connected)",
            )
        )
    return with_convergence(lines + star_claim_lines(tests, flag), ep)


def with_convergence(lines: list[str], ep: Mapping[str, Any] | None) -> list[str]:
    """Verdict lines, each carrying the not-converged flag of its zoo where it has one."""
    suffix = flag_suffix((ep or {}).get("convergence"))
    return [line + suffix if line.strip() else line for line in lines]


# -- sections -------------------------------------------------------------------------------------
def _pairs_lines(record: Mapping[str, Any]) -> list[str]:
    out = ["Pairs evaluated:", ""]
    for g in GROUPS:
        if g in record:
            r = record[g]
            names = ", ".join(f"{a}–{b}" for a, b in r["pairs"])
            out.append(f"- {GROUP_LABELS[g]}: {r['n_pairs']} of {r['possible']} ({r['rule']}): {names}")
    return out + [""]


def barrier_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    from stardomain.barrier import Curve
    from stardomain.report.metrics_side import metric_label, side_by_side_lines
    from stardomain.report.plots import plot_loss_acc
    from stardomain.report.stars import SPREAD_NOTE, over_star_verdicts, over_stars_cell

    summary = results["barriers"]["summary"]
    rows = []
    for g in GROUPS:
        if g in summary:
            b = summary[g]["barriers"]
            rows.append(
                [
                    GROUP_LABELS[g],
                    summary[g]["n_pairs"],
                    over_stars_cell(summary[g], "train_loss"),
                    fmt(b["train_loss"], n=False),
                    over_stars_cell(summary[g]),
                    fmt(b["test_loss"], n=False),
                    fmt(b["train_acc"], 100, 2, n=False),
                    fmt(b["test_acc"], 100, 2, n=False),
                ]
            )
    bn = (
        "BatchNorm statistics are re-estimated on training data at every t."
        if results["models"]["has_batchnorm"]
        else "The model has no BatchNorm, so no statistics are re-estimated along the path."
    )
    lines = [
        "## Loss barriers (paper Fig. 2, v2 Table 1)",
        "",
        "Barrier = max over t of the metric along the linear path minus its linear interpolation between the end points "
        f"(Eq. 1–2); accuracy barriers are the largest drop, in percentage points. Pairs are aligned by "
        f"{results['config']['eval']['align']} matching. {bn} Cells: mean ± sample std over the pairs, except the "
        "over-stars column.",
        "",
        table(
            [
                "pair type",
                "pairs",
                "train loss barrier over stars",
                "train loss barrier over pairs",
                "test loss barrier over stars",
                "test loss barrier over pairs",
                "train acc barrier (pp)",
                "test acc barrier (pp)",
            ],
            rows,
        ),
        "",
        SPREAD_NOTE,
        "",
    ]
    lines += endpoints_table(results["endpoints"])
    lines += _pairs_lines(results["barriers"]["pairs"])
    t = results["tests"]["barriers"]
    metric = t.get("metric", "test_loss")  # results from before eval.metric were judged on the test loss
    lines += [
        f"Verdicts ({metric_label(metric)} barrier, eval.metric; pairs that share a model are not independent, so the tests are approximate):",
        "",
    ]
    lines += setting_verdicts(t, results["endpoints"])
    lines += with_convergence(over_star_verdicts(t, "" if t["comparable"] else flag_text(results["endpoints"])), results["endpoints"]) + [
        ""
    ]
    if "barriers_by_metric" in results["tests"]:
        lines += side_by_side_lines(results["tests"]["barriers_by_metric"], metric)
    groups = {
        GROUP_LABELS[g]: [Curve.from_dict(p["curve"]) for p in results["barriers"]["groups"][g]]
        for g in GROUPS
        if results["barriers"]["groups"].get(g)
    }
    path = out / "barrier_curves.png"
    plot_loss_acc(groups, path, title=f"{results['name']}: interpolation curves (test solid, train dashed)")
    figures.append(path.name)
    return lines + [f"![interpolation curves]({path.name})", ""]


def distances_section(results: Mapping[str, Any]) -> list[str]:
    d = results["distances"]
    ref = PAPER_DISTANCES.get(paper_key(results))
    repeated = any("over_stars" in d[g] for g in GROUPS if g in d)
    header = (
        ["pair type", "pairs", "ℓ2 w/o perm", "ℓ2 w/ perm"]
        + (["ℓ2 w/ perm over stars"] if repeated else [])
        + (["paper w/o", "paper w/"] if ref else [])
    )
    rows = []
    for g in GROUPS:
        if g in d:
            row = [GROUP_LABELS[g], d[g]["n_pairs"], fmt(d[g]["l2"], digits=2, n=False), fmt(d[g]["l2_aligned"], digits=2, n=False)]
            if repeated:
                o = d[g].get("over_stars", {}).get("l2_aligned")
                row.append(fmt(o["over_stars"], digits=2, n=False) + f" ({o['n_stars']} stars)" if o else "—")
            if ref:
                row += list(ref.get(g, ("–", "–")))
            rows.append(row)
    note = (
        "Cells: mean ± sample std over the pairs; the over-stars column: over the per-star means (n = stars)."
        if repeated
        else "Cells: mean ± sample std over the pairs."
    )
    lines = ["## ℓ2 distances (paper Table 1)", "", table(header, rows), "", note, ""]
    t = results["tests"].get("distances")
    if t:
        lines += [
            "- "
            + compare_text(
                t["star_held_out_vs_regular"],
                "star–held-out minus regular–regular ℓ2 after permutation",
                "star models are closer to held-out solutions than regular solutions are to each other",
                "star models are FARTHER from held-out solutions than regular solutions are from each other",
                digits=2,
            )
        ]
        if "star_held_out_vs_regular_over_stars" in t:
            lines.append(
                "  - "
                + compare_text(
                    t["star_held_out_vs_regular_over_stars"],
                    f"over {t['n_stars']} stars (n = per-star mean distances): the same difference",
                    "star models are closer",
                    "star models are FARTHER",
                    digits=2,
                )
            )
        lines.append("")
    return lines


def header_lines(results: Mapping[str, Any]) -> list[str]:
    cfg, m, rec = results["config"], results["models"], results["recipe"]
    opts = cfg["model"]["options"]
    options = " (" + ", ".join(f"{k}={v}" for k, v in sorted(opts.items())) + ")" if opts else ""
    star_rec = m["star_recipe"]
    ep = results["endpoints"]
    lines = [
        f"# stardomain report: {results['name']}",
        "",
        f"Dataset **{results['dataset']['name']}** ({results['dataset']['train']} train / {results['dataset']['test']} test), "
        f"model **{cfg['model']['name']}**{options}, |Z| = {cfg['sources']} sources "
        f"({', '.join(m['sources'])}), |H| = {cfg['held_out']} held-out ({', '.join(m['held_out'])}); "
        f"recipe {rec['optimizer']} lr {rec['lr']:g} × {rec['epochs']} epochs; "
        + (
            f"{m['repeats']} stars (seeds {', '.join(str(x['seed']) for x in m['stars'])}; repeat 0 is the one shown where a "
            "single star is named)"
            if m.get("repeats", 1) > 1
            else f"star (seed {m['star_seed']})"
        )
        + f": {star_rec['optimizer']} lr {star_rec['lr']:g} × {star_rec['epochs']} epochs, "
        f"μ = {cfg['star']['mu']}, t ~ {cfg['star']['t_sampling']}, matching {cfg['star']['matching']}.",
        "",
        f"Test accuracy (%): sources {fmt(m['regular_test_acc'], 100, 2)}; star model {100 * m['star_metrics']['test_acc']:.2f}.",
        "",
    ]
    if ep["star_below_sources"]:
        lines += [f"**Warning — the star's barriers are not comparable:** {flag_reason(ep)}.", ""]
    conv = ep.get("convergence")
    if conv and not conv["converged"]:
        lines += [
            f"**Warning — {NOT_CONVERGED}:** {describe(conv)}; the paper's models reach ~100 % "
            "(eval.converged_train_acc sets the threshold).",
            "",
        ]
    return lines


def training_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    """Training curves of every model from the per-epoch histories results.json carries (none: no section)."""
    from stardomain.report.plots import plot_training

    m = results["models"]
    hist = m.get("histories") or {}
    # every repeated star, not only repeat 0 (results without `stars` name just the one)
    stars = [Path(s["path"]).stem for s in m.get("stars", [])] or [Path(m.get("star", "")).stem]
    groups = {
        "sources Z": [hist[s] for s in m.get("sources", []) if hist.get(s)],
        "held-out H": [hist[s] for s in m.get("held_out", []) if hist.get(s)],
        "star θ⋆": [hist[s] for s in stars if hist.get(s)],
    }
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return []
    path = out / "training_curves.png"
    plot_training(groups, path, title=f"{results['name']}: training curves")
    figures.append(path.name)
    return [
        "## Training curves",
        "",
        "Per-epoch loss and test accuracy of every model, from the history stored in its checkpoint. The star's loss is "
        "the interpolated training loss Starlight minimises; its test accuracy is measured once, at the end.",
        "",
        f"![training curves]({path.name})",
        "",
    ]


def write_report(results: Mapping[str, Any], out: Path) -> Path:
    """Write report.md and figures into ``out``; returns the report path."""
    figures: list[str] = []
    lines = header_lines(results)
    from stardomain.experiment.study import registered_studies

    for study in registered_studies():  # each study writes its own section, in the order they ran (the main one first)
        if study.merge or study.key in results:
            lines += study.report(results, out, figures)
    lines += training_section(results, out, figures)
    lines += [
        "---",
        f"Machine-readable numbers: `results.json` (schema {results['schema_version']}; statistical tests under "
        f"`tests`, {results['tests']['level']:.0%} level). Figures: " + ", ".join(figures) + ".",
    ]
    path = out / "report.md"
    store.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
