"""Dataset registry: names -> normalised in-memory tensors.

Every dataset the experiments use is small enough to hold in memory as one float32
tensor per split, which is what lets :class:`~stardomain.data.loader.TensorLoader`
serve batches as index slices (no per-sample Python work).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from torch import Tensor

from stardomain._util.plugins import check_call, is_import_path, resolve
from stardomain.data import sources
from stardomain.data.files import file_key, is_file_dataset, read_file_dataset
from stardomain.data.imagefolder import read_image_folder
from stardomain.data.roots import resolve_data_root
from stardomain.defaults import DEFAULT_MATCHING_SAMPLES
from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.data.loader import TensorLoader
    from stardomain.data.protocol import AnyData


@dataclass(repr=False, eq=False)
class Dataset:
    """Both splits of a dataset, normalised, as CPU tensors (compared by identity:
    element-wise tensor equality has no single truth value)."""

    name: str
    train_x: Tensor  # float32, (N, C, H, W), already normalised
    train_y: Tensor  # int64, (N,)
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    in_shape: tuple[int, ...]  # (C, H, W); (features,) for a tabular file dataset
    mean: tuple[float, ...]  # per channel, what was subtracted (on the [0, 1] scale)
    std: tuple[float, ...]  # per channel, what was divided by
    classes: list[str]
    augment: bool  # whether crop+flip augmentation suits this dataset
    subset: int | None = None  # training samples kept by load_dataset(subset=...), None = the whole split
    subset_seed: int | None = None  # the seed that drew that subset (recorded so later stages redraw the same one)
    sha256: str | None = None  # a file dataset (``file:...``): SHA-256 of the file, so a checkpoint names its data

    def black(self) -> tuple[float, ...]:
        """A black pixel in normalised units: the crop padding of torchvision's recipe."""
        return tuple(-m / s for m, s in zip(self.mean, self.std))

    def record(self) -> dict[str, Any]:
        """What rebuilds exactly this training data: stored in checkpoints, checked by every later stage."""
        out = {
            "name": self.name,
            "subset": self.subset,
            "subset_seed": self.subset_seed,
            "image_size": int(self.in_shape[-1]) if accepts_image_size(self.name) else None,
        }
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        return out

    # --- the SplitData protocol (stardomain.data.protocol), shared with streamed datasets ---

    def split_size(self, split: str) -> int:
        """Samples in ``split`` ("train" or "test")."""
        return len(self.split_tensors(split)[1])

    def split_tensors(self, split: str, indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(x, y) of ``split`` (CPU, normalised), or of its samples ``indices`` in that order."""
        if split not in ("train", "test"):
            raise StardomainError(f"unknown split {split!r}; splits are 'train' and 'test'")
        x, y = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        return (x, y) if indices is None else (x[indices], y[indices])

    def train_loader(self, batch_size: int, augment: bool, seed: int, device: str | torch.device = "cpu") -> TensorLoader:
        """Shuffled (and, where the data suits it, crop+flip augmented) batches on ``device``, seeded by (seed, epoch)."""
        from stardomain.data.loader import TensorLoader

        return TensorLoader(
            self.train_x,
            self.train_y,
            batch_size=batch_size,
            shuffle=True,
            augment=augment and self.augment,
            fill=self.black(),
            seed=seed,
            device=device,
        )

    def eval_batches(
        self, split: str, batch_size: int = 1024, device: str | torch.device = "cpu", indices: Tensor | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Un-augmented (x, y) batches of ``split`` (or of ``indices`` of it, in order) on ``device``."""
        from stardomain.data.loader import slice_batches

        x, y = self.split_tensors(split, indices)
        return slice_batches(x.to(device), y.to(device), batch_size)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.train_x.shape)}, test={tuple(self.test_x.shape)}, "
            f"num_classes={self.num_classes}, augment={self.augment})"
        )


@dataclass(frozen=True)
class _Spec:
    reader: Callable[..., sources.RawSplits]  # (root, download), or (root, download, image_size) when sized
    mean: tuple[float, ...] | None  # None: per-channel statistics of the train split
    std: tuple[float, ...] | None
    augment: bool
    sized: bool = False  # images are resized on reading: load_dataset's image_size applies


IMAGEFOLDER = "imagefolder"
DEFAULT_IMAGE_SIZE = 64


def _read_imagefolder(root: str | os.PathLike[str] | None, download: bool, image_size: int) -> sources.RawSplits:
    """``root`` is the dataset folder itself (no cache default: there is nothing to download)."""
    if root is None or str(root) == "":
        raise StardomainError(
            "imagefolder needs the dataset folder (root=DIR, or --data-root DIR on the command line) "
            "holding train/<class>/ and val/<class>/ (or test/<class>/)"
        )
    return read_image_folder(Path(root), image_size)


