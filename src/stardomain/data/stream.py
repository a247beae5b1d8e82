"""ImageNet-style folders streamed from disk: for data that does not fit in memory.

``StreamingImageFolder(root)`` lists ``root/train/<class>/*`` and ``root/val/<class>/*`` (or
``test/``) once, like the in-memory reader, and decodes images only when a batch needs them, in
:class:`torch.utils.data.DataLoader` worker processes (Pillow; torchvision is not needed):

* training: random-resized-crop to ``crop`` pixels (scale 0.08-1, aspect 3/4-4/3, torchvision's
  algorithm) and a horizontal flip with probability 1/2;
* evaluation (test split, BN re-estimation, barrier curves): shorter side resized to ``resize``,
  centre crop ``crop`` (256 / 224 for ImageNet).

Workers ship uint8 images (4x fewer bytes than float, through pinned memory on CUDA); the
ImageNet normalisation runs on the device. Every random choice of epoch ``e`` comes from
:func:`~stardomain.data.loader.epoch_seed` ``(seed, e)``: the order is one seeded permutation and
each sample's crop and flip come from its own seed drawn with it, so batches do not depend on the
number of workers, and a resumed run replays its epochs exactly.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from stardomain.data.imagefolder import list_image_folder, pillow
from stardomain.data.loader import epoch_seed
from stardomain.data.raw import one_line
from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.data.registry import Dataset

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "StreamingImageFolder", "random_resized_crop_box"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "test")


def random_resized_crop_box(
    width: int, height: int, rng: random.Random, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height): torchvision's RandomResizedCrop box.

    Ten tries at a random area share in ``scale`` and log-uniform aspect ratio in ``ratio``;
    when none fits, the largest centred box whose aspect ratio lies in ``ratio``.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class _Decoder:
    """Pickled into each worker: ``path -> uint8 (3, crop, crop)`` for training or evaluation."""

    def __init__(self, crop: int, resize: int, scale: tuple[float, float], ratio: tuple[float, float]) -> None:
        self.crop, self.resize, self.scale, self.ratio = crop, resize, scale, ratio

    def _open(self, path: Path, draft: int | None) -> Any:
        image = pillow()
        try:
            with image.open(path) as img:
                if draft:
                    img.draft("RGB", (draft, draft))  # JPEG: decode at a reduced scale still >= draft
                return img.convert("RGB")
        except Exception as exc:  # Pillow raises many types for damaged files
            raise StardomainError(
                f"imagefolder: cannot decode {path} ({type(exc).__name__}: {one_line(exc)}); fix or remove the file"
            ) from exc

    def train(self, path: Path, seed: int) -> np.ndarray:
        """Random-resized crop and flip, every choice from ``seed``."""
        image = pillow()
        rng = random.Random(seed)
        img = self._open(path, None)
        left, top, w, h = random_resized_crop_box(img.width, img.height, rng, self.scale, self.ratio)
        img = img.resize((self.crop, self.crop), image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            img = img.transpose(image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)

    def eval(self, path: Path) -> np.ndarray:
        """Shorter side to ``resize``, centre crop ``crop`` (torchvision's Resize + CenterCrop)."""
        image = pillow()
        img = self._open(path, self.resize)
        f = self.resize / min(img.width, img.height)
        w, h = max(self.crop, int(round(img.width * f))), max(self.crop, int(round(img.height * f)))
        img = img.resize((w, h), image.Resampling.BILINEAR)
        left, top = int(round((w - self.crop) / 2)), int(round((h - self.crop) / 2))
        img = img.crop((left, top, left + self.crop, top + self.crop))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


class _Files(TorchDataset):
    """Map-style dataset over files; items are an index (evaluation) or (index, seed) (training)."""

    def __init__(self, files: Sequence[Path], labels: np.ndarray, decoder: _Decoder) -> None:
        self.files, self.labels, self.decoder = list(files), labels, decoder

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, int]:
        if isinstance(item, tuple):
            i, seed = item
            arr = self.decoder.train(self.files[i], seed)
        else:
            i, arr = item, self.decoder.eval(self.files[item])
        return torch.from_numpy(np.ascontiguousarray(arr)), int(self.labels[i])


