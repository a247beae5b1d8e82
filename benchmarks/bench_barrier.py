"""Benchmark: stardomain.barrier.curve vs a straightforward interpolation loop.

The straightforward loop is what one writes first: deepcopy the model for each t, load the
interpolated weights, reset BatchNorm with the standard PyTorch loop (momentum=None, one
pass in train mode), then evaluate the train split and the test split in two separate
passes with batch size 128. Both sides see the same BN samples in the same order and the
same batch partition, and ours runs the "cumulative" estimator (what momentum=None computes
when batches have equal size), so the curves must agree to float tolerance.

    python benchmarks/bench_barrier.py --train 2000 --test 1000 --points 21
"""

from __future__ import annotations

import argparse
import copy
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from stardomain.barrier import barriers, curve
from stardomain.bn import sample_order
from stardomain.models import create


@torch.no_grad()
def naive_curve(model: nn.Module, state_a: dict, state_b: dict, ds: SimpleNamespace, num_points: int,
                bn_batch_size: int, eval_batch_size: int = 128) -> dict[str, list[float]]:
    """Deepcopy per t, momentum=None BN reset, separate train/test evaluation passes."""
    order = sample_order(len(ds.train_x), None, seed=0)
    out: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
    for i in range(num_points):
        t = i / (num_points - 1)
        m = copy.deepcopy(model)
        m.load_state_dict({k: (1 - t) * a + t * state_b[k] if a.is_floating_point() else a for k, a in state_a.items()})
        bns = [mod for mod in m.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        m.train()
        for s in range(0, len(order), bn_batch_size):
            m(ds.train_x[order[s:s + bn_batch_size]])
        m.eval()
        for split in ("train", "test"):
            x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
            loss, correct = 0.0, 0
            for s in range(0, len(x), eval_batch_size):
                logits = m(x[s:s + eval_batch_size])
                loss += F.cross_entropy(logits, y[s:s + eval_batch_size], reduction="sum").item()
                correct += (logits.argmax(1) == y[s:s + eval_batch_size]).sum().item()
            out[f"{split}_loss"].append(loss / len(x))
            out[f"{split}_acc"].append(correct / len(x))
    return out


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--points", type=int, default=21)
    ap.add_argument("--bn-batch-size", type=int, default=500, help="divides --train, so momentum=None is per-sample exact")
    ap.add_argument("--train-steps", type=int, default=20, help="SGD steps per end point (0: random init)")
    ap.add_argument("--repeats", type=int, default=1, help="time each side this many times, report the best")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train % args.bn_batch_size:
        raise SystemExit("--bn-batch-size must divide --train (the naive momentum=None loop weights batches equally)")

    g = torch.Generator().manual_seed(0)
    # CIFAR-shaped data with a learnable signal: class-dependent mean images plus noise
    protos = torch.randn(10, 3, 32, 32, generator=g)
    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(10, (n,), generator=g)
        return 0.5 * protos[y] + torch.randn(n, 3, 32, 32, generator=g), y
    (trx, try_), (tex, tey) = make(args.train), make(args.test)
    ds = SimpleNamespace(train_x=trx, train_y=try_, test_x=tex, test_y=tey)

    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        m = create("resnet20", 10, (3, 32, 32))
        brief_train(m, trx, try_, args.train_steps, seed)
        models.append(m)
    state_a, state_b = models[0].state_dict(), models[1].state_dict()

    print(f"ResNet-20, {args.train} train / {args.test} test, {args.points} points, BN reset on all train "
          f"(batch {args.bn_batch_size}), torch threads {torch.get_num_threads()}")
    t_naive, t_ours, c_naive, c_ours = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so load from other processes hits both sides alike
        t0, p0 = time.perf_counter(), time.process_time()
        ref = naive_curve(models[0], state_a, state_b, ds, args.points, args.bn_batch_size)
        t_naive.append(time.perf_counter() - t0)
        c_naive.append(time.process_time() - p0)
        t0, p0 = time.perf_counter(), time.process_time()
        c = curve(models[0], state_a, state_b, ds, num_points=args.points, bn_batch_size=args.bn_batch_size,
                  bn_estimator="cumulative")
        t_ours.append(time.perf_counter() - t0)
        c_ours.append(time.process_time() - p0)
    worst = 0.0
    for k, v in ref.items():
        ours = c.metric(k)
        diff = max(abs(a - b) for a, b in zip(ours, v))
        worst = max(worst, diff)
        tol = 1e-4 if k.endswith("loss") else 2.5 / (args.train if k.startswith("train") else args.test)
        assert diff <= tol, f"{k}: ours and naive differ by {diff:.3g} (tolerance {tol:.3g})"
    print(f"naive: {min(t_naive):7.2f} s wall, {min(c_naive):7.2f} s CPU   "
          "(deepcopy per t, momentum=None reset, train and test passes at batch 128)")
    print(f"ours : {min(t_ours):7.2f} s wall, {min(c_ours):7.2f} s CPU   "
          "(one working copy, channels_last, BN folded + in-place ReLU for eval)")
    print(f"speed-up: {min(t_naive) / min(t_ours):.2f}x wall, {min(c_naive) / min(c_ours):.2f}x CPU time; "
          f"max |difference| over all metrics and t: {worst:.2e}")
    b = barriers(c)
    print("barriers (ours): " + ", ".join(f"{k} {v:.4f}" for k, v in b.items()))
    pooled = curve(models[0], state_a, state_b, ds, num_points=args.points, bn_batch_size=args.bn_batch_size)
    print("barriers (default pooled BN estimator): " + ", ".join(f"{k} {v:.4f}" for k, v in barriers(pooled).items()))


if __name__ == "__main__":
    main()
