"""Cost of a Starlight step versus a plain training step of the same model and batch.

Both are timed in the same run on the same data (ResNet-20 on CIFAR-shaped tensors by default), excluding
re-alignment; re-alignment (weight matching of every source to the star, warm-started as in training) is
timed separately and amortised over an epoch of CIFAR-10 (391 steps of batch 128). Goal: ratio <= 1.25.

    python benchmarks/bench_star_step.py [--model resnet20] [--batch 128] [--steps 10] [--sources 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from stardomain import models
from stardomain.data import Dataset
from stardomain.starlight import Starlight, StarlightConfig
from stardomain.training.loop import Recipe, make_optimizer


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sources", type=int, default=5)
    ap.add_argument("--steps-per-epoch", type=int, default=391, help="for amortising re-alignment (CIFAR-10, batch 128)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    torch.manual_seed(0)
    n = args.batch * 4
    x = torch.randn(n, 3, 32, 32)
    y = torch.randint(0, 10, (n,))
    ds = Dataset(
        name="bench",
        train_x=x,
        train_y=y,
        test_x=x[:128],
        test_y=y[:128],
        num_classes=10,
        in_shape=(3, 32, 32),
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        classes=[str(i) for i in range(10)],
        augment=False,
    )
    xb, yb = x[: args.batch].to(dev), y[: args.batch].to(dev)
    recipe = Recipe(epochs=1, batch_size=args.batch)

    plain = models.create(args.model, 10, (3, 32, 32)).to(dev)
    opt = make_optimizer(plain.parameters(), recipe)

    def plain_step() -> None:
        plain.train()
        loss = F.cross_entropy(plain(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sources = [models.create(args.model, 10, (3, 32, 32)).state_dict() for _ in range(args.sources)]
    star = Starlight(models.create(args.model, 10, (3, 32, 32)), sources, ds, StarlightConfig(recipe=recipe), device=dev)
    g = torch.Generator().manual_seed(0)

    def star_step() -> None:
        n_src = int(torch.randint(0, args.sources, (1,), generator=g))
        t = float(torch.rand((), generator=g))
        star.step(xb, yb, [(n_src, t)])

    def timed(fn) -> float:
        for _ in range(2):
            fn()
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            fn()
        sync(dev)
        return (time.perf_counter() - t0) / args.steps

    plain_t, star_t = [], []
    for _ in range(args.repeats):  # interleave so drift in machine load hits both alike
        plain_t.append(timed(plain_step))
        star_t.append(timed(star_step))
    p, s = statistics.median(plain_t), statistics.median(star_t)
    star.realign()  # cold alignment (first epoch)
    sync(dev)
    t0 = time.perf_counter()
    star.realign()  # warm-started, as in every later epoch
    sync(dev)
    realign = time.perf_counter() - t0
    print(f"model={args.model} batch={args.batch} device={dev} threads={torch.get_num_threads()} sources={args.sources}")
    print(f"plain training step : {1000 * p:8.2f} ms (median of {args.repeats} x {args.steps})")
    print(f"Starlight step      : {1000 * s:8.2f} ms")
    # the floor: a Starlight step is one forward/backward at the interpolated weights, so a plain step of the same model
    # and batch is the arithmetic it cannot go below; what is left is the interpolation and the update through it
    print(f"ratio Starlight/plain: {s / p:.3f}  (goal <= 1.25); distance to the floor (the plain step): {1000 * (s - p):+.2f} ms/step")
    print(
        f"re-alignment of {args.sources} sources (warm): {1000 * realign:.1f} ms = {1000 * realign / args.steps_per_epoch:.2f} ms/step "
        f"amortised over {args.steps_per_epoch} steps ({realign / args.steps_per_epoch / p:.3f} of a plain step)"
    )


if __name__ == "__main__":
    main()
