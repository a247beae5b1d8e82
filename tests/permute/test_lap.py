"""Assignment solvers behind weight matching: exactness, the lapjv certificate and fallback."""

from __future__ import annotations

import itertools
import sys
import types

import numpy as np
import pytest
import torch

from stardomain import models
from stardomain.errors import StardomainError
from stardomain.permute import apply_permutation, lap, trace_spec, weight_matching
from stardomain.permute.lap import available_lap_solvers, certified, resolve_lap_solver, solve_assignment

HAVE_LAPJV = "lapjv" in available_lap_solvers()


def _brute_force_best(cost: np.ndarray) -> float:
    n = cost.shape[0]
    return max(cost[np.arange(n), list(p)].sum() for p in itertools.permutations(range(n)))


def _planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A minimisation problem with known optimal assignment and certifying duals."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    cols = rng.permutation(n)
    slack = rng.uniform(0.1, 2.0, (n, n)).astype(np.float32)
    slack[np.arange(n), cols] = 0.0
    return (u[:, None] + v[None, :] + slack).astype(np.float32), cols, u, v


@pytest.mark.parametrize("solver", available_lap_solvers())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_solver_is_exact_on_small_problems(solver, dtype):
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 6):
        for _ in range(5):
            cost = rng.standard_normal((n, n)).astype(dtype)
            cols, used = solve_assignment(cost, solver)
            assert sorted(cols.tolist()) == list(range(n))
            assert cost[np.arange(n), cols].sum() == pytest.approx(_brute_force_best(cost), abs=1e-5)
            assert used == solver


def test_ties_and_constant_matrices_give_a_permutation():
    for solver in available_lap_solvers():
        for cost in (np.zeros((5, 5), np.float32), np.ones((4, 4), np.float32)):
            cols, _ = solve_assignment(cost, solver)
            assert sorted(cols.tolist()) == list(range(len(cost)))


def test_certificate_accepts_optimal_duals_and_rejects_wrong_answers():
    cost, cols, u, v = _planted(8, 1)
    assert certified(cost, cols, u, v)
    swapped = cols.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert not certified(cost, swapped, u, v)  # complementary slackness broken
    assert not certified(cost, cols, u + 0.5, v)  # dual infeasible: negative reduced costs
    assert not certified(cost, cols, u * np.nan, v)


def _fake_lapjv(answer):
    """A stand-in ``lapjv`` module whose solver returns ``answer(cost_min)``."""
    mod = types.ModuleType("lapjv")
    mod.lapjv = answer  # type: ignore[attr-defined]
    return mod


def test_lapjv_answers_are_used_only_when_certified(monkeypatch):
    cost_min, cols, u, v = _planted(6, 2)
    benefit = -cost_min  # solve_assignment maximises

    def honest(c):
        return cols.astype(np.int32), None, (0.0, u, v)

    def wrong(c):  # a valid permutation, but not optimal, with the true duals
        bad = cols.copy()
        bad[[0, 1]] = bad[[1, 0]]
        return bad.astype(np.int32), None, (0.0, u, v)

    def not_a_permutation(c):
        return np.zeros(len(c), np.int32), None, (0.0, u, v)

    monkeypatch.setitem(sys.modules, "lapjv", _fake_lapjv(honest))
    assert "lapjv" in available_lap_solvers()
    got, used = solve_assignment(benefit, "lapjv")
    assert used == "lapjv" and np.array_equal(got, cols)
    for bad in (wrong, not_a_permutation):
        monkeypatch.setitem(sys.modules, "lapjv", _fake_lapjv(bad))
        got, used = solve_assignment(benefit, "lapjv")
        assert used == "scipy" and np.array_equal(got, cols)  # SciPy's exact answer instead


def test_weight_matching_counts_fallbacks_and_still_converges(monkeypatch):
    """A solver whose answers never certify costs time, never correctness."""

    def garbage(c):
        n = len(c)
        return np.arange(n, dtype=np.int32)[::-1].copy(), None, (0.0, np.zeros(n, np.float32), np.zeros(n, np.float32))

    torch.manual_seed(0)
    a = models.create("mlp", 10, (1, 8, 8), depth=2, width=16)
    torch.manual_seed(1)
    b = models.create("mlp", 10, (1, 8, 8), depth=2, width=16)
    spec = trace_spec(a)
    ref = weight_matching(a.state_dict(), b.state_dict(), spec=spec, seed=0, lap_solver="scipy")
    monkeypatch.setitem(sys.modules, "lapjv", _fake_lapjv(garbage))
    res = weight_matching(a.state_dict(), b.state_dict(), spec=spec, seed=0, lap_solver="lapjv")
    assert res.lap_solver == "lapjv" and res.stats["lap_fallbacks"] == res.stats["lap"] > 0
    assert res.objective == pytest.approx(ref.objective, rel=1e-9)
    assert all(torch.equal(res.perm[g], ref.perm[g]) for g in spec.groups)


def test_solver_names_are_checked(monkeypatch):
    with pytest.raises(StardomainError, match="unknown lap_solver"):
        resolve_lap_solver("hungarian")
    monkeypatch.setattr(lap, "available_lap_solvers", lambda: ["scipy"])
    with pytest.raises(StardomainError, match=r"needs the lapjv package: pip install lapjv"):
        resolve_lap_solver("lapjv")
    assert resolve_lap_solver("auto") == "scipy"
    monkeypatch.setattr(lap, "available_lap_solvers", lambda: ["scipy", "lapjv"])
    assert resolve_lap_solver("auto", np.float32) == "lapjv"
    assert resolve_lap_solver("auto", np.float64) == "scipy"  # never round float64 costs to float32
    with pytest.raises(StardomainError, match="square"):
        solve_assignment(np.zeros((2, 3)))
    with pytest.raises(StardomainError, match="NaN"):
        solve_assignment(np.full((2, 2), np.nan))


@pytest.mark.skipif(not HAVE_LAPJV, reason="lapjv is not installed (a core dependency only where a wheel exists)")
def test_lapjv_and_scipy_reach_the_same_weight_matching_optimum():
    for seed in range(3):
        torch.manual_seed(seed)
        a = models.create("mlp", 10, (1, 28, 28), depth=3, width=128)
        torch.manual_seed(seed + 100)
        b = models.create("mlp", 10, (1, 28, 28), depth=3, width=128)
        spec = trace_spec(a)
        sa, sb = a.state_dict(), b.state_dict()
        fast = weight_matching(sa, sb, spec=spec, seed=seed, lap_solver="lapjv")
        slow = weight_matching(sa, sb, spec=spec, seed=seed, lap_solver="scipy")
        assert fast.lap_solver == "lapjv" and slow.lap_solver == "scipy"
        assert fast.stats["lap_fallbacks"] == 0
        assert fast.objective == pytest.approx(slow.objective, rel=1e-6)
        x = torch.randn(4, 1, 28, 28)
        with torch.no_grad():
            before = b(x)
            b.load_state_dict(apply_permutation(sb, fast.perm, spec=spec))
            torch.testing.assert_close(b(x), before, atol=1e-5, rtol=1e-5)  # same function, new unit order
