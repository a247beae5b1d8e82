"""Figure 5: star-domain BMA against the deep ensemble as K grows (AUROC, ECE, accuracy), with reference lines."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from stardomain.analysis.stats import undefined
from stardomain.errors import StardomainError

__all__ = ["plot_bma"]

PLOT_PANELS: dict[str, str] = {
    "auroc_max_prob": "AUROC (max prob) ↑",
    "auroc_neg_entropy": "AUROC (neg. entropy) ↑",
    "ece": "ECE ↓",
    "accuracy": "accuracy ↑",
}
# metric name -> (y-axis label, scale): accuracy and ECE are fractions stored, percent drawn
PLOT_AXES: dict[str, tuple[str, float]] = {
    "auroc_max_prob": ("AUROC, max-prob score (ID vs OOD)", 1.0),
    "auroc_neg_entropy": ("AUROC, neg.-entropy score (ID vs OOD)", 1.0),
    "ece": ("expected calibration error (%)", 100.0),
    "accuracy": ("test accuracy (%)", 100.0),
}


# -- helpers --------------------------------------------------------------------------------------


def _mean_std(runs: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """Element-wise mean and sample std (ddof=1, as in every table) over runs (truncated to the shortest), ignoring NaN."""
    length = min(len(r) for r in runs)
    means, stds = [], []
    for i in range(length):
        vals = [float(r[i]) for r in runs if not undefined(r[i])]  # null in results.json: no number
        if not vals:
            means.append(math.nan)
            stds.append(math.nan)
            continue
        m = sum(vals) / len(vals)
        means.append(m)
        stds.append(math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0)
    return means, stds


def plot_bma(study_result: Mapping[str, Any] | Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Figure 5: AUROC (max prob), AUROC (neg. entropy), ECE and accuracy vs K, star-domain BMA vs
    deep ensemble, with the star model and a single source as dashed reference lines.

    Accuracy and ECE are drawn in percent. The ensemble has at most |Z| members, so where the
    BMA curve goes on past |Z| a dotted line marks where the ensemble stops. Accepts one
    :func:`bma_study` result or a list of them (e.g. several seeds; then mean ± std bands).
    Written atomically as PNG plus a vector PDF beside it.
    """
    # a bare Figure draws with Agg and never touches pyplot's global backend or figure list
    from matplotlib.figure import Figure

    from stardomain.report.plots import save_figure

    runs = [study_result] if isinstance(study_result, Mapping) else list(study_result)
    if not runs:
        raise StardomainError("bma: plot_bma needs at least one study result")
    for r in runs:
        if not isinstance(r, Mapping) or "star_domain" not in r or "ensemble" not in r:
            raise StardomainError("bma: plot_bma expects the dict returned by bma_study (keys star_domain, ensemble)")

    curves = {"star-domain BMA": ("star_domain", "tab:blue", "o", "-"), "deep ensemble": ("ensemble", "tab:orange", "s", "--")}
    # (key, color, linestyle: a name or matplotlib's (offset, (on, off)) dash pattern)
    refs: dict[str, tuple[str, str, str | tuple[int, tuple[int, int]]]] = {
        "star model θ⋆ alone": ("star", "tab:green", (0, (5, 2))),
        "one source model": ("single", "tab:gray", ":"),
    }
    ens_len = min(len(r["ensemble"]["k"]) for r in runs)
    bma_len = min(len(r["star_domain"]["k"]) for r in runs)
    z_stop = runs[0]["ensemble"]["k"][ens_len - 1] if ens_len and ens_len < bma_len else None
    fig = Figure(figsize=(4.0 * len(PLOT_PANELS), 3.9))
    axes = fig.subplots(1, len(PLOT_PANELS))
    for ax, (metric, title) in zip(axes, PLOT_PANELS.items()):
        ylabel, scale = PLOT_AXES[metric]
        for label, (key, color, marker, ls) in curves.items():
            series = [r[key]["metrics"].get(metric, []) for r in runs]
            if not all(series):
                continue
            mean, std = _mean_std(series)
            mean = [scale * m for m in mean]
            std = [scale * v for v in std]
            ks = list(runs[0][key]["k"])[: len(mean)]
            ax.plot(ks, mean, color=color, marker=marker, markersize=3.5, ls=ls, mfc=color if ls == "-" else "white", label=label)
            if len(runs) > 1:
                ax.fill_between(
                    ks, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color, alpha=0.2, linewidth=0
                )
        for label, (key, color, ref_ls) in refs.items():
            vals = [
                float(r[key][metric])
                for r in runs
                if isinstance(r.get(key), Mapping) and metric in r[key] and not undefined(r[key][metric])
            ]
            if vals:
                ax.axhline(scale * sum(vals) / len(vals), color=color, linestyle=ref_ls, linewidth=1.2, label=label)
        if z_stop is not None:
            ax.axvline(z_stop, color="0.2", linestyle="-.", linewidth=0.9, label=f"K = |Z| = {z_stop}: the ensemble has no more members")
        ax.set_title(title)
        ax.set_xlabel("number of models K")
        ax.set_ylabel(ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(runs) > 1:
        from matplotlib.patches import Patch

        handles.append(Patch(facecolor="0.6", alpha=0.4, lw=0))
        labels.append(f"shaded: ± 1 std over {len(runs)} runs")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path, dpi=150)
