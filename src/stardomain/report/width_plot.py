"""The width-trend figure (paper v2 Fig. 2): barrier vs width per group, beside the authors' own numbers.

Fed from a results dict's ``width_depth`` rows (one row per width). A star group's band is the
spread *over stars* when the row holds repeated stars (``summary[group]["over_stars"]``, see
:func:`stardomain.analysis.stats.over_stars`), else over pairs; the legend says which, with n, because
one star's pairs share that star and their spread understates star-to-star variation.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from stardomain.analysis.published import MNIST_MLP_WIDTH, WIDTH_GROUPS
from stardomain.analysis.stats import as_float
from stardomain.errors import StardomainError
from stardomain.report.plots import COLORS, MARKERS, save_figure

__all__ = ["plot_width_trend", "width_series"]


def _style(i: int) -> tuple[str, str]:
    """The colour and marker plots.py gives group i, so a group looks the same in every figure."""
    return COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]


def _point(summary: Mapping[str, Any], group: str, metric: str) -> tuple[float, float, str, int]:
    """(mean, std, 'stars' | 'pairs', n) of one group at one width."""
    s = summary[group]
    over = s.get("over_stars", {}).get(metric)
    if over is not None and over.get("n_stars", 0) > 1:
        st = over["over_stars"]
        return as_float(st["mean"]), as_float(st["std"]), "stars", int(over["n_stars"])
    st = s["barriers"][metric]
    return as_float(st["mean"]), as_float(st["std"]), "pairs", int(st["n"])  # null (no number) as NaN


def width_series(results: Mapping[str, Any], metric: str = "test_loss") -> tuple[list[float], dict[str, dict[str, Any]]]:
    """(widths ascending, {group: {mean, std, spread, n}}) from ``results["width_depth"]["rows"]``.

    Refuses rows that lack a width or also differ in another option (a depth study is not a
    width trend), and duplicate widths.
    """
    rows = (results.get("width_depth") or {}).get("rows") or []
    if not rows:
        raise StardomainError("results have no width_depth rows; run a config with studies.width_depth settings over width")
    if any("width" not in r.get("options", {}) for r in rows):
        raise StardomainError("a width_depth row has no 'width' option; the width figure needs every setting to set width")
    others = {_other_options(r["options"]) for r in rows}
    if len(others) > 1:
        raise StardomainError("width_depth rows differ in options other than width; plot one depth at a time")
    if len(rows) < 2:
        raise StardomainError("a width trend needs at least two widths; this run has one width_depth setting")
    rows = sorted(rows, key=lambda r: float(r["options"]["width"]))
    widths = [float(r["options"]["width"]) for r in rows]
    if len(set(widths)) != len(widths):
        raise StardomainError("width_depth rows repeat a width; the width figure needs one row per width")
    out: dict[str, dict[str, Any]] = {}
    for g in WIDTH_GROUPS:
        if not all(g in r["summary"] for r in rows):
            continue
        pts = [_point(r["summary"], g, metric) for r in rows]
        out[g] = {"mean": [p[0] for p in pts], "std": [p[1] for p in pts], "spread": sorted({p[2] for p in pts}), "n": [p[3] for p in pts]}
    if not out:
        raise StardomainError(f"width_depth rows hold none of the groups {', '.join(WIDTH_GROUPS)}")
    return widths, out


def _other_options(options: Mapping[str, Any]) -> str:
    """The options of a row without its width, as a comparable string."""
    return repr(sorted((k, v) for k, v in options.items() if k != "width"))


def _label(group: str, s: Mapping[str, Any]) -> str:
    n = sorted(set(s["n"]))
    n_text = str(n[0]) if len(n) == 1 else f"{n[0]}-{n[-1]}"
    return f"{group} (± std over {'/'.join(s['spread'])}, n={n_text})"


def _log2_axis(ax: Axes, widths: list[float], xlabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [f"{w:g}" for w in widths])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.grid(True, alpha=0.3)


def plot_width_trend(
    results: Mapping[str, Any],
    path: str | os.PathLike[str],
    metric: str = "test_loss",
    published: bool = True,
    dataset: str | None = None,
    xlabel: str = "hidden width",
) -> Path:
    """Barrier (``metric``) vs width, log2 x axis, a ±1 std band per group; the authors' MNIST
    numbers in a second panel when ``published`` and ``metric`` is test_loss (theirs: MLP hidden
    widths; pass ``xlabel="width multiplier"`` and ``published=False`` for a CNN width study)."""
    widths, series = width_series(results, metric)
    if any(math.isnan(v) for s in series.values() for v in s["mean"]):
        raise StardomainError(f"a width_depth row has no finite {metric} barrier; check that setting's pairs")
    with_published = published and metric == "test_loss"
    fig = Figure(figsize=(10.5 if with_published else 5.5, 4.2))
    ax = fig.add_subplot(1, 2 if with_published else 1, 1)
    for i, (g, s) in enumerate(series.items()):
        color, marker = _style(i)
        m, sd = np.asarray(s["mean"]), np.asarray(s["std"])
        ax.plot(widths, m, color=color, marker=marker, lw=2, ms=5, label=_label(g, s))
        ax.fill_between(widths, m - sd, m + sd, color=color, alpha=0.15, lw=0)
    name = dataset or (results.get("dataset") or {}).get("name", "our data")
    unit = "pp" if metric.endswith("acc") else "nats"
    ax.set_ylabel(f"{metric.replace('_', ' ')} barrier ({unit})")
    if metric.endswith("acc"):  # stored as fractions, read in percentage points
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:g}")
    ax.set_title(f"ours: {name}")
    _log2_axis(ax, widths, xlabel)
    ax.legend(fontsize="small", framealpha=0.9)
    if with_published:
        pub = fig.add_subplot(1, 2, 2)
        pw = sorted(MNIST_MLP_WIDTH)
        for i, g in enumerate(WIDTH_GROUPS):
            color, marker = _style(i)
            pub.plot(pw, [MNIST_MLP_WIDTH[w][g] for w in pw], color=color, marker=marker, ls="--", lw=2, ms=5, mfc="white", label=g)
        pub.set_ylabel("test loss barrier (nats)")
        pub.set_title("authors, published: MNIST (means only)")
        _log2_axis(pub, [float(w) for w in pw], "hidden width")
        pub.legend(fontsize="small", framealpha=0.9)
    fig.tight_layout()
    return save_figure(fig, path)