_SPECS: dict[str, _Spec] = {
    "digits": _Spec(lambda root, download: sources.read_digits(), None, None, augment=False),
    "mnist": _Spec(
        lambda root, download: sources.read_idx_source(sources.MNIST, resolve_data_root(root), download),
        (0.1307,),
        (0.3081,),
        augment=False,
    ),
    "fashion_mnist": _Spec(
        lambda root, download: sources.read_idx_source(sources.FASHION_MNIST, resolve_data_root(root), download),
        (0.2860,),
        (0.3530,),
        augment=False,
    ),
    "cifar10": _Spec(
        lambda root, download: sources.read_cifar(sources.CIFAR10, resolve_data_root(root), download),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        augment=True,
    ),
    "cifar100": _Spec(
        lambda root, download: sources.read_cifar(sources.CIFAR100, resolve_data_root(root), download),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        augment=True,
    ),
    IMAGEFOLDER: _Spec(_read_imagefolder, None, None, augment=True, sized=True),
}

_ALIASES = {
    "fashionmnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "cifar_10": "cifar10",
    "cifar_100": "cifar100",
    "sklearn_digits": "digits",
    "image_folder": IMAGEFOLDER,
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_SPECS)


def _key(name: str) -> str:
    """Registry key of ``name``: case, hyphens and aliases folded (may not be registered)."""
    key = str(name).strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def accepts_image_size(name: str) -> bool:
    """Whether :func:`load_dataset` takes ``image_size`` for ``name`` (False for unknown names)."""
    key = _key(name)
    return key in _SPECS and _SPECS[key].sized


