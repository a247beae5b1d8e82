"""Images/s of TensorLoader (device-resident, vectorised crop+flip) versus a
torch.utils.data.DataLoader applying the same augmentation per sample.

Both pipelines serve identical work: CIFAR-shaped uint8 data, normalised float32
batches, random crop with 4-pixel zero padding and horizontal flip. TensorLoader
normalises once up front (as ``load_dataset`` does); the DataLoader path converts and
augments each sample in ``__getitem__``, the way torchvision transforms would (written
in plain torch here because torchvision is not a dependency).

    python benchmarks/bench_loader.py --n 10000 --batch-size 128 --device cpu
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from stardomain.data import TensorLoader

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)


class PerSampleCifar(TorchDataset):
    """uint8 images -> normalised float, padded, randomly cropped and flipped, one at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, padding: int = 4) -> None:
        self.images, self.labels, self.padding = images, labels, padding

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        # torchvision's order: RandomCrop(padding, black) -> RandomHorizontalFlip -> ToTensor -> Normalize
        p = self.padding
        img = self.images[i]
        h, w = img.shape[-2:]
        img = F.pad(img, (p, p, p, p))
        dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
        img = img[:, dy:dy + h, dx:dx + w]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img.float().div_(255) - MEAN) / STD, self.labels[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(batches, device: torch.device, epochs: int) -> float:
    """Images/s over ``epochs`` full passes after one warm-up pass (moves batches to device)."""
    def one_pass() -> int:
        n = 0
        for xb, yb in batches:
            xb = xb.to(device, non_blocking=True)
            n += len(xb)
        return n

    one_pass()
    _sync(device)
    start = time.perf_counter()
    total = sum(one_pass() for _ in range(epochs))
    _sync(device)
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="number of 3x32x32 images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to try")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads in the main process (default: torch's choice); "
                             "1 avoids OpenMP thrashing on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (args.n,), generator=gen)

    normalised = (images.float().div_(255) - MEAN) / STD
    black = tuple((-MEAN / STD).flatten().tolist())  # pad with black pixels, as the per-sample pipeline does
    loader = TensorLoader(normalised, labels, batch_size=args.batch_size, augment=True, device=device, fill=black)
    fast = _rate(loader, device, args.epochs)
    print(f"device={device} n={args.n} batch={args.batch_size} threads={torch.get_num_threads()} "
          f"epochs={args.epochs}")
    print(f"TensorLoader (vectorised augment on {device}):  {fast:12,.0f} images/s")

    for workers in args.workers:
        dataloader = DataLoader(
            PerSampleCifar(images, labels), batch_size=args.batch_size, shuffle=True,
            num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
        )
        slow = _rate(dataloader, device, args.epochs)
        print(f"DataLoader per-sample, num_workers={workers}:    {slow:12,.0f} images/s   "
              f"TensorLoader is {fast / slow:5.1f}x faster")


if __name__ == "__main__":
    main()
