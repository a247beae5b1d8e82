"""Per-dataset file readers: find the files, download what is missing, parse them.

Readers return raw ``uint8`` arrays (:class:`RawSplits`); normalisation and subsetting
happen once in :mod:`stardomain.data.registry`. The parsers are written against the file
formats with numpy only, so no torchvision is needed: IDX in :mod:`stardomain.data.idx`, the
CIFAR python pickles (read without ever running code from them) in :mod:`stardomain.data.cifar`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stardomain.data import download as dl
from stardomain.data.cifar import CIFAR10, CIFAR100, CifarSource, RefusedGlobal, read_cifar_folder, safe_unpickle
from stardomain.data.idx import read_idx
from stardomain.data.raw import RawSplits, corrupt, one_line
from stardomain.errors import StardomainError

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "FASHION_MNIST",
    "IDX_FILES",
    "MNIST",
    "SYSTEM_DIRS",
    "SYSTEM_DIR_VARS",
    "CifarSource",
    "IdxSource",
    "RawSplits",
    "RefusedGlobal",
    "read_cifar",
    "read_digits",
    "read_idx",
    "read_idx_source",
    "safe_unpickle",
    "system_dirs",
]


# --------------------------------------------------------------------------- digits

DIGITS_SPLIT_SEED = 0  # fixed, not the caller's seed: every model of a zoo sees one split
DIGITS_TEST_SIZE = 360


def read_digits() -> RawSplits:
    """scikit-learn's bundled 8x8 digits, split 1437/360 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.uint8)[:, None]  # values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(images, labels, test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_SEED)
    return RawSplits(tr_x, tr_y, te_x, te_y, [str(i) for i in range(10)], scale=16.0)


# --------------------------------------------------------------------------- IDX

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass
class IdxSource:
    """Where an MNIST-format dataset lives and how to fetch it."""

    name: str
    folder: str  # <root>/<folder>/ is where downloads go
    torchvision_folder: str  # <root>/<torchvision_folder>/raw/ is also accepted
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # keyed by the .gz file name
    classes: tuple[str, ...]


MNIST = IdxSource(
    name="mnist",
    folder="mnist",
    torchvision_folder="MNIST",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    classes=tuple(str(i) for i in range(10)),
)

FASHION_MNIST = IdxSource(
    name="fashion_mnist",
    folder="fashion_mnist",
    torchvision_folder="FashionMNIST",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
)

# Read-only system copies searched after the data root (Debian: dataset-fashion-mnist).
# Debian recompresses the .gz files, so their MD5s differ; only downloads are checksummed.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
# ... each replaced by its environment variable where set: a folder, or empty for none (a machine without the
# package: .ci/run's second test pass hides the installed copy so)
SYSTEM_DIR_VARS: dict[str, str] = {"fashion_mnist": "STARDOMAIN_FASHION_MNIST_DIR"}


def system_dirs(name: str) -> tuple[Path, ...]:
    """The read-only system copies of dataset ``name`` searched after the data root."""
    var = SYSTEM_DIR_VARS.get(name)
    if var is not None and var in os.environ:
        value = os.environ[var]
        return (Path(value).expanduser(),) if value else ()
    return SYSTEM_DIRS.get(name, ())


