"""Wall time of one small zoo + star experiment: the local executor vs Ray with N workers, in one run.

Fashion-MNIST MLPs (>= 8 sources and a few held-out models), one star, the barrier study; one torch
thread per worker in both runs, so the ratio measures how well the units spread over the cores (the
star waits for every source and is a single unit, which bounds the speed-up: Amdahl). Both runs
must give byte-identical results.json and report.md, which the benchmark checks. Goal: >= 1.6x on 2
cores. Per-stage unit seconds (from events.jsonl) are printed for the scaling arithmetic in the README, with
the wall time they predict for N workers (stages one after another, each spread over N, plus the serial
rest: loading data, assembling results, the report, starting Ray).

    python benchmarks/bench_executor.py [--sources 8] [--held-out 2] [--epochs 8] [--subset 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch

from stardomain.experiment.config import ExperimentConfig, from_dict
from stardomain.experiment.executors import ExecutorConfig
from stardomain.experiment.runner import run_experiment


def config(args: argparse.Namespace) -> ExperimentConfig:
    return from_dict(
        ExperimentConfig,
        {
            "name": "bench_executor",
            "dataset": "fashion_mnist",
            "subset": args.subset,
            "device": "cpu",
            "seed": 0,
            "model": {"name": "mlp", "options": {"depth": 1, "width": args.width}},
            "train": {"epochs": args.epochs},
            "sources": args.sources,
            "held_out": args.held_out,
            "star": {"recipe": {"epochs": args.star_epochs}, "mu": 0.0},
            "eval": {"points": 5, "max_pairs": args.sources // 2, "eval_train_samples": 2000},
            "studies": {"barriers": True, "distances": True},
        },
    )


def stage_seconds(out: Path) -> dict[str, list[float]]:
    per: dict[str, list[float]] = {}
    for line in (out / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("event") == "unit" and e.get("status") == "done":
            per.setdefault(e["stage"], []).append(e["seconds"])
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=8)
    ap.add_argument("--held-out", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--star-epochs", type=int, default=2)
    ap.add_argument("--subset", type=int, default=20000)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="keep both run folders under this folder")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = config(args)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_executor_"))
    walls: dict[str, float] = {}
    try:
        for name, ex in (("local", ExecutorConfig()), ("ray", ExecutorConfig(kind="ray", workers=args.workers, cpus_per_unit=1))):
            out = root / name
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            run_experiment(cfg, out, progress=False, executor=ex)
            walls[name] = time.perf_counter() - t0
            per = stage_seconds(out)
            print(
                f"{name:>5}: {walls[name]:7.1f} s wall   "
                + "   ".join(f"{s}: {len(v)} units, {sum(v) / len(v):.2f} s each" for s, v in per.items())
            )
            if name == "local":  # the arithmetic of the README: what these unit costs predict for N workers
                units = sum(sum(v) for v in per.values())
                spread = sum(math.ceil(len(v) / args.workers) * sum(v) / len(v) for v in per.values())
                print(
                    f"       units {units:.1f} s + serial rest {walls[name] - units:.1f} s; with {args.workers} workers "
                    f"the units take >= {spread:.1f} s: predicted ratio <= {walls[name] / (spread + walls[name] - units):.2f}x"
                )
        same = all((root / "local" / f).read_bytes() == (root / "ray" / f).read_bytes() for f in ("results.json", "report.md"))
        print(f"results.json and report.md identical: {same}")
        print(f"speed-up local/ray with {args.workers} workers: {walls['local'] / walls['ray']:.2f}x (goal >= 1.6x on 2 cores)")
        if not same:
            raise SystemExit("the two executors disagree: that is a bug")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