class _EpochSampler(Sampler):
    """Epoch ``epoch``'s (index, crop seed) pairs: one permutation and one seed per sample, from (seed, epoch)."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g)
        return iter(zip(order.tolist(), seeds.tolist()))


def _one_line_worker_error(exc: StardomainError) -> StardomainError:
    """A worker's StardomainError arrives wrapped in its traceback; keep the one line that says what to fix."""
    last = str(exc).strip().splitlines()[-1]
    prefix = "stardomain.errors.StardomainError: "
    return StardomainError(last[len(prefix) :] if last.startswith(prefix) else last)


class _DeviceBatches:
    """uint8 batches from a DataLoader, moved to the device and normalised there."""

    def __init__(self, loader: DataLoader, device: torch.device, mean: Sequence[float], std: Sequence[float]) -> None:
        self.loader, self.device = loader, device
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        try:
            for xb, yb in self.loader:
                xb = xb.to(self.device, non_blocking=True).float()
                yield (xb - self.mean) / self.std, yb.to(self.device, non_blocking=True)
        except StardomainError as exc:
            raise _one_line_worker_error(exc) from None


class StreamLoader(_DeviceBatches):
    """Training batches of a streamed folder; ``epoch`` is settable and advances after a full pass."""

    def __init__(
        self, loader: DataLoader, sampler: _EpochSampler, device: torch.device, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__(loader, device, mean, std)
        self.sampler = sampler

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.sampler.epoch = int(value)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        yield from super().__iter__()
        self.epoch = epoch + 1


class StreamingImageFolder:
    """An ImageNet-style folder read batch by batch (the SplitData protocol of :mod:`stardomain.data.protocol`).

    ``split_tensors`` materialises samples (for a barrier curve's seeded subsets) and refuses
    beyond ``max_materialize_gb``; training, evaluation and BN passes stream.
    """

    streaming = True
    name = "imagefolder"
    augment = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        crop: int = 224,
        resize: int = 256,
        num_workers: int | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        max_materialize_gb: float = 4.0,
    ) -> None:
        if crop < 1 or resize < crop:
            raise StardomainError(f"streaming imagefolder: need 1 <= crop <= resize (got crop={crop}, resize={resize})")
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise StardomainError(
                f"streaming imagefolder: scale must lie in (0, 1] and ratio be positive, low <= high (got scale={scale}, ratio={ratio})"
            )
        self.root = Path(root).expanduser()
        self.listing = list_image_folder(self.root)
        pillow()  # fail now, not in a worker
        self.crop, self.resize = int(crop), int(resize)
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        self.decoder = _Decoder(self.crop, self.resize, tuple(scale), tuple(ratio))  # type: ignore[arg-type]
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.max_materialize_gb = float(max_materialize_gb)
        self.classes = list(self.listing.classes)
        self.num_classes = len(self.classes)
        self.in_shape: tuple[int, ...] = (3, self.crop, self.crop)

    def __repr__(self) -> str:
        return (
            f"StreamingImageFolder({str(self.root)!r}, train={self.split_size('train')}, "
            f"test={self.split_size('test')}, num_classes={self.num_classes}, crop={self.crop}, resize={self.resize})"
        )

    def record(self) -> dict[str, Any]:
        """What rebuilds this data: the transform sizes make a different dataset from the in-memory reader's."""
        return {
            "name": self.name,
            "subset": None,
            "subset_seed": None,
            "image_size": self.crop,
            "stream": {"crop": self.crop, "resize": self.resize},
        }

    def black(self) -> tuple[float, ...]:
        """A black pixel in normalised units."""
        return tuple(-m / s for m, s in zip(self.mean, self.std))

    def _split(self, split: str) -> tuple[list[Path], np.ndarray]:
        if split not in SPLITS:
            raise StardomainError(f"unknown split {split!r}; splits are 'train' and 'test'")
        if split == "train":
            return self.listing.train_files, self.listing.train_y
        return self.listing.test_files, self.listing.test_y

    def split_size(self, split: str) -> int:
        return len(self._split(split)[0])

    @property
    def train_y(self) -> Tensor:
        """Training labels (cheap: no image is decoded), for stratified sampling and counts."""
        return torch.from_numpy(self.listing.train_y)

    @property
    def test_y(self) -> Tensor:
        return torch.from_numpy(self.listing.test_y)

    def _loader_options(self, device: torch.device) -> dict[str, Any]:
        workers = self.num_workers
        return {
            "num_workers": workers,
            "pin_memory": device.type == "cuda",
            "persistent_workers": False,
            **({"prefetch_factor": 4} if workers > 0 else {}),
        }

    def train_loader(self, batch_size: int, augment: bool, seed: int, device: str | torch.device = "cpu") -> StreamLoader:
        """Shuffled batches, random-resized-crop + flip when ``augment`` (else the evaluation crop)."""
        dev = torch.device(device)
        files, labels = self._split("train")
        sampler = _EpochSampler(len(files), seed, shuffle=True)
        items = _Files(files, labels, self.decoder)
        data: TorchDataset[Any] = items if augment else _EvalOf(items)
        options = self._loader_options(dev)
        if self.num_workers > 0:
            options["persistent_workers"] = True  # one worker start for the whole run, not per epoch
        loader = DataLoader(data, batch_size=int(batch_size), sampler=sampler, **options)
        return StreamLoader(loader, sampler, dev, self.mean, self.std)

    def index_batches(self, split: str, chunks: Iterable[Tensor | Sequence[int]], device: str | torch.device = "cpu") -> _DeviceBatches:
        """Un-augmented batches, one per chunk of sample indices, in that order (evaluation transform)."""
        dev = torch.device(device)
        files, labels = self._split(split)
        batches = [c.tolist() if torch.is_tensor(c) else list(c) for c in chunks]
        n = len(files)
        if any(not 0 <= i < n for b in batches for i in b):
            raise StardomainError(f"streaming imagefolder: sample indices must lie in [0, {n}) for the {split} split")
        loader = DataLoader(_Files(files, labels, self.decoder), batch_sampler=batches, **self._loader_options(dev))
        return _DeviceBatches(loader, dev, self.mean, self.std)

    def eval_batches(
        self, split: str, batch_size: int = 1024, device: str | torch.device = "cpu", indices: Tensor | None = None
    ) -> _DeviceBatches:
        """Consecutive batches of the split (or of ``indices``), evaluation transform."""
        order = torch.arange(self.split_size(split)) if indices is None else torch.as_tensor(indices).reshape(-1)
        return self.index_batches(split, order.split(int(batch_size)), device)

    def split_tensors(self, split: str, indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(x, y) of ``indices`` (default: the whole split) decoded into memory, normalised, on the CPU."""
        n = self.split_size(split) if indices is None else len(indices)
        gb = n * 3 * self.crop * self.crop * 4 / 2**30
        if gb > self.max_materialize_gb:
            raise StardomainError(
                f"streaming imagefolder: holding {n} {split} images in memory needs {gb:.1f} GB "
                f"(max_materialize_gb={self.max_materialize_gb:g}); evaluate a seeded subset (bn_samples, "
                f"eval_train_samples, eval_test_samples) or raise max_materialize_gb"
            )
        xs, ys = [], []
        for xb, yb in self.eval_batches(split, 256, "cpu", indices):
            xs.append(xb)
            ys.append(yb)
        if not xs:
            return torch.empty((0, *self.in_shape)), torch.empty((0,), dtype=torch.long)
        return torch.cat(xs), torch.cat(ys)


class _EvalOf(TorchDataset):
    """Training items (index, seed) decoded with the evaluation transform (a run without augmentation)."""

    def __init__(self, files: _Files) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        return self.files[item[0]]


def stream_resize(crop: int) -> int:
    """The evaluation resize for a crop: 256 for 224, in the same 8:7 ratio for other sizes."""
    return int(round(crop * 256 / 224))


def open_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    subset: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    stream: bool = False,
    num_workers: int | None = None,
) -> Dataset | StreamingImageFolder:
    """The dataset of an experiment: in memory (:func:`~stardomain.data.load_dataset`), or streamed.

    ``stream`` (image folders only) reads ``root`` batch by batch, ``image_size`` being the crop
    (default 224, evaluation resize in the 256:224 ratio).
    """
    from stardomain.data.registry import IMAGEFOLDER, canonical_name, load_dataset

    if not stream:
        return load_dataset(name, root=root, subset=subset, seed=seed, image_size=image_size)
    if canonical_name(name) != IMAGEFOLDER:
        raise StardomainError(f"stream: only image folders are streamed (got dataset '{name}'); remove stream")
    if subset is not None:
        raise StardomainError("stream: a streamed folder is used whole; remove subset (or make a smaller folder)")
    if not root:
        raise StardomainError("stream: needs the folder holding train/ and val/ (data_root / --data-root)")
    crop = 224 if image_size is None else int(image_size)
    return StreamingImageFolder(root, crop=crop, resize=stream_resize(crop), num_workers=num_workers)