def _scan_idx(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each IDX base name to its file in ``folder`` (``.gz`` preferred); list the missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for base in IDX_FILES:
        for candidate in (folder / f"{base}.gz", folder / base):
            if candidate.is_file():
                found[base] = candidate
                break
        else:
            missing.append(f"{base}.gz")
    return found, missing


def _read_idx_splits(src: IdxSource, files: dict[str, Path]) -> RawSplits:
    arrays = {}
    for base, path in files.items():
        is_images = "images" in base
        arrays[base] = read_idx(path, dtype_code=0x08, ndim=3 if is_images else 1)
    out = []
    for split in ("train", "t10k"):
        images = arrays[f"{split}-images-idx3-ubyte"]
        labels = arrays[f"{split}-labels-idx1-ubyte"]
        if len(images) != len(labels):
            raise StardomainError(
                f"{src.name}: {files[f'{split}-images-idx3-ubyte']} holds {len(images)} images but "
                f"{files[f'{split}-labels-idx1-ubyte']} holds {len(labels)} labels; delete the wrong one "
                f"so it is downloaded again"
            )
        if labels.size and int(labels.max()) >= len(src.classes):
            raise corrupt(files[f"{split}-labels-idx1-ubyte"], f"label {int(labels.max())} out of range")
        out += [images[:, None], labels.astype(np.int64)]
    if out[0].shape[1:] != out[2].shape[1:]:
        raise StardomainError(
            f"{src.name}: train images are {out[0].shape[2:]} but test images {out[2].shape[2:]}; the files come from different datasets"
        )
    return RawSplits(out[0], out[1], out[2], out[3], list(src.classes))


def read_idx_source(src: IdxSource, root: Path, download: bool) -> RawSplits:
    """Load an MNIST-format dataset from the first complete folder, downloading into
    ``<root>/<folder>`` what is missing there when no folder is complete."""
    primary = root / src.folder
    candidates = [primary, root / src.torchvision_folder / "raw", *system_dirs(src.name)]
    for folder in candidates:
        found, missing = _scan_idx(folder)
        if not missing:
            return _read_idx_splits(src, found)
    _, missing = _scan_idx(primary)
    if not download:
        raise StardomainError(
            f"{src.name}: missing {', '.join(missing)} in {primary} (downloads disabled: place the "
            f"files there, set --data-root, or allow downloading)"
        )
    for name in missing:
        try:
            dl.download_verified([m + name for m in src.mirrors], primary / name, src.md5[name])
        except dl.DownloadFailed as exc:
            _, still = _scan_idx(primary)
            raise StardomainError(
                f"{src.name}: missing {', '.join(still)} in {primary} (offline? place the files there "
                f"or set --data-root; download failed: {one_line(exc)})"
            ) from exc
    found, _ = _scan_idx(primary)
    return _read_idx_splits(src, found)


# --------------------------------------------------------------------------- CIFAR


def read_cifar(src: CifarSource, root: Path, download: bool) -> RawSplits:
    """Load a CIFAR release from ``<root>/<folder>/<inner>`` (or torchvision's
    ``<root>/<inner>``); else extract a present archive or download and extract it."""
    target_parent = root / src.folder
    for folder in (target_parent / src.inner, root / src.inner):
        if all((folder / f).is_file() for f in src.files):
            return read_cifar_folder(src, folder)
    target = target_parent / src.inner
    archive = next((a for a in (target_parent / src.archive, root / src.archive) if a.is_file()), None)
    downloaded = False
    if archive is None:
        missing = ", ".join(f for f in src.files if not (target / f).is_file())
        hint = f"place the files there, or {src.archive} in {target_parent}, or set --data-root"
        if not download:
            raise StardomainError(f"{src.name}: missing {missing} in {target} (downloads disabled: {hint}, or allow downloading)")
        archive = target_parent / src.archive
        try:
            dl.download_verified(src.urls, archive, src.md5)
        except dl.DownloadFailed as exc:
            raise StardomainError(f"{src.name}: missing {missing} in {target} (offline? {hint}; download failed: {one_line(exc)})") from exc
        downloaded = True
    else:
        got = dl.md5_file(archive)
        if got != src.md5:
            raise StardomainError(f"{src.name}: {archive} has MD5 {got}, expected {src.md5}; delete it so it is downloaded again")
    target_parent.mkdir(parents=True, exist_ok=True)
    dl.extract_into(archive, target_parent, src.inner, src.files)
    if downloaded:
        archive.unlink(missing_ok=True)  # the extracted folder is what we read; save the space
    return read_cifar_folder(src, target)
