"""Benchmark: stardomain.barrier.curve vs straightforward interpolation loops.

Times the loss/accuracy curve of two ResNet-20s along (1 - t)·A + t·B — ``--points``
values of t (default 21), train and test split, BatchNorm statistics re-estimated at
every t — three ways, and checks that all three give the same numbers:

per-split baseline (primary; the project issue's "straightforward implementation")
    ``evaluate_point(model, state_a, state_b, t, split)`` deep-copies the model, loads the
    interpolated weights, resets BN the standard PyTorch way (``reset_running_stats``,
    ``momentum=None``, one train-mode pass over the training data) and evaluates ONE split
    at batch size 128. The curve calls it for every (t, split) pair, so the deep copy and
    the BN reset are paid once per point AND per split. The issue's goal is >= 2x over it.
shared-BN baseline (secondary, a stronger reference)
    Deep-copies and resets BN once per t, then evaluates the train and test splits in two
    passes at batch size 128. Skip it with ``--no-shared-baseline``.
ours
    ``stardomain.barrier.curve``: one working copy, channels_last, a traced BN pass, BN
    folded into the convolutions and in-place ReLUs for evaluation.

All three see the same BN samples in the same order and the same batch partition (the
fixed ``sample_order(seed=0)``, batches of ``--bn-batch-size``, which must divide
``--train``), and ours runs the "cumulative" estimator (what ``momentum=None`` computes
when batches have equal size), so the curves must agree to float tolerance; the script
asserts it (losses within 1e-4, accuracies within 2.5 samples).

Data (``--data``): ``synthetic`` (default) is CIFAR-shaped, class-dependent mean images
plus noise, generated in memory; ``cifar10`` is the first ``--train`` training and first
``--test`` test images of the real CIFAR-10, read through ``stardomain.data.load_dataset``
from ``--data-root`` (default: $STARDOMAIN_DATA, else the per-user cache). It is never
downloaded unless ``--download`` is given. Each end point gets ``--train-steps`` SGD steps
on the training subset so the curve has a shape.

    python benchmarks/bench_barrier.py                       # 21 points, 2000 train / 1000 test
    python benchmarks/bench_barrier.py --data cifar10 --data-root ~/data
    python benchmarks/bench_barrier.py --points 3 --train 1000 --test 500 --train-steps 5 --threads 1  # quick check
    python benchmarks/bench_barrier.py --model mlp --width 16 --train 10000 --test 10000   # the MLP case

``--model mlp`` times an MLP (``--depth`` hidden layers of ``--width`` units) on MNIST-shaped
synthetic data instead. Without BatchNorm there is nothing to re-estimate, so the baselines
skip the BN pass and ours evaluates the whole t-grid in vmapped chunks
(``stardomain.barrier.batched``); "ours, one t at a time" (``curve(..., batched=False)``) is
timed too, so the effect of batching over t is measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import time
from types import SimpleNamespace
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stardomain.barrier import Curve, barriers, curve
from stardomain.barrier.bn import sample_order
from stardomain.errors import StardomainError
from stardomain.models import create

SPLITS = ("train", "test")
T = TypeVar("T")
EVAL_BATCH_SIZE = 128


# --- the baselines ------------------------------------------------------------------------------


def _interpolated_copy(model: nn.Module, state_a: dict, state_b: dict, t: float) -> nn.Module:
    """A fresh deep copy of ``model`` holding (1 - t)·A + t·B (integer buffers from A)."""
    m = copy.deepcopy(model)
    m.load_state_dict({k: (1 - t) * a + t * state_b[k] if a.is_floating_point() else a for k, a in state_a.items()})
    return m


def _reset_bn(m: nn.Module, x: Tensor, order: Tensor, bn_batch_size: int) -> None:
    """The textbook BN reset: zeroed running stats, momentum=None, one train-mode pass (none without BN)."""
    if not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in m.modules()):
        return
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    for s in range(0, len(order), bn_batch_size):
        m(x[order[s : s + bn_batch_size]])
    m.eval()


def _evaluate(m: nn.Module, x: Tensor, y: Tensor, batch_size: int = EVAL_BATCH_SIZE) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the eval-mode model on one split."""
    loss, correct = 0.0, 0
    for s in range(0, len(x), batch_size):
        logits = m(x[s : s + batch_size])
        loss += F.cross_entropy(logits, y[s : s + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == y[s : s + batch_size]).sum().item()
    return loss / len(x), correct / len(x)


@torch.no_grad()
def evaluate_point(
    model: nn.Module, state_a: dict, state_b: dict, t: float, split: str, *, ds: SimpleNamespace, bn_order: Tensor, bn_batch_size: int
) -> tuple[float, float]:
    """Loss and accuracy of ONE split at ONE t, from scratch: deep copy, load, BN reset, evaluate."""
    m = _interpolated_copy(model, state_a, state_b, t)
    _reset_bn(m, ds.train_x, bn_order, bn_batch_size)
    return _evaluate(m, getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y"))


def per_split_curve(
    model: nn.Module, state_a: dict, state_b: dict, ds: SimpleNamespace, num_points: int, bn_batch_size: int
) -> dict[str, list[float]]:
    """The issue's straightforward curve: ``evaluate_point`` for every (t, split) pair."""
    order = sample_order(len(ds.train_x), None, seed=0)
    out: dict[str, list[float]] = {f"{s}_{m}": [] for s in SPLITS for m in ("loss", "acc")}
    for i in range(num_points):
        t = i / (num_points - 1)
        for split in SPLITS:
            loss, acc = evaluate_point(model, state_a, state_b, t, split, ds=ds, bn_order=order, bn_batch_size=bn_batch_size)
            out[f"{split}_loss"].append(loss)
            out[f"{split}_acc"].append(acc)
    return out


@torch.no_grad()
def shared_bn_curve(
    model: nn.Module, state_a: dict, state_b: dict, ds: SimpleNamespace, num_points: int, bn_batch_size: int
) -> dict[str, list[float]]:
    """Stronger reference: deep copy and BN reset once per t, then each split in its own pass."""
    order = sample_order(len(ds.train_x), None, seed=0)
    out: dict[str, list[float]] = {f"{s}_{m}": [] for s in SPLITS for m in ("loss", "acc")}
    for i in range(num_points):
        t = i / (num_points - 1)
        m = _interpolated_copy(model, state_a, state_b, t)
        _reset_bn(m, ds.train_x, order, bn_batch_size)
        for split in SPLITS:
            loss, acc = _evaluate(m, getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y"))
            out[f"{split}_loss"].append(loss)
            out[f"{split}_acc"].append(acc)
    return out


# --- set-up ---------------------------------------------------------------------------------------


def brief_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> None:
    """A few SGD steps so the end points are not pure noise (the barrier then has a shape)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()


def synthetic_data(n_train: int, n_test: int, shape: tuple[int, int, int] = (3, 32, 32)) -> SimpleNamespace:
    """Image data with a learnable signal: class-dependent mean images plus noise."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(10, *shape, generator=g)

    def make(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(10, (n,), generator=g)
        return 0.5 * protos[y] + torch.randn(n, *shape, generator=g), y

    (trx, try_), (tex, tey) = make(n_train), make(n_test)
    kind = "CIFAR" if shape == (3, 32, 32) else "MNIST" if shape == (1, 28, 28) else "x".join(map(str, shape))
    return SimpleNamespace(
        train_x=trx,
        train_y=try_,
        test_x=tex,
        test_y=tey,
        num_classes=10,
        in_shape=shape,
        desc=f"synthetic {kind}-shaped data (class prototypes + noise)",
    )


def cifar10_data(n_train: int, n_test: int, root: str | None, download: bool) -> SimpleNamespace:
    """The first ``n_train`` / ``n_test`` images of CIFAR-10 (normalised); exits if unavailable."""
    from stardomain.data import load_dataset, resolve_data_root
    from stardomain.data.sources import CIFAR10

    where = resolve_data_root(root)
    if not download:  # the places read_cifar looks in, so a missing copy gets a short message
        folders = (where / CIFAR10.folder / CIFAR10.inner, where / CIFAR10.inner)
        archives = (where / CIFAR10.folder / CIFAR10.archive, where / CIFAR10.archive)
        if not any(all((f / name).is_file() for name in CIFAR10.files) for f in folders) and not any(a.is_file() for a in archives):
            raise SystemExit(
                f"bench_barrier: CIFAR-10 not found in {where} (no {CIFAR10.inner}/ or {CIFAR10.archive}); "
                "pass --data-root DIR or set $STARDOMAIN_DATA, or add --download to fetch it (~170 MB)"
            )
    try:
        full = load_dataset("cifar10", root=root, download=download)
    except StardomainError as e:
        raise SystemExit(f"bench_barrier: cannot load CIFAR-10 from {where}: {str(e).splitlines()[0]}") from None
    if n_train > len(full.train_x) or n_test > len(full.test_x):
        raise SystemExit(f"bench_barrier: CIFAR-10 has {len(full.train_x)} train / {len(full.test_x)} test images; lower --train / --test")
    # clone the slices so the full normalised splits can be freed
    return SimpleNamespace(
        train_x=full.train_x[:n_train].clone(),
        train_y=full.train_y[:n_train].clone(),
        test_x=full.test_x[:n_test].clone(),
        test_y=full.test_y[:n_test].clone(),
        num_classes=full.num_classes,
        in_shape=full.in_shape,
        desc=f"CIFAR-10 (first images of each split, from {where})",
    )


def forward_floor(model: nn.Module, ds: SimpleNamespace, points: int, has_bn: bool, batch: int) -> None:
    """The arithmetic no curve can avoid, done bare: per t, one forward pass over the training data for the BN
    statistics (BN models) and one over each split, on a fixed copy of the model at batch ``batch``, channels_last
    for conv nets as ours (no interpolation, no copy per t, no BN bookkeeping, no metrics). The curve's time over this one is its distance to
    the floor (below 1 where the curve's evaluation model, BN folded and channels_last, is faster than the plain one)."""
    m = copy.deepcopy(model)
    fmt = torch.channels_last if has_bn else torch.contiguous_format  # the layout ours evaluates conv nets in
    m = m.to(memory_format=fmt)
    train_x, test_x = (x.contiguous(memory_format=fmt) for x in (ds.train_x, ds.test_x))
    with torch.no_grad():
        for _ in range(points):
            if has_bn:
                m.train()
                for i in range(0, len(train_x), batch):
                    m(train_x[i : i + batch])
            m.eval()
            for x in (train_x, test_x):
                for i in range(0, len(x), batch):
                    m(x[i : i + batch])


def _timed(fn: Callable[[], T], log: list[tuple[float, float]]) -> T:
    """Run ``fn`` and append its (wall, CPU) seconds to ``log``."""
    t0, p0 = time.perf_counter(), time.process_time()
    result = fn()
    log.append((time.perf_counter() - t0, time.process_time() - p0))
    return result


def _max_diff(ref: dict[str, list[float]], c: Curve, n_train: int, n_test: int, name: str) -> float:
    """Largest |difference| between a baseline and ours; asserts it is within tolerance."""
    worst = 0.0
    for k, v in ref.items():
        ours = c.metric(k)
        assert len(ours) == len(v), f"{k}: {len(ours)} points from ours, {len(v)} from the {name} baseline"
        diff = max(abs(a - b) for a, b in zip(ours, v))
        worst = max(worst, diff)
        tol = 1e-4 if k.endswith("loss") else 2.5 / (n_train if k.startswith("train") else n_test)
        assert diff <= tol, f"{k}: ours and the {name} baseline differ by {diff:.3g} (tolerance {tol:.3g})"
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data",
        choices=("synthetic", "cifar10"),
        default="synthetic",
        help="synthetic (default): in-memory CIFAR-shaped data; cifar10: the real dataset from --data-root",
    )
    ap.add_argument(
        "--data-root", default=None, help="CIFAR-10 folder for --data cifar10 (default: $STARDOMAIN_DATA, else the per-user cache)"
    )
    ap.add_argument(
        "--download", action="store_true", help="with --data cifar10: download CIFAR-10 (~170 MB) into the data root if it is missing"
    )
    ap.add_argument(
        "--model",
        choices=("resnet20", "mlp"),
        default="resnet20",
        help="resnet20 (default, BatchNorm) or mlp (no BatchNorm: the t-grid is evaluated batched)",
    )
    ap.add_argument("--width", type=int, default=16, help="--model mlp: hidden units (default 16)")
    ap.add_argument("--depth", type=int, default=1, help="--model mlp: hidden layers (default 1)")
    ap.add_argument("--train", type=int, default=2000, help="training images, BN reset and train split (default 2000)")
    ap.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    ap.add_argument("--points", type=int, default=21, help="values of t, end points included (default 21)")
    ap.add_argument(
        "--bn-batch-size", type=int, default=500, help="must divide --train, so momentum=None is per-sample exact (default 500)"
    )
    ap.add_argument("--train-steps", type=int, default=20, help="SGD steps per end point, 0: random init (default 20)")
    ap.add_argument("--repeats", type=int, default=1, help="time each side this many times, report the best")
    ap.add_argument(
        "--no-shared-baseline", action="store_true", help="skip timing the shared-BN baseline (deep copy and BN reset once per t)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.points < 2:
        raise SystemExit("--points must be >= 2 (the curve includes both end points)")
    if args.train < 1 or args.test < 1 or args.repeats < 1 or args.bn_batch_size < 2:
        raise SystemExit("--train, --test and --repeats must be >= 1 and --bn-batch-size >= 2")
    if args.train % args.bn_batch_size:
        raise SystemExit("--bn-batch-size must divide --train (the naive momentum=None loop weights batches equally)")
    if (args.download or args.data_root is not None) and args.data != "cifar10":
        raise SystemExit("--data-root and --download only apply to --data cifar10")

    if args.data == "cifar10":
        ds = cifar10_data(args.train, args.test, args.data_root, args.download)
    else:
        ds = synthetic_data(args.train, args.test, (3, 32, 32) if args.model == "resnet20" else (1, 28, 28))
    if args.model == "mlp" and args.data == "cifar10":
        raise SystemExit("--model mlp runs on synthetic MNIST-shaped data; drop --data cifar10")
    options = {} if args.model == "resnet20" else {"depth": args.depth, "width": args.width}

    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        m = create(args.model, ds.num_classes, ds.in_shape, **options)
        brief_train(m, ds.train_x, ds.train_y, args.train_steps, seed)
        models.append(m)
    state_a, state_b = models[0].state_dict(), models[1].state_dict()
    run_shared = not args.no_shared_baseline

    has_bn = args.model == "resnet20"
    label = "ResNet-20" if has_bn else f"MLP depth {args.depth} width {args.width} (no BN)"
    bn_note = f"BN reset on all train (batch {args.bn_batch_size})" if has_bn else "no BN reset"
    print(
        f"{label} on {ds.desc}: {args.train} train / {args.test} test, {args.points} points, "
        f"{bn_note}, torch threads {torch.get_num_threads()}"
    )
    times: dict[str, list[tuple[float, float]]] = {"per_split": [], "shared": [], "ours": [], "unbatched": [], "floor": []}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits every side alike
        ref_split = _timed(lambda: per_split_curve(models[0], state_a, state_b, ds, args.points, args.bn_batch_size), times["per_split"])
        if run_shared:
            ref_shared = _timed(lambda: shared_bn_curve(models[0], state_a, state_b, ds, args.points, args.bn_batch_size), times["shared"])
        c = _timed(
            lambda: curve(
                state_a,
                state_b,
                model=models[0],
                dataset=ds,
                num_points=args.points,
                bn_batch_size=args.bn_batch_size,
                bn_estimator="cumulative",
            ),
            times["ours"],
        )
        _timed(lambda: forward_floor(models[0], ds, args.points, has_bn, args.bn_batch_size), times["floor"])
        if not has_bn:
            c_one = _timed(
                lambda: curve(state_a, state_b, model=models[0], dataset=ds, num_points=args.points, batched=False), times["unbatched"]
            )

    worst_split = _max_diff(ref_split, c, args.train, args.test, "per-split")
    worst_shared = _max_diff(ref_shared, c, args.train, args.test, "shared-BN") if run_shared else 0.0
    worst_one = 0.0
    if not has_bn:  # batched over t and one t at a time: the same numbers to float rounding
        worst_one = max(
            abs(a - b) for m in ("train_loss", "train_acc", "test_loss", "test_acc") for a, b in zip(c.metric(m), c_one.metric(m))
        )
        assert worst_one <= 1e-5, f"batched and one-t-at-a-time curves differ by {worst_one:.2e}"
    best = {k: (min(w for w, _ in v), min(p for _, p in v)) for k, v in times.items() if v}

    def line(label: str, key: str, what: str) -> str:
        wall, cpu = best[key]
        return f"{label:<23}{wall:8.2f} s wall, {cpu:8.2f} s CPU   ({what})"

    reset = "momentum=None BN reset" if has_bn else "evaluation (no BN to reset)"
    print(
        line("per-split baseline:", "per_split", f"deepcopy + {reset} per (t, split): {2 * args.points} of each, batch {EVAL_BATCH_SIZE}")
    )
    if run_shared:
        print(
            line(
                "shared-BN baseline:",
                "shared",
                f"deepcopy{' + BN reset' if has_bn else ''} once per t, train and test passes at batch {EVAL_BATCH_SIZE}",
            )
        )
    if has_bn:
        print(line("ours:", "ours", "one working copy, channels_last, BN folded + in-place ReLU for eval"))
    else:
        print(line("ours, one t at a time:", "unbatched", "curve(..., batched=False)"))
        print(line("ours:", "ours", f"the t-grid in vmapped chunks; max |difference| to one t at a time {worst_one:.1e}"))
    w_ours, c_ours = best["ours"]
    w_split, c_split = best["per_split"]
    print(
        f"speed-up vs per-split baseline (the issue's goal, >= 2x): {w_split / w_ours:.2f}x wall, "
        f"{c_split / c_ours:.2f}x CPU; max |difference| over all metrics and t: {worst_split:.2e}"
    )
    if run_shared:
        w_shared, c_shared = best["shared"]
        print(
            f"speed-up vs shared-BN baseline (stronger reference): {w_shared / w_ours:.2f}x wall, "
            f"{c_shared / c_ours:.2f}x CPU; max |difference|: {worst_shared:.2e}"
        )
    w_floor, c_floor = best["floor"]
    print(
        f"floor (the forward passes alone, {args.points} x ({'BN pass + ' if has_bn else ''}train + test) at batch "
        f"{args.bn_batch_size}, fixed weights): {w_floor:.2f} s wall; ours is {w_ours / w_floor:.2f}x the floor"
    )
    print("barriers (ours): " + ", ".join(f"{k} {v:.4f}" for k, v in barriers(c).items()))
    if not has_bn:
        w_one, c_one_cpu = best["unbatched"]
        print(f"batched over t vs one t at a time: {w_one / w_ours:.2f}x wall, {c_one_cpu / c_ours:.2f}x CPU")
        return
    pooled = curve(state_a, state_b, model=models[0], dataset=ds, num_points=args.points, bn_batch_size=args.bn_batch_size)
    print("barriers (default pooled BN estimator): " + ", ".join(f"{k} {v:.4f}" for k, v in barriers(pooled).items()))


if __name__ == "__main__":
    main()
