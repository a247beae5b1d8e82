"""Figures for interpolation curves, summary series and training histories (paper Figs. 2-3 style).

Uses matplotlib's object API with the Agg canvas directly: no pyplot, no backend switch, no
global style changes, so importing this module never alters a caller's matplotlib state.
Accuracies are stored as fractions in [0, 1] and drawn in percent; losses are cross-entropies in
nats. Figures must survive a greyscale printout: groups differ in marker as well as colour, and
splits in line style (test solid with filled markers, train dashed with open markers). Every
figure is written atomically as PNG and, beside it, as a vector PDF for the paper.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from stardomain._util.fileio import save_figure as _save_one
from stardomain.analysis.stats import undefined
from stardomain.barrier import METRICS, Curve, barriers
from stardomain.errors import StardomainError

__all__ = ["BAND_LABEL", "plot_curves", "plot_loss_acc", "plot_series", "plot_training", "save_figure"]

# tab10, fixed order: each group keeps its colour whatever else is drawn
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
SPLIT_STYLE = {"test": {"ls": "-", "filled": True}, "train": {"ls": "--", "filled": False}}
BAND_LABEL = "shaded: ± 1 sample std over pairs"
T_LABEL = "interpolation coefficient t"

_LABELS = {"loss": "loss (nats)", "acc": "accuracy (%)"}


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 150, pdf: bool = True) -> Path:
    """Write ``fig`` to ``path`` atomically and, for a PNG, a vector PDF beside it; returns ``path``."""
    path = Path(path)
    _save_one(fig, path, dpi=dpi)
    if pdf and path.suffix.lower() == ".png":
        _save_one(fig, path.with_suffix(".pdf"), dpi=dpi)
    return path


def _style(i: int) -> tuple[str, str]:
    return COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]


def _stack(curves: Sequence[Curve], metric: str, group: str) -> tuple[np.ndarray, np.ndarray]:
    """(t, values[n_curves, n_t]) of one group; all curves must share their t grid."""
    if metric not in METRICS:
        raise StardomainError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if not curves:
        raise StardomainError(f"group {group!r} has no curves to plot")
    t = np.asarray(curves[0].t, dtype=float)
    rows = []
    for c in curves:
        if len(c.t) != len(t) or not np.allclose(c.t, t):
            raise StardomainError(f"curves in group {group!r} use different t grids; compute them with the same num_points")
        values = c.metric(metric)
        if len(values) != len(t):
            raise StardomainError(f"a curve in group {group!r} has no {metric!r} values; evaluate that split")
        rows.append(values)
    vals = np.asarray(rows, dtype=float)
    if metric.endswith("acc"):
        vals = 100.0 * vals
    return t, vals


def _mean_sample_std(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1) over the first axis; std is 0 for a single row."""
    mean = vals.mean(axis=0)
    std = vals.std(axis=0, ddof=1) if vals.shape[0] > 1 else np.zeros_like(mean)
    return mean, std


def _pm(values: Sequence[float], digits: int) -> str:
    vals = np.asarray([v for v in values if not undefined(v)], dtype=float)
    if vals.size == 0:
        return "n/a"
    if vals.size == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{vals.mean():.{digits}f} ± {vals.std(ddof=1):.{digits}f}"


def _barrier_text(curves: Sequence[Curve], metric: str) -> str:
    """'B = 0.41 ± 0.05' (loss, nats) or 'B = 3.2 ± 0.4 pp' (accuracy) over a group's curves."""
    vals = [barriers(c)[metric] for c in curves]
    if metric.endswith("acc"):
        return f"B = {_pm([100 * v for v in vals], 1)} pp"
    return f"B = {_pm(vals, 3)}"


def _draw_group(ax: Axes, t: np.ndarray, vals: np.ndarray, label: str, color: str, marker: str, split: str) -> None:
    """Mean line and a ±1 sample-std band over the group's curves."""
    mean, std = _mean_sample_std(vals)
    style = SPLIT_STYLE[split]
    ax.plot(
        t, mean, color=color, lw=1.8, ls=style["ls"], marker=marker, ms=4, mfc=color if style["filled"] else "white", mec=color, label=label
    )
    if vals.shape[0] > 1:
        ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.15 if split == "test" else 0.08, lw=0)


def _has(curves: Sequence[Curve], metric: str) -> bool:
    return all(len(c.metric(metric)) == len(c.t) for c in curves)


