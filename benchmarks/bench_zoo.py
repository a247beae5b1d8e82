"""Benchmark: a zoo of K Fashion-MNIST MLPs trained in one pass vs one after another.

For each width, K models (seeds 0..K-1) are trained twice with the same recipe (the
project's Fashion-MNIST recipe, ``--epochs`` of it), into two temporary zoo folders:

loop     ``zoo.train_zoo(..., batch_models=1)``: K ordinary trainings, one after another
batched  ``zoo.train_zoo(..., batch_models=K)``: one pass (stardomain.training.batched: for a
         plain MLP each layer is one baddbmm over the stacked weights, each step one gather of
         the K batches)

Both write ordinary members (final metrics included), so the timings cover the same work.
Every path gets one untimed warm-up zoo first (lazy imports, e.g. the optimizer's first step
imports torch._dynamo, a second or more: timed, it would land on whichever path ran first).
With ``--repeats`` R the two run alternately R times (loop, batched, loop, ...) and the best
of each is compared; every run is printed. The script checks that the batched members equal the
looped ones: per-model test accuracy within ``--acc-tol`` percentage points (default 0.3) and the
largest weight difference (0 on one thread so far; with two, one model's GEMMs split their sums
over the threads, and on a few models the last-bit differences grow over the SGD steps to ~1e-2).

The floor: what the batched pass cannot avoid, timed bare in the same process with the same
threads. Its GEMMs: every step's forward (K x B x in x out per layer), weight gradients, and
input gradients of the layers after the first, plus the evaluation forwards (the test split after
each epoch, train and test splits for the final metrics, as one wide GEMM per layer). And the
data movement: gathering the K models' batches (K x B rows) from the training tensor each step.
The batched time is printed as a multiple of the GEMM floor and of GEMM + gather.

The issue's goal: batched >= 4x the loop for width 16 on 2 CPU cores. On a shared machine wall
time depends on what else runs (the load average is printed before and after each width); the
CPU-time ratio (this process only) is the steadier figure.

    python benchmarks/bench_zoo.py                           # 16 models, widths 16 and 128, 2 epochs
    python benchmarks/bench_zoo.py --models 4 --widths 16 --epochs 1 --subset 6000   # quick check
    python benchmarks/bench_zoo.py --json benchmarks/results/bench_zoo.json --label "what was measured"  # keep the figures
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from typing import Any

import torch

from stardomain.checkpoints import store
from stardomain.data import load_dataset
from stardomain.training import zoo
from stardomain.training.loop import default_recipe


def _load() -> list[float]:
    """The 1, 5 and 15 minute load averages (NaN where the platform has none)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else [float("nan")] * 3


