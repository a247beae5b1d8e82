"""Weight matching speed and quality: stardomain vs rebasin (the package the paper used).

Two random-init models per seed (ResNet-18 CIFAR, MLP 784-512-512-512-10) are aligned by
both implementations in the same process. Both objectives are computed by the same
function (``stardomain.permute.matching_objective``: <theta_A, pi(theta_B)> over the
spec'd parameters) on the aligned states, so they are comparable. Also times the matmul
floor: one full sweep needs sum over cost terms of 2 n^2 L FLOPs (~11 GFLOP on ResNet-18).

Ours runs once per available assignment solver (SciPy always; ``lapjv``, a core dependency on
CPython 3.11 x86-64), so the effect of the LAP solver is measured in the same run. Every implementation
gets one untimed warm-up call first (first-call costs: lazy imports, allocator, thread pool).

    pip install -e ".[bench]" torchview graphviz   # rebasin (the baseline) is the bench extra
    python benchmarks/bench_weight_matching.py [--seeds 0 1 2] [--quick] [--no-rebasin] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from typing import Any

import torch

from stardomain import models
from stardomain.permute import apply_permutation, matching_objective, trace_spec, weight_matching
from stardomain.permute.lap import available_lap_solvers
from stardomain.permute.matcher import _unit_rows

CASES = {
    "resnet18": ("resnet18", {}, (3, 32, 32)),
    "mlp512": ("mlp", {"depth": 3, "width": 512}, (1, 28, 28)),
}


def _pair(name: str, opts: dict, shape: tuple, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(1000 * seed)
    a = models.create(name, 10, shape, **opts).eval()
    torch.manual_seed(1000 * seed + 1)
    b = models.create(name, 10, shape, **opts).eval()
    return a, b


def run_ours(a: torch.nn.Module, b: torch.nn.Module, seed: int, solver: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    spec = trace_spec(a)
    t1 = time.perf_counter()
    sa, sb = a.state_dict(), b.state_dict()
    res = weight_matching(sa, sb, spec=spec, seed=seed, lap_solver=solver)
    t2 = time.perf_counter()
    aligned = apply_permutation(sb, res.perm, spec=spec)
    t3 = time.perf_counter()
    return {
        "call_s": t3 - t0,
        "trace_s": t1 - t0,
        "match_s": t2 - t1,
        "sweeps": res.sweeps,
        "sweep_s": (t2 - t1) / max(1, res.sweeps),
        "objective": matching_objective(sa, aligned, spec=spec),
        "start": res.history[0],
        "spec": spec,
        "fallbacks": int(res.stats.get("lap_fallbacks", 0)),
    }


def run_rebasin(a: torch.nn.Module, b: torch.nn.Module, shape: tuple, seed: int, spec: Any) -> dict[str, Any]:
    from rebasin import PermutationCoordinateDescent

    b_copy = copy.deepcopy(b)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)  # rebasin draws its group order from the global RNG
    t0 = time.perf_counter()
    pcd = PermutationCoordinateDescent(a, b_copy, x)
    t1 = time.perf_counter()
    steps = {"n": 0}
    step = pcd._calculate_permutations_step

    def counted(loop: Any) -> bool:
        steps["n"] += 1
        return step(loop)

    pcd._calculate_permutations_step = counted  # type: ignore[method-assign]
    pcd.calculate_permutations(max_iterations=100)
    t2 = time.perf_counter()
    pcd.apply_permutations()
    t3 = time.perf_counter()
    with torch.no_grad():
        fn_diff = float((b(x) - b_copy(x)).abs().max())
    return {
        "call_s": t3 - t0,
        "trace_s": t1 - t0,
        "match_s": t2 - t1,
        "sweeps": steps["n"],
        "sweep_s": (t2 - t1) / max(1, steps["n"]),
        "objective": matching_objective(a.state_dict(), b_copy.state_dict(), spec=spec),
        "fn_diff": fn_diff,
    }


def floor(spec: Any, state: dict[str, torch.Tensor], repeats: int = 3) -> dict[str, float]:
    """FLOPs of one full sweep, and the time of plain matmuls doing that much work."""
    terms = []
    for _g, axes in spec.axes.items():
        for ax in axes:
            if ax.key in spec.buffers:
                continue
            rows = _unit_rows(state[ax.key].float(), ax, ax.axis % state[ax.key].dim()).contiguous()
            terms.append((rows, rows.clone()))
    flops = sum(2.0 * r.shape[0] ** 2 * r.shape[1] for r, _ in terms)
    best_terms = best_one = float("inf")
    k = max(1, int(flops / (2 * 512 * 512)))
    x, y = torch.randn(512, k), torch.randn(k, 512)
    for _ in range(repeats):
        t = time.perf_counter()
        for r, s in terms:
            r @ s.T
        best_terms = min(best_terms, time.perf_counter() - t)
        t = time.perf_counter()
        x @ y
        best_one = min(best_one, time.perf_counter() - t)
    return {"gflop": flops / 1e9, "terms_s": best_terms, "one_gemm_s": best_one}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="one seed")
    parser.add_argument("--no-rebasin", action="store_true", help="time stardomain only")
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument(
        "--lap-solvers",
        nargs="+",
        default=available_lap_solvers(),
        choices=["scipy", "lapjv"],
        help="assignment solvers to time ours with (default: every installed one)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = args.seeds[:1] if args.quick else args.seeds

    have_rebasin = not args.no_rebasin
    if have_rebasin:
        try:
            import rebasin  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - report any import problem and go on
            print(f"rebasin unavailable ({type(exc).__name__}: {exc}); timing stardomain only")
            have_rebasin = False
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at start; seeds {seeds}"
    )

    for key in args.models:
        name, opts, shape = CASES[key]
        print(f"\n=== {key}: {name} {opts} on {shape} ===")
        print(
            f"{'seed':>4} {'impl':12} {'call s':>8} {'trace s':>8} {'match s':>8} {'sweeps':>6} {'s/sweep':>8} "
            f"{'objective':>12} {'start':>10}  note"
        )
        impls = [f"ours/{s}" for s in args.lap_solvers]
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in impls + ["rebasin"]}
        spec = None
        a, b = _pair(name, opts, shape, seeds[0])  # untimed warm-up of every implementation
        for solver in args.lap_solvers:
            run_ours(a, b, seeds[0], solver)
        if have_rebasin:
            try:
                run_rebasin(a, b, shape, seeds[0], trace_spec(a))
            except Exception:  # noqa: BLE001 - reported below, at the timed call
                pass
        for seed in seeds:
            a, b = _pair(name, opts, shape, seed)
            reb = None
            if have_rebasin:
                try:
                    reb = run_rebasin(a, b, shape, seed, trace_spec(a))
                except Exception as exc:  # noqa: BLE001 - a failure of the baseline must not stop the bench
                    print(f"{seed:>4} rebasin  failed: {type(exc).__name__}: {exc}")
                else:
                    rows["rebasin"].append(reb)
                    print(
                        f"{seed:>4} {'rebasin':12} {reb['call_s']:8.3f} {reb['trace_s']:8.3f} {reb['match_s']:8.3f} "
                        f"{reb['sweeps']:6d} {reb['sweep_s']:8.3f} {reb['objective']:12.4f} {'':>10}  "
                        f"max|f(B)-f(pi B)|={reb['fn_diff']:.1e}"
                    )
            for impl, solver in zip(impls, args.lap_solvers):
                ours = run_ours(a, b, seed, solver)
                spec = ours["spec"]
                rows[impl].append(ours)
                note = f"{ours['fallbacks']} LAP fallbacks to scipy" if ours["fallbacks"] else ""
                print(
                    f"{seed:>4} {impl:12} {ours['call_s']:8.3f} {ours['trace_s']:8.3f} {ours['match_s']:8.3f} "
                    f"{ours['sweeps']:6d} {ours['sweep_s']:8.3f} {ours['objective']:12.4f} {ours['start']:10.3f}  {note}"
                )
                if reb is not None:
                    print(
                        f"{'':>4} {'ratio':12} {reb['call_s'] / ours['call_s']:7.1f}x {'':>8} "
                        f"{reb['match_s'] / ours['match_s']:7.1f}x {'':>6} {reb['sweep_s'] / ours['sweep_s']:7.1f}x "
                        f"{ours['objective'] - reb['objective']:+12.4f}{'':>10}  (rebasin/{impl} time; objective difference)"
                    )
        med = {
            k: {m: statistics.median(r[m] for r in v) for m in ("call_s", "match_s", "sweep_s", "objective")} for k, v in rows.items() if v
        }
        for impl in impls:
            if "rebasin" in med and impl in med:
                o, r = med[impl], med["rebasin"]
                print(
                    f"median {impl}: per call {r['call_s'] / o['call_s']:.1f}x faster, per sweep "
                    f"{r['sweep_s'] / o['sweep_s']:.1f}x faster than rebasin; objective {o['objective']:.4f} "
                    f"vs rebasin {r['objective']:.4f}"
                )
        assert spec is not None
        fl = floor(spec, a.state_dict())
        o = med[impls[-1]]
        print(
            f"floor: one full sweep = {fl['gflop']:.2f} GFLOP; plain matmuls of the same shapes {fl['terms_s']:.3f} s, "
            f"one {512}x{512}x{int(fl['gflop'] * 1e9 / (2 * 512 * 512))} GEMM {fl['one_gemm_s']:.3f} s "
            f"({fl['gflop'] / fl['one_gemm_s']:.0f} GFLOP/s)"
        )
        print(
            f"{impls[-1]}: {o['sweep_s']:.3f} s per sweep on average = {o['sweep_s'] / fl['terms_s']:.2f}x the same-shape floor "
            f"(cached terms and skipped groups make later sweeps cheaper than a full one)"
        )


if __name__ == "__main__":
    main()
