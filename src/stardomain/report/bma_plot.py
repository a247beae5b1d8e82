"""Figure 5: star-domain BMA against the deep ensemble as K grows (misclassification-detection AUROC, NLL,
ECE, accuracy), with reference lines and 95% bootstrap bands over the test images."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from stardomain.analysis.stats import undefined
from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["AUROC_DEFINITION", "bma_figure", "plot_bma"]

# The one definition of the AUROC every BMA output names (figure, report.md, CLI, README).
AUROC_DEFINITION = (
    "AUROC of misclassification detection: how well the confidence score (max probability, or negative predictive "
    "entropy) ranks correct test predictions above wrong ones; 0.5 = chance"
)
PLOT_PANELS: dict[str, str] = {
    "auroc_max_prob": "misclassification AUROC\n(score: max prob) ↑",
    "auroc_neg_entropy": "misclassification AUROC\n(score: neg. entropy) ↑",
    "nll": "NLL ↓",
    "ece": "ECE ↓",
    "accuracy": "accuracy ↑",
}
# metric name -> (y-axis label, scale): accuracy and ECE are fractions stored, percent drawn
PLOT_AXES: dict[str, tuple[str, float]] = {
    "auroc_max_prob": ("AUROC, correct vs wrong (0.5 = chance)", 1.0),
    "auroc_neg_entropy": ("AUROC, correct vs wrong (0.5 = chance)", 1.0),
    "nll": ("negative log-likelihood (nats)", 1.0),
    "ece": ("expected calibration error (%)", 100.0),
    "accuracy": ("test accuracy (%)", 100.0),
}
CURVES = {"star-domain BMA": ("star_domain", "tab:blue", "o", "-"), "deep ensemble": ("ensemble", "tab:orange", "s", "--")}
# (key, color, linestyle: a name or matplotlib's (offset, (on, off)) dash pattern)
REFS: dict[str, tuple[str, str, str | tuple[int, tuple[int, int]]]] = {
    "star model θ⋆ alone": ("star", "tab:green", (0, (5, 2))),
    "one source model": ("single", "tab:gray", ":"),
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


def _band(runs: Sequence[Mapping[str, Any]], key: str, metric: str, length: int) -> tuple[list[float], list[float]] | None:
    """The bootstrap interval of one curve of one run, as (lows, highs); None where there is none to draw.

    Results written before the intervals existed have no ``ci`` and draw no band.
    """
    pairs = runs[0][key].get("ci", {}).get(metric)
    if not pairs or len(pairs) < length:
        return None
    nan = math.nan
    lows = [nan if undefined(p[0]) else float(p[0]) for p in pairs[:length]]
    highs = [nan if undefined(p[1]) else float(p[1]) for p in pairs[:length]]
    return lows, highs


def _draw_panel(ax: Axes, runs: Sequence[Mapping[str, Any]], metric: str, z_stop: int | None) -> None:
    """One metric against K: both curves with their bands, the reference lines and where the ensemble stops."""
    ylabel, scale = PLOT_AXES[metric]
    for label, (key, color, marker, ls) in CURVES.items():
        series = [r[key]["metrics"].get(metric, []) for r in runs]
        if not all(series):
            continue
        mean, std = _mean_std(series)
        ks = list(runs[0][key]["k"])[: len(mean)]
        mfc = color if ls == "-" else "white"
        ax.plot(ks, [scale * m for m in mean], color=color, marker=marker, markersize=3.5, ls=ls, mfc=mfc, label=label)
        if len(runs) > 1:
            band: tuple[list[float], list[float]] | None = ([m - v for m, v in zip(mean, std)], [m + v for m, v in zip(mean, std)])
        else:
            band = _band(runs, key, metric, len(mean))
        if band is not None:
            ax.fill_between(ks, [scale * v for v in band[0]], [scale * v for v in band[1]], color=color, alpha=0.2, linewidth=0)
    for label, (key, color, ref_ls) in REFS.items():
        refs = [r[key] for r in runs if isinstance(r.get(key), Mapping)]
        vals = [float(ref[metric]) for ref in refs if metric in ref and not undefined(ref[metric])]
        if vals:
            ax.axhline(scale * sum(vals) / len(vals), color=color, linestyle=ref_ls, linewidth=1.2, label=label)
    if z_stop is not None:
        ax.axvline(z_stop, color="0.2", linestyle="-.", linewidth=0.9, label=f"K = |Z| = {z_stop}: the ensemble has no more members")
    ax.set_title(PLOT_PANELS[metric])
    ax.set_xlabel("number of models K")
    ax.set_ylabel(ylabel)
    ax.locator_params(axis="x", integer=True)
    ax.grid(alpha=0.3)


def _band_text(runs: Sequence[Mapping[str, Any]]) -> str | None:
    """What the shaded bands are, for the legend; None where no band is drawn."""
    if len(runs) > 1:
        return f"shaded: ± 1 std over {len(runs)} runs"
    boot = runs[0]["star_domain"].get("bootstrap") or runs[0]["ensemble"].get("bootstrap")
    if not boot or not any("ci" in runs[0][key] for key in ("star_domain", "ensemble")):
        return None
    return f"shaded: {100 * boot['level']:g}% bootstrap interval over the {boot['n_test']} test images ({boot['resamples']} resamples)"


def _checked_runs(study_result: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    runs = [study_result] if isinstance(study_result, Mapping) else list(study_result)
    if not runs:
        raise StardomainError("bma: plot_bma needs at least one study result")
    for r in runs:
        if not isinstance(r, Mapping) or "star_domain" not in r or "ensemble" not in r:
            raise StardomainError("bma: plot_bma expects the dict returned by bma_study (keys star_domain, ensemble)")
    return runs


def bma_figure(study_result: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Figure:
    """Figure 5 as a matplotlib ``Figure`` (what :func:`plot_bma` saves; tests read its labels).

    Panels: the misclassification-detection AUROC with each confidence score, NLL, ECE and accuracy
    against K, star-domain BMA vs deep ensemble, with the star model and a single source as dashed
    reference lines. Accuracy and ECE are drawn in percent. The ensemble has at most |Z| members,
    so where the BMA curve goes on past |Z| a dotted line marks where the ensemble stops. One result
    draws its 95% bootstrap intervals over the test images as bands (none for results without
    ``ci``); a list of results (e.g. several seeds) draws mean ± std bands over them instead.
    """
    # a bare Figure draws with Agg and never touches pyplot's global backend or figure list
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    runs = _checked_runs(study_result)
    ens_len = min(len(r["ensemble"]["k"]) for r in runs)
    bma_len = min(len(r["star_domain"]["k"]) for r in runs)
    z_stop = runs[0]["ensemble"]["k"][ens_len - 1] if ens_len and ens_len < bma_len else None
    fig = Figure(figsize=(3.9 * len(PLOT_PANELS), 4.4))
    axes = fig.subplots(1, len(PLOT_PANELS))
    for ax, metric in zip(axes, PLOT_PANELS):
        _draw_panel(ax, runs, metric, z_stop)
    handles, labels = axes[0].get_legend_handles_labels()
    band = _band_text(runs)
    if band:
        handles.append(Patch(facecolor="0.6", alpha=0.4, lw=0))
        labels.append(band)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.04))
    fig.text(0.5, 0.005, AUROC_DEFINITION + ".", ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig


def plot_bma(study_result: Mapping[str, Any] | Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Figure 5 (:func:`bma_figure`), written atomically as PNG plus a vector PDF beside it."""
    from stardomain.report.plots import save_figure

    return save_figure(bma_figure(study_result), path, dpi=150)
