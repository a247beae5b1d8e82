"""Figures for interpolation curves and summary series (paper Figs. 2-3 style).

Uses matplotlib's object API with the Agg canvas directly: no pyplot, no backend switch, no
global style changes, so importing this module never alters a caller's matplotlib state.
Accuracies are stored as fractions in [0, 1] and drawn in percent. Every file is written to
a temporary name beside the target and renamed, so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stardomain.barrier import METRICS, Curve
from stardomain.errors import StardomainError

__all__ = ["plot_curves", "plot_loss_acc", "plot_series", "save_figure"]

# tab10, fixed order: each group keeps its colour whatever else is drawn
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

_UMASK = os.umask(0)  # read once (os.umask can only be read by setting it)
os.umask(_UMASK)

_LABELS = {"train_loss": "train loss", "test_loss": "test loss",
           "train_acc": "train accuracy (%)", "test_acc": "test accuracy (%)"}


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    """Render ``fig`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fmt = path.suffix.lstrip(".").lower() or "png"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def _draw_group(ax: Axes, t: np.ndarray, vals: np.ndarray, label: str, color: str) -> None:
    """Mean line, ±1 std band (population std over the group's curves)."""
    mean = vals.mean(axis=0)
    std = vals.std(axis=0)
    n = vals.shape[0]
    ax.plot(t, mean, color=color, lw=2, marker="o", ms=3, label=f"{label} (n={n})")
    if n > 1:
        ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def _draw_metric(ax: Axes, groups: Mapping[str, Sequence[Curve]], metric: str) -> None:
    for i, (name, curves) in enumerate(groups.items()):
        t, vals = _stack(curves, metric, name)
        _draw_group(ax, t, vals, name, COLORS[i % len(COLORS)])
    ax.set_xlabel("interpolation coefficient t")
    ax.set_ylabel(_LABELS[metric])
    ax.set_xlim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize="small")


def plot_curves(groups: Mapping[str, Sequence[Curve]], metric: str = "test_loss",
                path: str | os.PathLike[str] | None = None, title: str | None = None) -> Path:
    """One panel: each group's mean ``metric`` along t with a ±1 std band; returns ``path``."""
    if path is None:
        raise StardomainError("plot_curves needs path= (where to write the PNG)")
    if not groups:
        raise StardomainError("plot_curves needs at least one group of curves")
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot(1, 1, 1)
    _draw_metric(ax, groups, metric)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_loss_acc(groups: Mapping[str, Sequence[Curve]], path: str | os.PathLike[str],
                  title: str | None = None, split: str = "test") -> Path:
    """Two panels side by side: ``split`` loss and accuracy along t for every group."""
    if split not in ("train", "test"):
        raise StardomainError(f"split must be 'train' or 'test' (got {split!r})")
    if not groups:
        raise StardomainError("plot_loss_acc needs at least one group of curves")
    fig = Figure(figsize=(11, 4))
    for i, kind in enumerate(("loss", "acc")):
        _draw_metric(fig.add_subplot(1, 2, i + 1), groups, f"{split}_{kind}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_series(x: Sequence[float] | Sequence[str], series: Mapping[str, tuple[Sequence[float], Sequence[float] | None]],
                xlabel: str, ylabel: str, path: str | os.PathLike[str], title: str | None = None,
                logx: bool = False) -> Path:
    """Lines with ±1 std bands against ``x`` (e.g. barrier vs |Z|, metric vs K).

    ``series`` maps a name to (mean, std); std may be None. A series whose mean is constant
    (a reference such as the regular–regular barrier) is drawn dashed. String ``x`` values
    become evenly spaced categorical ticks.
    """
    if not series:
        raise StardomainError("plot_series needs at least one series")
    labels = [str(v) for v in x] if any(isinstance(v, str) for v in x) else None
    xs = np.arange(len(labels), dtype=float) if labels is not None else np.asarray(x, dtype=float)
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot(1, 1, 1)
    if labels is not None:
        ax.set_xticks(xs, labels, rotation=30 if max(map(len, labels), default=0) > 6 else 0)
    for i, (name, (mean, std)) in enumerate(series.items()):
        m = np.asarray(mean, dtype=float)
        if m.shape != xs.shape:
            raise StardomainError(f"series {name!r} has {m.size} values for {xs.size} x positions")
        color = COLORS[i % len(COLORS)]
        flat = m.size > 1 and np.all(m == m[0])
        ax.plot(xs, m, color=color, lw=2, ls="--" if flat else "-", marker=None if flat else "o", ms=4, label=name)
        if std is not None:
            s = np.asarray(std, dtype=float)
            if s.shape != xs.shape:
                raise StardomainError(f"series {name!r} has {s.size} std values for {xs.size} x positions")
            ax.fill_between(xs, m - s, m + s, color=color, alpha=0.2, lw=0)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
