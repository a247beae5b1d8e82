"""The size budget: every size a user can set is compared with one generous limit before any work.

A YAML key, a command-line option or a model option at 10^9 is a typo far more often than a plan: without
a budget it passes validation, a zoo trains for hours, and then a unit dies of MemoryError or loops for
ever. Every front end (``stardomain run``'s YAML, ``train``, ``spec``, the checkpoint loader) estimates its
sizes arithmetically, before anything is built or allocated, and asks :func:`check`; what exceeds a limit
is refused in one line naming the key, the estimate and the limit.

The limits (:data:`LIMITS`) sit far above every shipped config (``tests/experiment/test_budget.py`` checks
the margin). Whoever really means it sets the environment variable
``STARDOMAIN_BUDGET``: ``off`` lifts the budget, a number multiplies every limit (``STARDOMAIN_BUDGET=10``).
The environment reaches the units' workers on this machine, Ray started here and SLURM jobs (sbatch exports
it); a Ray cluster started elsewhere needs it in its own environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from stardomain.errors import StardomainError

__all__ = ["DEPTH_OPTIONS", "ENV", "HINT", "LIMITS", "Limit", "check", "check_depth", "check_threads", "factor", "limit", "threads_limit"]

ENV = "STARDOMAIN_BUDGET"


@dataclass(frozen=True)
class Limit:
    value: int
    what: str  # what the limit counts, for the docs and the messages


# every limit, named once (docs/experiments.md "Budget" lists them)
LIMITS: dict[str, Limit] = {
    "units": Limit(20_000, "units in one experiment's plan (models to train, stars, evaluations)"),
    "epochs": Limit(10_000, "epochs of one training run (a zoo member or a star)"),
    "depth": Limit(1_000, "a model's depth option (layers or blocks: depth, layers)"),
    "parameters": Limit(10**10, "parameters of one model (40 GB of fp32 weights)"),
    "length": Limit(10**6, "iterations of one unit's inner loop (t values of a curve, pairs per star step, BMA samples)"),
    "values": Limit(10**10, "values one unit computes or holds at once (t values x samples, pairs x parameters, ...)"),
}


def factor() -> float | None:
    """The budget's multiplier from ``STARDOMAIN_BUDGET``: 1 when unset, None when ``off``."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return 1.0
    if raw.lower() in ("off", "none", "0", "false", "no"):
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise StardomainError(f"{ENV}={raw!r}: set it to 'off' (no budget) or to a positive factor of every limit, e.g. {ENV}=10")
    return value


def limit(name: str) -> float | None:
    """Limit ``name`` after the override (None: no limit)."""
    f = factor()
    return None if f is None else LIMITS[name].value * f


def threads_limit() -> float | None:
    """CPU threads a unit may compute with: this machine's CPUs (os.cpu_count), times the override."""
    f = factor()
    return None if f is None else (os.cpu_count() or 1) * f


def _fmt(n: float) -> str:
    return f"{n:,.0f}" if n < 1e15 else f"{n:.3g}"


HINT = f"if you really mean it, set {ENV}=off (or a factor of every limit, e.g. {ENV}=10; docs/experiments.md, 'Budget')"


def check(key: str, estimate: float, name: str, what: str) -> None:
    """Refuse ``estimate`` (``what`` it counts, e.g. "t values per curve") over limit ``name``, in one line naming ``key``."""
    cap = limit(name)
    if cap is not None and estimate > cap:
        raise StardomainError(f"{key}: {what} would be {_fmt(estimate)}, over the budget of {_fmt(cap)}; lower it, or {HINT}")


# the model options that count layers or blocks (stardomain's CNNs and MLP: depth; Hugging Face families: layers)
DEPTH_OPTIONS = ("depth", "layers", "num_layers", "n_layer")


def check_depth(options: Mapping[str, object], key: str) -> None:
    """A model's depth options (:data:`DEPTH_OPTIONS`): checked before the model is built, even on the meta device
    (a depth of 10^6 takes minutes to build there, 10^4 seconds)."""
    for name in DEPTH_OPTIONS:
        depth = options.get(name)
        if isinstance(depth, int) and not isinstance(depth, bool):
            check(key, depth, "depth", f"option {name}")


def check_threads(threads: int, key: str) -> None:
    """Torch CPU threads against this machine's CPUs: more threads than cores only slow a unit down (and a
    typo, threads 4096 on 2 cores, creates thousands of threads)."""
    cap = threads_limit()
    if cap is not None and threads > cap:
        raise StardomainError(
            f"{key}: {threads} CPU threads on a machine with {os.cpu_count() or 1} CPUs (os.cpu_count), over the budget; "
            f"lower it, or {HINT}"
        )