def _draw_metric(ax: Axes, groups: Mapping[str, Sequence[Curve]], kind: str, splits: Sequence[str]) -> None:
    """One panel: every group's mean curve of ``kind`` (loss/acc) for each split, barrier and n in the legend."""
    banded = False
    for i, (name, curves) in enumerate(groups.items()):
        color, marker = _style(i)
        for split in splits:
            metric = f"{split}_{kind}"
            if split != splits[0] and not _has(curves, metric):
                continue  # an optional split that was not evaluated
            t, vals = _stack(curves, metric, name)
            label = f"{name}, {split} (n={vals.shape[0]}): {_barrier_text(curves, metric)}"
            _draw_group(ax, t, vals, label, color, marker, split)
            banded |= vals.shape[0] > 1
    ax.set_xlabel(T_LABEL)
    ax.set_ylabel(_LABELS[kind])
    ax.set_xlim(0, 1)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if banded:
        handles.append(Patch(facecolor="0.6", alpha=0.4, lw=0))
        labels.append(BAND_LABEL)
    ax.legend(handles, labels, frameon=False, fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)


def _splits(split: str) -> tuple[str, ...]:
    if split not in ("train", "test", "both"):
        raise StardomainError(f"split must be 'train', 'test' or 'both' (got {split!r})")
    return ("test", "train") if split == "both" else (split,)


def plot_curves(
    groups: Mapping[str, Sequence[Curve]], metric: str = "test_loss", path: str | os.PathLike[str] | None = None, title: str | None = None
) -> Path:
    """One panel: each group's mean ``metric`` along t with a ±1 sample-std band; returns ``path``."""
    if path is None:
        raise StardomainError("plot_curves needs path= (where to write the PNG)")
    if not groups:
        raise StardomainError("plot_curves needs at least one group of curves")
    if metric not in METRICS:
        raise StardomainError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    split, kind = metric.split("_")
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    _draw_metric(ax, groups, kind, (split,))
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_loss_acc(
    groups: Mapping[str, Sequence[Curve]], path: str | os.PathLike[str], title: str | None = None, split: str = "both"
) -> Path:
    """Two panels side by side, loss and accuracy along t for every group.

    ``split`` "both" draws test (solid) and, where the curves have it, train (dashed).
    """
    splits = _splits(split)
    if not groups:
        raise StardomainError("plot_loss_acc needs at least one group of curves")
    fig = Figure(figsize=(11, 5.2))
    for i, kind in enumerate(("loss", "acc")):
        ax = fig.add_subplot(1, 2, i + 1)
        _draw_metric(ax, groups, kind, splits)
        ax.set_title("cross-entropy along the path" if kind == "loss" else "accuracy along the path", fontsize="medium")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_series(
    x: Sequence[float] | Sequence[str],
    series: Mapping[str, tuple[Sequence[float], Sequence[float] | None]],
    xlabel: str,
    ylabel: str,
    path: str | os.PathLike[str],
    title: str | None = None,
    logx: bool = False,
    band_label: str | None = BAND_LABEL,
) -> Path:
    """Lines with ±1 std bands against ``x`` (e.g. barrier vs |Z|, metric vs K).

    ``series`` maps a name to (mean, std); std may be None. A series whose mean is constant
    (a reference such as the regular–regular barrier) is drawn dashed without markers. String
    ``x`` values become evenly spaced categorical ticks. ``band_label`` says in the legend what
    the bands are (None: no such entry).
    """
    if not series:
        raise StardomainError("plot_series needs at least one series")
    labels = [str(v) for v in x] if any(isinstance(v, str) for v in x) else None
    xs = np.arange(len(labels), dtype=float) if labels is not None else np.asarray(x, dtype=float)
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    if labels is not None:
        ax.set_xticks(xs, labels, rotation=30 if max(map(len, labels), default=0) > 6 else 0)
    elif xs.size and np.all(xs == np.round(xs)):
        ax.set_xticks(xs)  # integer settings (|Z| = 2, 3, 5): one tick each, no 2.5
    banded = False
    for i, (name, (mean, std)) in enumerate(series.items()):
        m = np.asarray(mean, dtype=float)
        if m.shape != xs.shape:
            raise StardomainError(f"series {name!r} has {m.size} values for {xs.size} x positions")
        color, marker = _style(i)
        flat = m.size > 1 and np.all(m == m[0])
        ax.plot(xs, m, color=color, lw=2, ls="--" if flat else "-", marker=None if flat else marker, ms=5, label=name)
        if std is not None:
            s = np.asarray(std, dtype=float)
            if s.shape != xs.shape:
                raise StardomainError(f"series {name!r} has {s.size} std values for {xs.size} x positions")
            if np.any(s > 0):
                ax.fill_between(xs, m - s, m + s, color=color, alpha=0.15, lw=0, hatch=None if i == 0 else "//")
                banded = True
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if banded and band_label:
        handles.append(Patch(facecolor="0.6", alpha=0.4, lw=0))
        names.append(band_label)
    ax.legend(handles, names, frameon=True, framealpha=0.9, fontsize="small", loc="best")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def _history_series(history: Sequence[Mapping[str, Any]], key: str) -> dict[float, float]:
    return {float(r["epoch"]): float(r[key]) for r in history if r.get(key) is not None and "epoch" in r}


