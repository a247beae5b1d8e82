"""Training images/s of ResNet-18 on CIFAR-shaped data: a plain fp32 DataLoader loop vs stardomain's path.

Both train the same model (ResNet-18, CIFAR variant) with the same SGD recipe, batch size and
crop+flip augmentation, on synthetic tensors (no download), on one device, in one run:

* plain: ``torch.utils.data.DataLoader`` with per-sample augmentation in worker processes
  (as torchvision transforms would do it), pinned memory, fp32, NCHW, ``loss.item()`` every step;
* ours: ``stardomain.training.loop.train_model`` with the whole dataset and its augmentation on the device
  (TensorLoader), ``Recipe(precision=bf16, channels_last=True, compile=True)``, cudnn autotuning,
  no host synchronisation inside an epoch.

The first epoch of each is a warm-up (worker start, cudnn autotuning, torch.compile) and is not timed.
The goal on a GPU is >= 3x. ``--device cpu`` (tiny sizes) is a smoke test of the same script:

    python benchmarks/bench_gpu.py                                  # a GPU: full CIFAR size
    python benchmarks/bench_gpu.py --device cpu --n 512 --width 0.125 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_loader import MEAN, STD, PerSampleCifar
from timing import images_per_second
from torch.utils.data import DataLoader

from stardomain import models
from stardomain._util.device import resolve_device
from stardomain.data import Dataset
from stardomain.training.loop import Recipe, make_optimizer, train_model


def synthetic(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped uint8 images and labels (10 classes)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def plain_loop(
    images: torch.Tensor, labels: torch.Tensor, recipe: Recipe, width: float, device: torch.device, epochs: int, workers: int
) -> float:
    """Images/s of the textbook loop over ``epochs`` timed epochs (after one warm-up epoch)."""
    torch.manual_seed(0)
    model = models.create("resnet18", 10, (3, 32, 32), width=width).to(device)
    opt = make_optimizer(model.parameters(), recipe)
    loader = DataLoader(
        PerSampleCifar(images, labels),
        batch_size=recipe.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )

    def epoch() -> int:
        seen = 0
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _ = loss.item()  # the usual running-loss print: one host sync per step
            seen += len(yb)
        return seen

    return images_per_second(epoch, device, epochs)


def our_path(images: torch.Tensor, labels: torch.Tensor, recipe: Recipe, width: float, device: torch.device, epochs: int) -> float:
    """Images/s of train_model over epochs 2..epochs+1 (epoch 1 warms up, compile included)."""
    x = (images.float().div_(255) - MEAN) / STD
    ds = Dataset(
        "synthetic",
        x,
        labels,
        x[:256],
        labels[:256],
        10,
        (3, 32, 32),
        tuple(MEAN.flatten().tolist()),
        tuple(STD.flatten().tolist()),
        [str(i) for i in range(10)],
        augment=True,
    )
    torch.manual_seed(0)
    model = models.create("resnet18", 10, (3, 32, 32), width=width)
    stamps: list[float] = []
    # evaluation only after the last (untimed) epoch: on_epoch of epoch k marks the end of its training
    train_model(
        model,
        ds,
        recipe.replace(epochs=epochs + 2),
        seed=0,
        device=device,
        progress=False,
        eval_every=epochs + 2,
        on_epoch=lambda record: stamps.append(time.perf_counter()),
    )
    return len(x) * epochs / (stamps[epochs] - stamps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (a GPU when present), cuda, cuda:1, cpu")
    parser.add_argument("--n", type=int, default=50000, help="training images (CIFAR-10 has 50,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0, help="ResNet-18 width multiplier (1 = 11.2M parameters)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one warm-up epoch")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the plain loop")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="torch.compile in our path; auto: on for CUDA, off on a CPU (inductor takes minutes there)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU runs)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    compile_ = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    images, labels = synthetic(args.n)
    recipe = Recipe(lr=0.1, epochs=1, batch_size=args.batch_size)

    plain = plain_loop(images, labels, recipe, args.width, device, args.epochs, args.workers)
    nhwc = device.type == "cuda"  # channels_last training is a CUDA option (execution.check_channels_last)
    ours = our_path(
        images, labels, recipe.replace(precision=args.precision, channels_last=nhwc, compile=compile_), args.width, device, args.epochs
    )
    figures = {
        "device": name,
        "torch": torch.__version__,
        "n": args.n,
        "batch_size": args.batch_size,
        "width": args.width,
        "epochs_timed": args.epochs,
        "workers": args.workers,
        "precision": args.precision,
        "channels_last": nhwc,
        "compile": compile_,
        "plain_images_per_s": plain,
        "ours_images_per_s": ours,
        "speedup": ours / plain,
    }
    print(
        f"ResNet-18 (width {args.width:g}) on {args.n} CIFAR-shaped images, batch {args.batch_size}, "
        f"{args.epochs} timed epochs, device {name}, torch {torch.__version__}"
    )
    print(f"plain fp32 DataLoader loop ({args.workers} workers):      {plain:12,.0f} images/s")
    print(
        f"stardomain ({args.precision}{', channels_last' if nhwc else ''}, device loader{', compile' if compile_ else ''}): "
        f"{ours:12,.0f} images/s   {ours / plain:5.2f}x"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
