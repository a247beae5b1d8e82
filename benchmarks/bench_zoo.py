"""Benchmark: a zoo of K Fashion-MNIST MLPs trained in one pass vs one after another.

For each width, K models (seeds 0..K-1) are trained twice with the same recipe (the
project's Fashion-MNIST recipe, ``--epochs`` of it), into two temporary zoo folders:

loop     ``zoo.train_zoo(..., batch_models=1)``: K ordinary trainings, one after another
batched  ``zoo.train_zoo(..., batch_models=K)``: one vmapped pass (stardomain.training.batched)

Both write ordinary members (final metrics included), so the timings cover the same work.
The script prints both wall times and their ratio, and checks that the batched members
equal the looped ones: per-model test accuracy within ``--acc-tol`` percentage points
(default 0.3) and the largest weight difference. The issue's goal: >= 4x for width 16 on
2 CPU cores. On a shared machine wall time depends on what else runs; the CPU-time ratio
(this process only) is the steadier figure.

    python benchmarks/bench_zoo.py                           # 16 models, widths 16 and 128, 2 epochs
    python benchmarks/bench_zoo.py --models 4 --widths 16 --epochs 1 --subset 6000   # quick check
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from stardomain.checkpoints import store
from stardomain.data import load_dataset
from stardomain.training import zoo
from stardomain.training.loop import default_recipe


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=16, help="models per zoo (default 16)")
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 128], help="MLP widths (default 16 128)")
    ap.add_argument("--depth", type=int, default=1, help="hidden layers (default 1, as configs/fashion_mnist_mlp_small)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the Fashion-MNIST recipe (default 2; the recipe has 10)")
    ap.add_argument("--subset", type=int, default=None, help="train on a seeded subset of this many images (default: all 60k)")
    ap.add_argument("--acc-tol", type=float, default=0.3, help="max per-model test-accuracy difference, pp (default 0.3)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the issue's 2 CPU cores)")
    ap.add_argument("--data-root", default=None, help="Fashion-MNIST location (default: the usual search path)")
    args = ap.parse_args()
    if args.models < 2:
        raise SystemExit("--models must be >= 2 (one model has nothing to batch with)")
    torch.set_num_threads(args.threads)
    ds = load_dataset("fashion_mnist", root=args.data_root, subset=args.subset, seed=0)
    recipe = default_recipe("fashion_mnist").replace(epochs=args.epochs)
    seeds = list(range(args.models))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.models} Fashion-MNIST MLPs (depth {args.depth}) x {len(ds.train_x)} train images, {recipe.epochs} epochs, "
        f"batch {recipe.batch_size}, sgd lr {recipe.lr}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load:.1f} at start"
    )
    failures = []
    for width in args.widths:
        options = {"depth": args.depth, "width": width}
        with tempfile.TemporaryDirectory() as loop_dir, tempfile.TemporaryDirectory() as batch_dir:
            (t_loop, c_loop) = _timed_zoo(ds, options, recipe, seeds, loop_dir, 1, args.subset)
            (t_batch, c_batch) = _timed_zoo(ds, options, recipe, seeds, batch_dir, args.models, args.subset)
            wdiff, accdiff, acc_a, acc_b = _compare(loop_dir, batch_dir, seeds)
        print(
            f"width {width:>4}: loop {t_loop:7.1f} s wall / {c_loop:7.1f} s CPU, batched {t_batch:7.1f} s / {c_batch:7.1f} s "
            f"-> {t_loop / t_batch:5.2f}x wall, {c_loop / c_batch:5.2f}x CPU; "
            f"test acc loop {min(acc_a):.2f}-{max(acc_a):.2f}%, max |acc diff| {accdiff:.3f} pp, "
            f"max |weight diff| {wdiff:.1e}"
        )
        if accdiff > args.acc_tol:
            failures.append(f"width {width}: accuracies differ by {accdiff:.3f} pp (> {args.acc_tol})")
    if failures:
        raise SystemExit("; ".join(failures))


if __name__ == "__main__":
    main()
