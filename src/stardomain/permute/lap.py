"""Linear assignment solvers for weight matching: SciPy always, ``lapjv`` when installed.

Weight matching spends most of an MLP sweep in n x n assignment problems (n = 512 for the
paper's MLPs), so the solver matters. SciPy's ``linear_sum_assignment`` (float64, always
available) is the reference. ``lapjv`` (a compiled
Jonker-Volgenant solver with AVX2, float32) is a core dependency wherever PyPI has a binary
wheel for it (CPython 3.11 on x86-64 Linux/Windows) and is about 3x faster on dense 512 x 512
problems (``benchmarks/bench_weight_matching.py``); elsewhere SciPy answers.

A compiled third-party solver is never trusted blindly: ``lapjv`` returns its dual
variables, and an answer is used only when they certify it (every reduced cost
``c_ij - u_i - v_j`` is >= 0 and those on the assignment are 0, to float32 rounding), which
proves optimality; otherwise the problem is solved again by SciPy. It is used only for
float32 cost matrices, so it never rounds away precision that the caller computed.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from stardomain.errors import StardomainError

__all__ = ["LAP_SOLVERS", "available_lap_solvers", "resolve_lap_solver", "solve_assignment"]

LAP_SOLVERS = ("auto", "scipy", "lapjv")


def _scipy(cost: np.ndarray) -> np.ndarray:
    """Column of each row maximising the total (exact, float64)."""
    _, cols = linear_sum_assignment(cost.astype(np.float64, copy=False), maximize=True)
    return cols


def _lapjv(cost: np.ndarray) -> np.ndarray | None:
    """lapjv's answer when its duals certify it optimal, else None (the caller falls back)."""
    import lapjv

    c = np.ascontiguousarray(-cost, dtype=np.float32)  # lapjv minimises
    n = c.shape[0]
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    cols, _, (_, u, v) = lapjv.lapjv(c)
    cols = np.asarray(cols, dtype=np.int64)
    if cols.shape != (n,) or not np.array_equal(np.sort(cols), np.arange(n)):
        return None
    if not certified(c, cols, np.asarray(u, dtype=np.float32), np.asarray(v, dtype=np.float32)):
        return None
    return cols


def certified(cost_min: np.ndarray, cols: np.ndarray, u: np.ndarray, v: np.ndarray) -> bool:
    """LP duality check that ``cols`` minimises ``cost_min``: duals feasible, slackness tight.

    Tolerance: 64 float32 ulps of the largest cost, far above the rounding of a correct
    solver and far below any gap a wrong assignment would leave unnoticed in practice.
    """
    scale = float(np.abs(cost_min).max()) if cost_min.size else 0.0
    tol = 64.0 * float(np.finfo(np.float32).eps) * max(scale, float(np.finfo(np.float32).tiny))
    reduced = cost_min - u[:, None] - v[None, :]
    if not np.isfinite(reduced).all() or float(reduced.min()) < -tol:
        return False
    return float(np.abs(reduced[np.arange(len(cols)), cols]).max()) <= tol


_SOLVERS: dict[str, Callable[[np.ndarray], np.ndarray | None]] = {"scipy": _scipy, "lapjv": _lapjv}


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_lap_solvers() -> list[str]:
    """Names usable as ``lap_solver`` here ("scipy" always; "lapjv" when it is installed)."""
    return ["scipy"] + (["lapjv"] if _installed("lapjv") else [])


def resolve_lap_solver(name: str, cost_dtype: np.dtype | type = np.float32) -> str:
    """The concrete solver behind ``name``: "auto" is lapjv for float32 costs when installed."""
    if name not in LAP_SOLVERS:
        raise StardomainError(f"unknown lap_solver {name!r}; use one of {', '.join(LAP_SOLVERS)}")
    if name == "lapjv" and "lapjv" not in available_lap_solvers():
        raise StardomainError(
            "lap_solver='lapjv' needs the lapjv package: pip install lapjv "
            "(a C++ compiler is needed where no wheel exists) or use lap_solver='scipy'"
        )
    if name == "auto":
        fast = np.dtype(cost_dtype) == np.float32 and "lapjv" in available_lap_solvers()
        return "lapjv" if fast else "scipy"
    return name


def solve_assignment(cost: np.ndarray, solver: str = "scipy") -> tuple[np.ndarray, str]:
    """(column assigned to each row maximising the total, name of the solver that answered).

    ``solver`` is a concrete name from :func:`resolve_lap_solver`. A non-SciPy answer that
    fails its optimality certificate is replaced by SciPy's, and the name says so.
    """
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise StardomainError(f"assignment needs a square cost matrix, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise StardomainError("matching met NaN/inf values; check both checkpoints for divergence")
    if solver != "scipy":
        cols = _SOLVERS[solver](cost)
        if cols is not None:
            return cols, solver
    return _scipy(cost), "scipy"
