"""The report's recipe-sensitivity section: a table per grid cell and the barrier-vs-epochs figures (one per metric).

One panel per (optimizer, lr, init, weight decay, width), the training epochs on x, a line per pair group; a point
whose zoo did not reach the convergence threshold is drawn hollow, because its barrier is not the
paper's quantity. Spreads: regular–regular over pairs, star groups over stars where repeated.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from stardomain.analysis.convergence import NOT_CONVERGED
from stardomain.analysis.stats import as_float, verdict
from stardomain.report.formatting import GROUP_LABELS, GROUPS, acc_loss, fmt, interval, num, poor_star, table


def group_spread(row: Mapping[str, Any], group: str, metric: str = "test_loss") -> tuple[dict[str, float] | None, str]:
    """A cell's barrier of one group on ``metric``, with what its spread is over (stars where k >= 2, else pairs)."""
    g = row["summary"].get(group)
    if not g:
        return None, ""
    o = g.get("over_stars", {}).get(metric)
    if o is not None and o.get("n_stars", 1) >= 2:
        return o["over_stars"], f"k={o['n_stars']} stars"
    b = g["barriers"][metric]
    return b, f"n={b['n']} pair" + ("s" if b["n"] != 1 else "")


def _cell_label(cell: Mapping[str, Any]) -> str:
    """A panel's title: every axis but epochs (rows written before the lr/optimizer axes have neither)."""
    width = "" if cell["width"] is None else f", width {cell['width']:g}"
    opt = f"{cell['optimizer']} lr {cell['lr']:g}, " if "lr" in cell else ""
    return f"{opt}init {cell['init']}, wd {cell['weight_decay']:g}{width}"


def _claim_word(t: Mapping[str, Any], ep: Mapping[str, Any]) -> str:
    """star–held-out vs regular–regular on one metric, over stars where repeated."""
    cmp = t.get("star_held_out_vs_regular_over_stars") or t.get("star_held_out_vs_regular")
    if not t["comparable"]:
        return f"not comparable ({poor_star(ep)})"
    return verdict(cmp, "below", "ABOVE") + f" (CI {interval(cmp['ci95'])})" if cmp else "–"


def _near_word(t: Mapping[str, Any]) -> str:
    """star–source ≈ 0 on one metric, over stars where repeated."""
    nz = t.get("star_source_near_zero_over_stars") or t.get("star_source_near_zero")
    if not t["comparable"]:
        return "not comparable"
    return verdict(nz, "near 0", "NOT near 0") if nz else "–"


def _metrics(results: Mapping[str, Any]) -> list[str]:
    """The metrics shown: the verdict's first, then train and test loss (older results: the test loss only)."""
    from stardomain.report.metrics_side import ordered, verdict_metric

    tests = results["tests"]["recipe_study"]
    if not tests or "by_metric" not in tests[0]:
        return ["test_loss"]
    return ordered(tests[0]["by_metric"], verdict_metric(results))


def recipe_rows(results: Mapping[str, Any]) -> list[list[Any]]:
    out = []
    metrics = _metrics(results)
    for r, t in zip(results["recipe_study"]["rows"], results["tests"]["recipe_study"]):
        c, ep = r["cell"], r["endpoints"]
        conv = ep.get("convergence", {})
        by = t.get("by_metric") or {"test_loss": t}
        cells = []
        for m in metrics:
            for g in GROUPS:
                v, over = group_spread(r, g, m)
                cells.append(f"{fmt(v, n=False)} ({over})" if v else "–")
            cells += [_near_word(by[m]), _claim_word(by[m], ep)]
        out.append(
            [
                c["epochs"],
                c["init"],
                c.get("optimizer", "–"),
                f"{c['lr']:g}" if "lr" in c else "–",
                f"{c['weight_decay']:g}",
                "–" if c["width"] is None else f"{c['width']:g}",
                f"{100 * conv['min_train_acc']:.2f} / {num(conv['train_loss']['mean'], digits=4)}" if conv else "–",
                ("yes" if conv.get("converged") else "**no**") if conv else "–",
                acc_loss(ep["sources"]),
                acc_loss(ep.get("stars_over_repeats") or ep["star"]),
                *cells,
            ]
        )
    return out


def recipe_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    from stardomain.report.metrics_side import PAPER_NOTE, metric_label

    rs = results["recipe_study"]
    metrics = _metrics(results)
    verdict_metric = results["tests"].get("metric", "test_loss")
    per_metric = [
        f"{metric_label(m)}: {h}"
        for m in metrics
        for h in (*(GROUP_LABELS[g] for g in GROUPS), "star–source ≈ 0", "star–held-out vs regular–regular")
    ]
    header = [
        "epochs",
        "init",
        "optimizer",
        "lr",
        "weight decay",
        "width",
        "lowest train acc (%) / mean train loss",
        "converged?",
        "sources' test acc (%) / loss",
        "stars' test acc (%) / loss",
        *per_metric,
    ]
    k = results["models"].get("repeats", 1)
    axes = rs["axes"]
    named = ", ".join(f"{a.replace('_', ' ')} {axes[a]}" for a in ("epochs", "init", "optimizer", "lr", "weight_decay") if a in axes)
    lines = [
        "## Recipe sensitivity: when does a star exist?",
        "",
        f"The core barrier study in every cell of the grid ({named}"
        + (f", width {axes['width']}" if axes.get("width", [None]) != [None] else "")
        + f"), each cell with its own {rs['sources']} sources, {rs['held_out']} held-out models and {k} star(s). "
        f"Barriers on {' and '.join(metric_label(m) for m in metrics)} (verdicts: {metric_label(verdict_metric)}, eval.metric; "
        f"{PAPER_NOTE}) Regular–regular: mean ± sample std over pairs; star groups over stars where k ≥ 2. "
        f"A cell whose regular models are below {100 * results['config']['eval']['converged_train_acc']:.1f}% train accuracy "
        f"is marked not converged ({NOT_CONVERGED}).",
        "",
        table(header, recipe_rows(results)),
        "",
    ]
    for m in metrics:
        name = "recipe_sensitivity.png" if m == metrics[0] else f"recipe_sensitivity_{m}.png"
        path = out / name
        plot_recipe(rs["rows"], path, title=f"{results['name']}: {metric_label(m)} barrier vs training epochs", metric=m)
        figures.append(path.name)
        lines += [f"![{metric_label(m)} barrier vs epochs per recipe]({path.name})", ""]
    return lines


