"""The report's recipe-sensitivity section: a table per grid cell and the barrier-vs-epochs figure.

One panel per (init, weight decay, width), the training epochs on x, a line per pair group; a point
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


def group_spread(row: Mapping[str, Any], group: str) -> tuple[dict[str, float] | None, str]:
    """A cell's test-loss barrier of one group, with what its spread is over (stars where k >= 2, else pairs)."""
    g = row["summary"].get(group)
    if not g:
        return None, ""
    o = g.get("over_stars", {}).get("test_loss")
    if o is not None and o.get("n_stars", 1) >= 2:
        return o["over_stars"], f"k={o['n_stars']} stars"
    b = g["barriers"]["test_loss"]
    return b, f"n={b['n']} pair" + ("s" if b["n"] != 1 else "")


def _cell_label(cell: Mapping[str, Any]) -> str:
    width = "" if cell["width"] is None else f", width {cell['width']:g}"
    return f"init {cell['init']}, wd {cell['weight_decay']:g}{width}"


def recipe_rows(results: Mapping[str, Any]) -> list[list[Any]]:
    out = []
    for r, t in zip(results["recipe_study"]["rows"], results["tests"]["recipe_study"]):
        c, ep = r["cell"], r["endpoints"]
        conv = ep.get("convergence", {})
        cmp = t.get("star_held_out_vs_regular_over_stars") or t.get("star_held_out_vs_regular")
        word = verdict(cmp, "below", "ABOVE") + f" (CI {interval(cmp['ci95'])})" if cmp else "–"
        if not t["comparable"]:
            word = f"not comparable ({poor_star(ep)})"
        cells = []
        for g in GROUPS:
            m, over = group_spread(r, g)
            cells.append(f"{fmt(m, n=False)} ({over})" if m else "–")
        out.append(
            [
                c["epochs"],
                c["init"],
                f"{c['weight_decay']:g}",
                "–" if c["width"] is None else f"{c['width']:g}",
                f"{100 * conv['min_train_acc']:.2f} / {num(conv['train_loss']['mean'], digits=4)}" if conv else "–",
                ("yes" if conv.get("converged") else "**no**") if conv else "–",
                acc_loss(ep["sources"]),
                acc_loss(ep.get("stars_over_repeats") or ep["star"]),
                *cells,
                word,
            ]
        )
    return out


def recipe_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    rs = results["recipe_study"]
    header = [
        "epochs",
        "init",
        "weight decay",
        "width",
        "lowest train acc (%) / mean train loss",
        "converged?",
        "sources' test acc (%) / loss",
        "stars' test acc (%) / loss",
        *(GROUP_LABELS[g] for g in GROUPS),
        "star–held-out vs regular–regular",
    ]
    k = results["models"].get("repeats", 1)
    lines = [
        "## Recipe sensitivity: when does a star exist?",
        "",
        f"The core barrier study in every cell of the grid (epochs {rs['axes']['epochs']}, init {rs['axes']['init']}, "
        f"weight decay {rs['axes']['weight_decay']}"
        + (f", width {rs['axes']['width']}" if rs["axes"]["width"] != [None] else "")
        + f"), each cell with its own {rs['sources']} sources, {rs['held_out']} held-out models and {k} star(s). "
        "Test-loss barriers: regular–regular mean ± sample std over pairs; star groups over stars where k ≥ 2. "
        f"A cell whose regular models are below {100 * results['config']['eval']['converged_train_acc']:.1f}% train accuracy "
        f"is marked not converged ({NOT_CONVERGED}).",
        "",
        table(header, recipe_rows(results)),
        "",
    ]
    path = out / "recipe_sensitivity.png"
    plot_recipe(rs["rows"], path, title=f"{results['name']}: test-loss barrier vs training epochs")
    figures.append(path.name)
    return lines + [f"![barrier vs epochs per recipe]({path.name})", ""]


def plot_recipe(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Barrier vs epochs, a line per group, a panel per (init, weight decay, width); hollow = not converged."""
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
    means = [m["mean"] for r in rows for g in GROUPS if (m := group_spread(r, g)[0]) and math.isfinite(as_float(m["mean"]))]
    log = bool(means) and min(means) > 0
    for ax, lax, (label, prs) in zip(axes.flat, loss_axes.flat, panels.items()):
        prs = sorted(prs, key=lambda r: r["cell"]["epochs"])
        xs = [r["cell"]["epochs"] for r in prs]
        for i, g in enumerate(GROUPS):
            stats = [group_spread(r, g) for r in prs]
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
        ax.set_ylabel("test loss barrier (nats)")
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
    over = {g: sorted({group_spread(r, g)[1] for r in rows} - {""}) for g in GROUPS}
    ns = "; ".join(f"{g.replace('-', '–', 1)}: {' / '.join(v)}" for g, v in over.items() if v)
    fig.suptitle(f"{title}\nbars: ± 1 sample std over ({ns}) per point", fontsize=11)
    return save_figure(fig, path)
