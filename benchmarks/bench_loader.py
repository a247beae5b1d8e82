"""Images/s of TensorLoader (device-resident, vectorised crop+flip) versus a
torch.utils.data.DataLoader applying the same augmentation per sample.

Both pipelines serve identical work: CIFAR-shaped uint8 data, normalised float32
batches, random crop with 4-pixel zero padding and horizontal flip. TensorLoader
normalises once up front (as ``load_dataset`` does); the DataLoader path converts and
augments each sample in ``__getitem__``, the way torchvision transforms would (written
in plain torch here because torchvision is not a dependency).

It also prints the images/s of the streaming loader (``StreamingImageFolder``: JPEG decoding,
random-resized crop to 224 and flip in DataLoader workers, normalisation on the device) over a
generated ImageNet-style folder of photo-sized JPEGs.

    python benchmarks/bench_loader.py --n 10000 --batch-size 128 --device cpu
    python benchmarks/bench_loader.py --n 2000 --workers 2 --stream-images 512 --stream-workers 0 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timing import images_per_second
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from stardomain.data import StreamingImageFolder, TensorLoader

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
        img = img[:, dy : dy + h, dx : dx + w]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img.float().div_(255) - MEAN) / STD, self.labels[i]


def _rate(batches, device: torch.device, epochs: int) -> float:
    """Images/s over ``epochs`` full passes after one warm-up pass (moves batches to device)."""

    def one_pass() -> int:
        n = 0
        for xb, _yb in batches:
            xb = xb.to(device, non_blocking=True)
            n += len(xb)
        return n

    return images_per_second(one_pass, device, epochs)


def write_jpeg_folder(root: Path, n: int, size: tuple[int, int], classes: int = 10) -> Path:
    """``n`` photo-sized JPEGs (smooth colour gradients plus noise: photo-like file sizes) in class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    ramp = np.linspace(0, 1, w)[None, :, None] * np.linspace(0, 1, h)[:, None, None]
    for i in range(n):
        for split in ("train", "val") if i < classes else ("train",):
            folder = root / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = ramp * rng.integers(0, 256, 3) + rng.normal(0, 12, (h, w, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.JPEG", quality=90)
    return root


def stream_rate(root: Path, batch_size: int, device: torch.device, workers: int, crop: int, resize: int) -> float:
    """Images/s of one streamed training epoch (random-resized crop + flip), after a warm-up epoch."""
    ds = StreamingImageFolder(root, crop=crop, resize=resize, num_workers=workers)
    loader = ds.train_loader(batch_size=batch_size, augment=True, seed=0, device=device)
    return _rate(loader, device, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="number of 3x32x32 images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to try")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads in the main process (default: torch's choice); 1 avoids OpenMP thrashing on a busy machine",
    )
    parser.add_argument("--stream-images", type=int, default=512, help="JPEGs in the generated folder (0: skip)")
    parser.add_argument("--stream-size", default="500x375", help="their size WxH (ImageNet's typical photo)")
    parser.add_argument("--stream-workers", type=int, nargs="+", default=[2], help="StreamingImageFolder num_workers to try")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--resize", type=int, default=256)
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
    print(f"device={device} n={args.n} batch={args.batch_size} threads={torch.get_num_threads()} epochs={args.epochs}")
    print(f"TensorLoader (vectorised augment on {device}):  {fast:12,.0f} images/s")

    for workers in args.workers:
        dataloader = DataLoader(
            PerSampleCifar(images, labels),
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )
        slow = _rate(dataloader, device, args.epochs)
        print(f"DataLoader per-sample, num_workers={workers}:    {slow:12,.0f} images/s   TensorLoader is {fast / slow:5.1f}x faster")

    if args.stream_images > 0:
        w, h = (int(v) for v in args.stream_size.lower().split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            root = write_jpeg_folder(Path(tmp), args.stream_images, (w, h))
            for workers in args.stream_workers:
                rate = stream_rate(root, args.batch_size, device, workers, args.crop, args.resize)
                print(f"StreamingImageFolder {w}x{h} JPEG -> {args.crop} crop, num_workers={workers}: {rate:10,.0f} images/s")


if __name__ == "__main__":
    main()