def plot_recipe(rows: Sequence[Mapping[str, Any]], path: Path, title: str, metric: str = "test_loss") -> Path:
    """Barrier of ``metric`` vs epochs, a line per group, a panel per (optimizer, lr, init, weight decay, width);
    hollow = not converged."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from stardomain.report.plots import COLORS, MARKERS, save_figure

    panels: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        panels.setdefault(_cell_label(r["cell"]), []).append(r)
    n = len(panels)
    cols = n if n <= 3 else math.ceil(math.sqrt(n))  # 4 panels (2 inits x 2 weight decays) as 2 x 2, no empty slots
    nrows = math.ceil(n / cols)
    fig = Figure(figsize=(4.6 * cols, 4.8 * nrows + 0.6), constrained_layout=True)
    grid = fig.subplots(2 * nrows, cols, squeeze=False, gridspec_kw={"height_ratios": [3, 1.2] * nrows})
    axes = grid[0::2]
    loss_axes = grid[1::2]
    for a in list(axes.flat)[1:]:  # one barrier scale and one train-loss scale for every panel: compare by eye
        a.sharey(axes.flat[0])
    for a in list(loss_axes.flat)[1:]:
        a.sharey(loss_axes.flat[0])
    means = [m["mean"] for r in rows for g in GROUPS if (m := group_spread(r, g, metric)[0]) and math.isfinite(as_float(m["mean"]))]
    log = bool(means) and min(means) > 0
    for ax, lax, (label, prs) in zip(axes.flat, loss_axes.flat, panels.items()):
        prs = sorted(prs, key=lambda r: r["cell"]["epochs"])
        xs = [r["cell"]["epochs"] for r in prs]
        for i, g in enumerate(GROUPS):
            stats = [group_spread(r, g, metric) for r in prs]
            if not all(m for m, _ in stats):
                continue
            ys = [as_float(m["mean"]) for m, _ in stats]  # type: ignore[index]
            sd = [m["std"] if math.isfinite(as_float(m["std"])) else 0.0 for m, _ in stats]  # type: ignore[index]
            color, marker = COLORS[i], MARKERS[i]
            ax.plot(xs, ys, color=color, lw=1.5)
            ax.errorbar(xs, ys, yerr=sd, fmt="none", ecolor=color, capsize=3, lw=1)
            for x, y, r in zip(xs, ys, prs):
                converged = r["endpoints"].get("convergence", {}).get("converged", True)
                ax.plot([x], [y], marker=marker, color=color, ms=7, mfc=color if converged else "white", mew=1.5)
        # the zoo's convergence under each point: mean ± std final train loss of its regular models
        tl = [r["endpoints"].get("convergence", {}).get("train_loss") for r in prs]
        if all(tl):
            lax.errorbar(xs, [t["mean"] for t in tl], yerr=[t["std"] for t in tl], color="black", marker="o", ms=4, capsize=3, lw=1)
            if min(t["mean"] for t in tl) > 0:
                lax.set_yscale("log")
        lax.set_ylabel("train loss\n(regular models)", fontsize=8)
        lax.set_xlabel("training epochs (sources; star: its own budget)")
        ax.set_title(label, fontsize=10)
        ax.set_ylabel(f"{metric.replace('_', ' ')} barrier" + (" (nats)" if metric.endswith("loss") else " (fraction)"))
        if log:
            ax.set_yscale("log")
        for a in (ax, lax):
            if len(set(xs)) > 1:
                if max(xs) / max(min(xs), 1) >= 8:
                    a.set_xscale("log", base=2)
                a.set_xticks(sorted(set(xs)), [str(x) for x in sorted(set(xs))])
            a.grid(alpha=0.3)
    for a in [*list(axes.flat)[n:], *list(loss_axes.flat)[n:]]:
        a.set_visible(False)
    handles = [Line2D([], [], color=COLORS[i], marker=MARKERS[i], label=GROUP_LABELS[g]) for i, g in enumerate(GROUPS)]
    handles.append(Line2D([], [], color="grey", marker="o", mfc="white", ls="none", label="hollow: sources not converged"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9)
    over = {g: sorted({group_spread(r, g, metric)[1] for r in rows} - {""}) for g in GROUPS}
    ns = "; ".join(f"{g.replace('-', '–', 1)}: {' / '.join(v)}" for g, v in over.items() if v)
    fig.suptitle(f"{title}\nbars: ± 1 sample std over ({ns}) per point", fontsize=11)
    return save_figure(fig, path)