def canonical_name(name: str) -> str:
    """The registry key of a dataset name (``fmnist``, ``Fashion-MNIST`` -> ``fashion_mnist``).

    Resolve once at the edge (CLI, YAML, Python API) and use only the key after it: recipes,
    checkpoint metadata and zoo identity are looked up by key, never by what the user typed.
    Your own data: ``file:path.npz`` (becomes ``file:`` + the absolute path) or an import path
    ``pkg.module:make`` (a function returning a :class:`Dataset`; its module must be imported).
    """
    if is_file_dataset(name) or str(name).endswith((".npz", ".safetensors")):
        return file_key(name)
    if is_import_path(name):
        return str(name).strip()
    key = _key(name)
    if key not in _SPECS:
        raise StardomainError(f"unknown dataset {name!r}; valid names: {', '.join(available_datasets())}")
    return key


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` samples drawn per class in proportion to class frequency.

    Quotas are ``floor(n * share)`` plus one for the classes with the largest
    remainders (ties broken by the seeded generator), so the result depends only on
    (labels, n, seed).
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    extra = n - int(quota.sum())
    if extra:
        order = np.lexsort((rng.random(len(classes)), -(exact - quota)))
        quota[order[:extra]] += 1
    picks = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks))


def matching_sample(dataset: AnyData, n: int = DEFAULT_MATCHING_SAMPLES, seed: int = 0) -> Tensor:
    """The training inputs activation matching correlates on: seeded and class-stratified.

    Why not ``train_x[:n]``: image folders (and any class-sorted source) store samples class
    by class, so a prefix sees one or two classes. Every caller uses this one sample, so the
    CLI, the pipeline and Starlight align on the same data for the same (dataset, n, seed).
    """
    labels = dataset.train_y.cpu().numpy()
    n = min(int(n), len(labels))
    idx = stratified_subset(labels, n, seed)
    from stardomain.data.protocol import split_tensors  # a streamed folder decodes just these samples

    return split_tensors(dataset, "train", torch.from_numpy(idx))[0]


def _channel_stats(images: np.ndarray, scale: float, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) on the ``[0, 1]`` scale, without a float copy.

    Integer sums of values and squares are exact, chunk by chunk, so memory stays at one
    chunk however large the split (an ImageNet folder at 64 px is gigabytes as float64).
    """
    c = images.shape[1]
    total = np.zeros(c, dtype=np.int64)
    squares = np.zeros(c, dtype=np.int64)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.int64)
        total += block.sum(axis=(0, 2, 3))
        squares += (block * block).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = np.maximum(squares / count - mean * mean, 0.0)
    std = np.where(var > 0, np.sqrt(var), scale)  # a constant channel: divide by 1, not 0
    return tuple(float(v) for v in mean / scale), tuple(float(v) for v in std / scale)


def _normalise(images: np.ndarray, scale: float, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 (N, C, H, W) -> float32 ``(x / scale - mean) / std``, in place on one copy."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))  # the one copy (source may be read-only)
    x.div_(scale)
    x.sub_(torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    x.div_(torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
    return x


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    subset: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> Dataset:
    """Load dataset ``name`` as normalised CPU tensors.

    ``root`` follows :func:`~stardomain.data.roots.resolve_data_root`; missing files are
    downloaded (MD5-checked) when ``download`` is true. ``subset=n`` keeps ``n`` training
    samples, class-stratified and chosen by ``seed`` (for CPU-sized experiments); the test
    split is always complete so accuracies stay comparable, and normalisation constants
    do not depend on the subset. Give every model of a zoo the same ``seed`` so they
    share the subset. ``digits`` ships with scikit-learn (offline; ``root`` and
    ``download`` are ignored) and its train/test split is fixed, independent of ``seed``.

    ``imagefolder`` reads an ImageNet-style folder offline (see
    :mod:`stardomain.data.imagefolder`): ``root`` is that folder and is required,
    ``download`` is ignored, and every image becomes ``image_size`` x ``image_size``
    (default 64), normalised by the train split's per-channel statistics. ``image_size``
    applies to no other dataset.
    """
    key = canonical_name(name)
    if key not in _SPECS:
        return _load_user_dataset(key, subset, seed)
    spec = _SPECS[key]
    if spec.sized:
        size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise StardomainError(f"image_size={image_size!r} for {key}: give a whole number of pixels >= 1 (default {DEFAULT_IMAGE_SIZE})")
        raw = spec.reader(root, download, int(size))
    else:
        if image_size is not None:
            raise StardomainError(
                f"image_size={image_size!r} only applies to {IMAGEFOLDER} ({key} images have a fixed size); leave it unset"
            )
        raw = spec.reader(root, download)
    if spec.sized and (spec.mean is None or spec.std is None):
        mean, std = _channel_stats(raw.train_x, raw.scale)
    elif spec.mean is None or spec.std is None:
        # per-channel statistics of the full train split (digits ships none)
        scaled = raw.train_x.astype(np.float64) / raw.scale
        mean = tuple(float(v) for v in scaled.mean(axis=(0, 2, 3)))
        std = tuple(float(v) for v in scaled.std(axis=(0, 2, 3)))
    else:
        mean, std = spec.mean, spec.std
    train_x, train_y = raw.train_x, raw.train_y
    if subset is not None:
        if isinstance(subset, bool) or not isinstance(subset, (int, np.integer)) or not 1 <= subset <= len(train_y):
            raise StardomainError(f"subset={subset!r} for {key}: give a whole number from 1 to {len(train_y)} (the train size), or None")
        idx = stratified_subset(train_y, int(subset), seed)
        train_x, train_y = train_x[idx], train_y[idx]
    c, h, w = (int(s) for s in raw.train_x.shape[1:])
    return Dataset(
        name=key,
        train_x=_normalise(train_x, raw.scale, mean, std),
        train_y=torch.from_numpy(np.ascontiguousarray(train_y, dtype=np.int64)),
        test_x=_normalise(raw.test_x, raw.scale, mean, std),
        test_y=torch.from_numpy(np.ascontiguousarray(raw.test_y, dtype=np.int64)),
        num_classes=len(raw.classes),
        in_shape=(c, h, w),
        mean=tuple(mean),
        std=tuple(std),
        classes=list(raw.classes),
        augment=spec.augment,
        subset=None if subset is None else int(subset),
        subset_seed=None if subset is None else int(seed),
    )


def _load_user_dataset(key: str, subset: int | None, seed: int) -> Dataset:
    """A ``file:`` dataset or one from an import path, with the same subset rule as the registry's."""
    if is_file_dataset(key):
        d = read_file_dataset(key)
        ds = Dataset(
            name=key,
            train_x=d.train_x,
            train_y=d.train_y,
            test_x=d.test_x,
            test_y=d.test_y,
            num_classes=d.num_classes,
            in_shape=d.in_shape,
            mean=d.mean,
            std=d.std,
            classes=[str(i) for i in range(d.num_classes)],
            augment=False,
            sha256=d.sha256,
        )
    else:
        factory = resolve(key, "dataset factory")  # a name from a checkpoint: only code the user named
        check_call(factory, f"dataset factory {key!r}")  # make() takes no arguments: checked before the call
        made = factory()
        if not isinstance(made, Dataset):
            raise StardomainError(f"dataset factory {key!r} returned a {type(made).__name__}, not a stardomain.data.Dataset")
        ds = dataclasses.replace(made, name=key)  # checkpoints record the factory that rebuilds it
    if subset is None:
        return ds
    if isinstance(subset, bool) or not isinstance(subset, (int, np.integer)) or not 1 <= subset <= len(ds.train_y):
        raise StardomainError(f"subset={subset!r} for {key}: give a whole number from 1 to {len(ds.train_y)} (the train size), or None")
    idx = torch.from_numpy(stratified_subset(ds.train_y.numpy(), int(subset), seed))
    return dataclasses.replace(ds, train_x=ds.train_x[idx], train_y=ds.train_y[idx], subset=int(subset), subset_seed=int(seed))