def _source() -> str:
    """Where the measured stardomain was imported from, and its checkout's commit (+ "dirty" with edits) where it has one."""
    import subprocess

    import stardomain

    where = os.path.dirname(os.path.abspath(stardomain.__file__))
    try:
        head = subprocess.run(
            ["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
        return f"{where} @ {head}{' + edits' if dirty.strip() else ''}"
    except (OSError, subprocess.CalledProcessError):
        return where


def _timed_zoo(
    ds: object, options: dict, recipe: object, seeds: list[int], out: str, batch_models: int, subset: int | None
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to train the zoo."""
    t0, c0 = time.perf_counter(), time.process_time()
    zoo.train_zoo(ds, "mlp", options, recipe, seeds, out, progress=False, batch_models=batch_models, subset=subset)
    return time.perf_counter() - t0, time.process_time() - c0


def _compare(a: str, b: str, seeds: list[int]) -> tuple[float, float, list[float], list[float]]:
    """(largest |weight difference|, largest |test acc difference| in pp, loop accs, batched accs)."""
    wdiff, accdiff, acc_a, acc_b = 0.0, 0.0, [], []
    for s in seeds:
        sa, ma = store.load_state(zoo.member_path(a, s))
        sb, mb = store.load_state(zoo.member_path(b, s))
        assert "batched" in mb and "batched" not in ma, "the batched zoo must record that it was batched"
        wdiff = max(wdiff, max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa))
        acc_a.append(100 * ma["metrics"]["test_acc"])
        acc_b.append(100 * mb["metrics"]["test_acc"])
        accdiff = max(accdiff, abs(acc_a[-1] - acc_b[-1]))
    return wdiff, accdiff, acc_a, acc_b


def _best_seconds(fn: Any, reps: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of ``reps`` calls of fn, per call."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def floor(k: int, dims: list[int], batch: int, n_train: int, n_test: int, epochs: int, reps: int = 20) -> dict[str, float]:
    """The batched pass's unavoidable work timed bare: GEMMs (training steps and evaluations) and the batch gather.

    ``dims``: layer widths, input first, classes last. Training: n_train * epochs / batch steps, each with,
    per layer, the forward baddbmm (K, B, in) x (K, in, out), the weight gradient (K, out, B) x (K, B, in) and,
    after the first layer, the input gradient (K, B, out) x (K, out, in). Evaluation: (n_test per epoch +
    n_train + n_test at the end) rows through every layer, the first as one (rows, in) x (in, K*out) GEMM.
    """
    layers = list(zip(dims[:-1], dims[1:]))
    xs = [torch.randn(k, batch, i) for i, _ in layers]
    ws = [torch.randn(k, o, i) for i, o in layers]
    bs = [torch.randn(k, o) for _, o in layers]
    gs = [torch.randn(k, batch, o) for _, o in layers]

    def step() -> None:
        for li, (x, w, b, g) in enumerate(zip(xs, ws, bs, gs)):
            torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            g.transpose(1, 2).bmm(x)
            if li:
                g.bmm(w)

    rows = 1024
    ex = torch.randn(rows, dims[0])
    wide = ws[0].reshape(-1, dims[0]).t()
    hidden = [torch.randn(k, rows, i) for i, _ in layers[1:]]

    def evaluate() -> None:
        torch.addmm(bs[0].reshape(-1), ex, wide)
        for h, w, b in zip(hidden, ws[1:], bs[1:]):
            torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))

    data = torch.randn(n_train, dims[0])
    idx = torch.randint(0, n_train, (k * batch,))
    steps = n_train * epochs / batch
    eval_rows = n_test * epochs + n_train + n_test
    step_flop = 2.0 * k * batch * sum(i * o * (3 if li else 2) for li, (i, o) in enumerate(layers))
    eval_flop = 2.0 * k * eval_rows * sum(i * o for i, o in layers)
    step(), evaluate()  # warm-up
    t_step = _best_seconds(step, reps)
    t_eval = _best_seconds(evaluate, max(1, reps // 4))
    t_gather = _best_seconds(lambda: data.index_select(0, idx), reps)
    gemm_s = t_step * steps + t_eval * eval_rows / rows
    return {
        "gflop": (step_flop * steps + eval_flop) / 1e9,
        "gemm_s": gemm_s,
        "gather_s": t_gather * steps,
        "step_gemm_ms": 1e3 * t_step,
        "step_gather_ms": 1e3 * t_gather,
    }


def _warm_up(ds: Any, recipe: Any, depth: int, subset: int | None) -> None:
    """One tiny untimed zoo each way (2 models, 1 epoch, 512 images): lazy imports and first calls."""
    small = load_dataset("fashion_mnist", subset=512, seed=0) if subset is None or subset > 512 else ds
    with tempfile.TemporaryDirectory() as tmp:
        for bm in (1, 2):
            zoo.train_zoo(
                small, "mlp", {"depth": depth, "width": 8}, recipe.replace(epochs=1), [0, 1], f"{tmp}/{bm}", progress=False, batch_models=bm
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=16, help="models per zoo (default 16)")
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 128], help="MLP widths (default 16 128)")
    ap.add_argument("--depth", type=int, default=1, help="hidden layers (default 1, as configs/fashion_mnist_mlp_small)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the Fashion-MNIST recipe (default 2; the recipe has 10)")
    ap.add_argument("--subset", type=int, default=None, help="train on a seeded subset of this many images (default: all 60k)")
    ap.add_argument("--acc-tol", type=float, default=0.3, help="max per-model test-accuracy difference, pp (default 0.3)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the issue's 2 CPU cores)")
    ap.add_argument("--repeats", type=int, default=2, help="loop/batched runs per width, alternating; the best of each counts (default 2)")
    ap.add_argument("--data-root", default=None, help="Fashion-MNIST location (default: the usual search path)")
    ap.add_argument("--json", default=None, help="also append the figures (and the command, date, load) to this JSON file")
    ap.add_argument("--label", default="", help="a note stored with the figures in --json (e.g. which tree was measured)")
    args = ap.parse_args()
    if args.models < 2:
        raise SystemExit("--models must be >= 2 (one model has nothing to batch with)")
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    ds = load_dataset("fashion_mnist", root=args.data_root, subset=args.subset, seed=0)
    recipe = default_recipe("fashion_mnist").replace(epochs=args.epochs)
    seeds = list(range(args.models))
    record: dict[str, Any] = {
        "command": shlex.join(["python", *sys.argv]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "label": args.label,
        "stardomain": _source(),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "load_at_start": _load(),
        "widths": [],
    }
    print(
        f"{args.models} Fashion-MNIST MLPs (depth {args.depth}) x {len(ds.train_x)} train images, {recipe.epochs} epochs, "
        f"batch {recipe.batch_size}, sgd lr {recipe.lr}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {record['load_at_start'][0]:.1f} at start"
    )
    _warm_up(ds, recipe, args.depth, args.subset)
    failures = []
    for width in args.widths:
        options = {"depth": args.depth, "width": width}
        load_before = _load()
        runs: dict[str, list[tuple[float, float]]] = {"loop": [], "batched": []}
        wdiff = accdiff = 0.0
        acc_a: list[float] = []
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as loop_dir, tempfile.TemporaryDirectory() as batch_dir:
                runs["loop"].append(_timed_zoo(ds, options, recipe, seeds, loop_dir, 1, args.subset))
                runs["batched"].append(_timed_zoo(ds, options, recipe, seeds, batch_dir, args.models, args.subset))
                if r == 0:
                    wdiff, accdiff, acc_a, _ = _compare(loop_dir, batch_dir, seeds)
        dims = [ds.train_x[0].numel(), *[width] * args.depth, int(ds.train_y.max()) + 1]
        fl = floor(args.models, dims, recipe.batch_size, len(ds.train_x), len(ds.test_x), recipe.epochs)
        load_after = _load()
        t_loop, t_batch = (min(w for w, _ in runs[k]) for k in ("loop", "batched"))  # best wall and best CPU of each
        c_loop, c_batch = (min(c for _, c in runs[k]) for k in ("loop", "batched"))
        for k, v in runs.items():
            print(f"width {width:>4} {k:>7} runs: " + ", ".join(f"{w:.2f} s wall / {c:.2f} s CPU" for w, c in v))
        print(
            f"width {width:>4}: loop {t_loop:7.2f} s wall / {c_loop:7.2f} s CPU, batched {t_batch:7.2f} s / {c_batch:7.2f} s "
            f"-> {t_loop / t_batch:5.2f}x wall, {c_loop / c_batch:5.2f}x CPU; "
            f"test acc loop {min(acc_a):.2f}-{max(acc_a):.2f}%, max |acc diff| {accdiff:.3f} pp, "
            f"max |weight diff| {wdiff:.1e}; load {load_before[0]:.1f} -> {load_after[0]:.1f}"
        )
        floor_all = fl["gemm_s"] + fl["gather_s"]
        print(
            f"width {width:>4} floor: GEMMs {fl['gflop']:.1f} GFLOP timed bare {fl['gemm_s']:.2f} s "
            f"({fl['gflop'] / fl['gemm_s']:.0f} GFLOP/s; {fl['step_gemm_ms']:.2f} ms a training step), "
            f"+ gathering the {args.models} batches {fl['gather_s']:.2f} s ({fl['step_gather_ms']:.2f} ms a step) = {floor_all:.2f} s; "
            f"batched = {t_batch / fl['gemm_s']:.2f}x the GEMM floor, {t_batch / floor_all:.2f}x GEMM + gather "
            f"(the loop: {t_loop / floor_all:.2f}x)"
        )
        record["widths"].append(
            {
                "width": width,
                "loop_runs": [{"wall_s": round(w, 3), "cpu_s": round(c, 3)} for w, c in runs["loop"]],
                "batched_runs": [{"wall_s": round(w, 3), "cpu_s": round(c, 3)} for w, c in runs["batched"]],
                "loop_s": round(t_loop, 3),
                "batched_s": round(t_batch, 3),
                "ratio_wall": round(t_loop / t_batch, 3),
                "ratio_cpu": round(c_loop / c_batch, 3),
                "floor": {k: round(v, 4) for k, v in fl.items()} | {"gemm_plus_gather_s": round(floor_all, 3)},
                "batched_over_floor": round(t_batch / floor_all, 3),
                "max_weight_diff": wdiff,
                "max_test_acc_diff_pp": round(accdiff, 4),
                "load_before": load_before,
                "load_after": load_after,
            }
        )
        if accdiff > args.acc_tol:
            failures.append(f"width {width}: accuracies differ by {accdiff:.3f} pp (> {args.acc_tol})")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        prior = []
        if os.path.exists(args.json):
            with open(args.json) as f:
                prior = json.load(f)
        with open(args.json, "w") as f:
            json.dump([*prior, record], f, indent=1)
            f.write("\n")
        print(f"figures appended to {args.json}")
    if failures:
        raise SystemExit("; ".join(failures))


if __name__ == "__main__":
    main()