def _group_series(
    runs: Sequence[Sequence[Mapping[str, Any]]], key: str, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(epochs, mean, sample std) of ``key`` over the runs, at the epochs every run recorded; None if none did."""
    series = [_history_series(h, key) for h in runs]
    series = [s for s in series if s]
    if not series:
        return None
    epochs = sorted(set.intersection(*(set(s) for s in series)))
    if not epochs:
        return None
    vals = scale * np.asarray([[s[e] for e in epochs] for s in series], dtype=float)
    mean, std = _mean_sample_std(vals)
    return np.asarray(epochs), mean, std


def plot_training(
    histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Training curves from stored per-epoch histories (checkpoint metadata ``history``).

    ``histories`` maps a group (e.g. "sources Z", "star θ⋆") to one history per model. Left:
    loss per epoch on a log scale (regular models: train and test cross-entropy; a star: the
    interpolated training loss Starlight minimises); right: test accuracy per epoch (a star
    records only its final one, drawn as a single marker). Each group is its mean over models
    with a ± 1 sample-std band.
    """
    if not histories or not any(histories.values()):
        raise StardomainError("plot_training needs at least one model history")
    fig = Figure(figsize=(11, 4.6))
    ax_loss, ax_acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    banded = False
    for i, (name, runs) in enumerate(histories.items()):
        color, marker = _style(i)
        n = len(runs)
        for key, ls, filled, what in (
            ("test_loss", "-", True, "test loss"),
            ("train_loss", "--", False, "train loss"),
            ("interp_train_loss", ":", False, "interpolated train loss"),
        ):
            got = _group_series(runs, key)
            if got is None:
                continue
            ep, mean, std = got
            every = max(1, len(ep) // 15)
            ax_loss.plot(
                ep,
                mean,
                color=color,
                ls=ls,
                lw=1.6,
                marker=marker,
                ms=4,
                markevery=every,
                mfc=color if filled else "white",
                mec=color,
                label=f"{name}: {what} (n={n})",
            )
            if n > 1:
                ax_loss.fill_between(ep, np.maximum(mean - std, 1e-6), mean + std, color=color, alpha=0.12, lw=0)
                banded = True
        for key, line, what in (("test_acc", True, "test accuracy"), ("star_test_acc", False, "final test accuracy")):
            got = _group_series(runs, key, scale=100.0)
            if got is None:
                continue
            ep, mean, std = got
            ax_acc.plot(
                ep,
                mean,
                color=color,
                lw=1.6 if line else 0,
                marker=marker,
                ms=4 if line else 8,
                markevery=max(1, len(ep) // 15),
                label=f"{name}: {what} (n={n})",
            )
            if n > 1 and line:
                ax_acc.fill_between(ep, mean - std, mean + std, color=color, alpha=0.12, lw=0)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss (nats, log scale)")
    ax_loss.set_title("loss per epoch", fontsize="medium")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("test accuracy per epoch", fontsize="medium")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        locator = ax.xaxis.get_major_locator()
        if isinstance(locator, MaxNLocator):  # AutoLocator, a linear axis's default
            locator.set_params(integer=True)
        handles, labels = ax.get_legend_handles_labels()
        if banded:
            handles.append(Patch(facecolor="0.6", alpha=0.4, lw=0))
            labels.append("shaded: ± 1 sample std over models")
        if handles:
            ax.legend(handles, labels, frameon=False, fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.16))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
