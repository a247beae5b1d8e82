"""Weight matching (Git Re-Basin, Ainsworth et al. 2022, Algorithm 1).

Finds per-group permutations ``pi`` maximising ``<theta_A, pi(theta_B)>`` by coordinate
descent: each group in turn gets the best permutation given all others, a linear
assignment problem on an n x n cost matrix. The objective is taken over the spec'd
*parameters*; BatchNorm running statistics (buffers) are permuted along but left out of
the objective by default, because they are not weights and ``running_var`` (~1 for every
unit) only adds a near-constant matrix (``include_buffers=True`` puts them back in).

Speed (the Starlight loop re-aligns every epoch):

* B is kept fully permuted and updated incrementally: a group change re-gathers only the
  tensors that group touches, and the cost is computed in the *current* basis
  (``M = A @ B'^T``; the LAP solution ``s`` then gives ``perm <- perm[s]``).
* Each (tensor, axis) cost term is cached and recomputed only when another group
  touching the same tensor changed since; a group none of whose neighbours moved since
  its last visit is skipped outright (its optimum is unchanged), so late sweeps are cheap.
* Cost terms are float32 matmuls on the tensors' device; only the n x n matrix goes to
  the assignment solver (:mod:`stardomain.permute.lap`: ``lapjv`` when installed, its
  answers certified by their duals, else SciPy). A new assignment is accepted when its float32 gain beats a rigorous rounding
  bound, otherwise on its exact float64 gain over the rows that move; so the objective
  increases strictly and the loop always ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from stardomain.errors import StardomainError
from stardomain.permute.apply import apply_permutation, check_permutation, identity_permutation
from stardomain.permute.lap import resolve_lap_solver
from stardomain.permute.matcher import Matcher
from stardomain.permute.spec import PermutationSpec, states_first

__all__ = ["MatchResult", "matching_objective", "weight_matching"]


@dataclass
class MatchResult:
    """Outcome of a matching: ``apply_permutation(state_b, perm, spec=spec)`` aligns B to A.

    ``objective`` is ``<theta_A, pi(theta_B)>`` for weight matching and the mean matched
    correlation for activation matching; ``history`` holds it after every sweep (the
    first entry is the starting value for weight matching; later entries are running
    float32 estimates, ``objective`` itself is recomputed exactly in float64).
    """

    perm: dict[str, Tensor]
    objective: float
    sweeps: int
    history: list[float] = field(default_factory=list)
    converged: bool = True
    method: str = "weight"
    seconds: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)
    sweep_seconds: list[float] = field(default_factory=list)
    lap_solver: str = "scipy"
    coverage: float | None = None  # share of parameters the spec permutes (set by align)
    function_gap: float | None = None  # max |logit difference| aligned B vs B (set by align)
    check: str = "not run"  # align's function check: "passed" or why it was skipped
    refine: dict[str, Any] | None = None  # learned matching's record (permute.learned), None when not refined
    symmetry: dict[str, Any] | None = None  # maps beyond permutations (permute.symmetry), set by align(symmetry=)


def _cost_keys(spec: PermutationSpec, include_buffers: bool) -> list[str]:
    return [k for k in spec.keys() if include_buffers or k not in spec.buffers]


@states_first("matching_objective(state_a, state_b, spec=spec)")
def matching_objective(
    state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor], *, spec: PermutationSpec, include_buffers: bool = False
) -> float:
    """``<theta_A, theta_B>`` in float64 over the spec'd tensors (parameters only by default).

    This is the quantity weight matching maximises; call it on an aligned B to compare
    matchers on equal terms.
    """
    total = 0.0
    for k in _cost_keys(spec, include_buffers):
        a, b = state_a[k], state_b[k]
        total += float(torch.dot(a.reshape(-1).double(), b.reshape(-1).double().to(a.device)))
    return total


def _checked_keys(state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor], spec: PermutationSpec, include_buffers: bool) -> list[str]:
    """The objective's keys, after checking both states against the spec and each other."""
    keys = _cost_keys(spec, include_buffers)
    for k in keys:
        if state_a[k].shape != state_b[k].shape:
            raise StardomainError(f"{k!r} has shape {tuple(state_a[k].shape)} in state_a but {tuple(state_b[k].shape)} in state_b")
    return keys


@states_first("weight_matching(state_a, state_b, spec=spec, ...)")
@torch.no_grad()
def weight_matching(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    spec: PermutationSpec,
    seed: int = 0,
    max_iter: int = 100,
    init: Mapping[str, Tensor] | None = None,
    include_buffers: bool = False,
    dtype: torch.dtype = torch.float32,
    first_sweep: str = "forward",
    lap_solver: str = "auto",
) -> MatchResult:
    """Permute B's units to maximise ``<theta_A, pi(theta_B)>`` (Git Re-Basin weight matching).

    Coordinate descent over groups in a ``seed``-ed random order per sweep, at most
    ``max_iter`` sweeps (the first one counts), stopping after a sweep that improves
    nothing. Without ``init`` the first sweep is, by default (``first_sweep="forward"``),
    a greedy input-to-output pass matching each group on its already-aligned terms; on
    random and trained nets it ends in higher objectives and fewer sweeps than plain
    Alg. 1 from the identity (``first_sweep="random"``). ``init`` (e.g. the previous
    epoch's ``result.perm``) warm-starts from that permutation of B instead. ``dtype``
    is the accumulation type of the cost matrices. ``lap_solver``: "auto" (lapjv for
    float32 costs when installed, else SciPy), "scipy" or "lapjv"; all are exact, so they
    differ only in speed and, on exact ties, in which optimum they pick. Runs on
    ``state_a``'s device; the returned permutations are CPU LongTensors.
    """
    t0 = time.perf_counter()
    solver = resolve_lap_solver(lap_solver, np.float32 if dtype == torch.float32 else np.float64)
    spec.validate(state_a, "state_a", require_buffers=include_buffers)
    spec.validate(state_b, "state_b", require_buffers=include_buffers)
    perm = check_permutation(spec, init) if init is not None else identity_permutation(spec)
    perm = {g: p.cpu().clone() for g, p in perm.items()}
    for name, slots in spec.heads.items():  # whole heads are one more coordinate (an init without them: in place)
        perm.setdefault(name, torch.arange(len(slots)))
    keys = _checked_keys(state_a, state_b, spec, include_buffers)
    device = state_a[keys[0]].device if keys else torch.device("cpu")
    b_start = apply_permutation({k: state_b[k] for k in keys}, perm, spec=spec) if init is not None else state_b
    a_t = {k: state_a[k].to(device, dtype) for k in keys}
    bp = {k: b_start[k].to(device, dtype) for k in keys}
    matcher = Matcher(spec, keys, a_t, bp, perm, solver=solver, device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(int(seed))
    if first_sweep not in ("forward", "random"):
        raise StardomainError(f"first_sweep must be 'forward' or 'random', got {first_sweep!r}")
    history, sweeps, converged, sweep_seconds = matcher.run(gen, forward=init is None and first_sweep == "forward", max_iter=max_iter)
    if all(state_a[k].dtype == dtype and state_b[k].dtype == dtype for k in keys):
        objective = matcher.exact_objective()  # a_t and bp hold the exact values of A and pi(B): no need to permute B again
    else:
        b_final = apply_permutation({k: state_b[k] for k in keys}, perm, spec=spec)
        objective = matching_objective(state_a, b_final, spec=spec, include_buffers=include_buffers)
    return MatchResult(
        perm=perm,
        objective=objective,
        sweeps=sweeps,
        history=history,
        converged=converged,
        method="weight",
        seconds=time.perf_counter() - t0,
        stats={k: float(v) for k, v in matcher.counters.items()},
        sweep_seconds=sweep_seconds,
        lap_solver=solver,
    )
