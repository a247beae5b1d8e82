"""Per-dataset file readers: find the files, download what is missing, parse them.

Readers return raw ``uint8`` arrays (:class:`RawSplits`); normalisation and subsetting
happen once in :mod:`stardomain.data.registry`. Parsers are written against the file
formats (IDX, the CIFAR python pickles) with numpy only, so no torchvision is needed.

CIFAR files are pickles, and unpickling can run arbitrary code; :func:`safe_unpickle`
therefore resolves only the handful of globals a CIFAR batch really contains (numpy's
array reconstruction, ``bytes`` and a latin-1-only ``codecs.encode``) and refuses
everything else.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stardomain.data import download as dl
from stardomain.errors import StardomainError


@dataclass
class RawSplits:
    """A dataset as stored on disk: ``uint8`` images (N, C, H, W) in ``[0, scale]``."""

    train_x: np.ndarray
    train_y: np.ndarray  # int64
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    scale: float = 255.0  # largest pixel value; images are divided by it


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


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

_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _corrupt(path: Path, detail: str) -> StardomainError:
    return StardomainError(f"{path} is corrupt or truncated ({_one_line(detail)}); delete it so it is downloaded again")


def _read_bytes(path: Path) -> bytes:
    """File contents, transparently gunzipped (detected by magic bytes, not the suffix)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StardomainError(f"cannot read {path} ({_one_line(exc)})") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise _corrupt(path, f"gzip: {exc}") from exc
    return raw


def read_idx(path: str | os.PathLike[str], dtype_code: int | None = None, ndim: int | None = None) -> np.ndarray:
    """Parse an IDX file (``.gz`` or plain) into a numpy array, validating its header.

    The header is two zero bytes, a type code, the number of dimensions and one
    big-endian uint32 per dimension; the payload must hold exactly their product of
    items. ``dtype_code``/``ndim`` pin the expected magic (0x08/3 for images, 0x08/1
    for labels).
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise _corrupt(path, f"{len(raw)} bytes, shorter than the IDX header")
    code, dims_n = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES:
        raise _corrupt(path, f"bad IDX magic number 0x{raw[:4].hex()}")
    if (dtype_code is not None and code != dtype_code) or (ndim is not None and dims_n != ndim):
        want = f"0x0000{dtype_code or code:02x}{ndim or dims_n:02x}"
        raise _corrupt(path, f"IDX magic 0x{raw[:4].hex()}, expected {want}")
    header = 4 + 4 * dims_n
    if len(raw) < header:
        raise _corrupt(path, "header cut short")
    dims = struct.unpack(f">{dims_n}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: dimensions whose product overflows int64 stay exact
    found = len(raw) - header
    if found != expected:
        raise _corrupt(path, f"header promises {expected} data bytes for shape {dims}, found {found}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


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
            raise _corrupt(files[f"{split}-labels-idx1-ubyte"], f"label {int(labels.max())} out of range")
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
                f"or set --data-root; download failed: {_one_line(exc)})"
            ) from exc
    found, _ = _scan_idx(primary)
    return _read_idx_splits(src, found)


# --------------------------------------------------------------------------- safe pickles


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode``: Python 3 writes ``bytes`` at protocol 2 as
    ``codecs.encode(str, 'latin1')``; nothing else is allowed through it."""
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") != "latin1":
        raise RefusedGlobal(f"_codecs.encode with {encoding!r}")
    return text.encode("latin-1")


# numpy moved _reconstruct from numpy.core to numpy._core in 2.0; take whichever this
# numpy uses from an array's own __reduce__ rather than importing a deprecated path.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): bytes,
    ("__builtin__", "bytes"): bytes,
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal("a persistent id")


def safe_unpickle(path: str | os.PathLike[str], what: str = "dataset") -> Any:
    """Unpickle a data file without ever executing code from it.

    Strings from Python 2 pickles stay ``bytes`` (``encoding='bytes'``, as the CIFAR
    authors recommend). A forbidden global raises a StardomainError naming it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StardomainError(f"cannot read {path} ({_one_line(exc)})") from exc
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise StardomainError(
            f"{what}: refused to load {path}: it asks for {exc}, which a {what} file never needs "
            f"(tampered or not a {what} file); delete it so it is downloaded again"
        ) from exc
    except Exception as exc:  # a damaged pickle can raise almost anything
        raise _corrupt(path, f"unpickling: {type(exc).__name__}: {exc}") from exc


def _str_keys(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _corrupt(path, f"expected a dict, found {type(obj).__name__}")
    return {(k.decode("latin-1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- CIFAR


@dataclass
class CifarSource:
    """One CIFAR python-pickle release (folder layout, archive, keys)."""

    name: str
    folder: str  # <root>/<folder>/<inner>/ is where downloads go
    inner: str
    archive: str
    urls: tuple[str, ...]
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    files: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.files = (*self.train_files, *self.test_files, self.meta_file)


CIFAR10 = CifarSource(
    name="cifar10",
    folder="cifar10",
    inner="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
)

CIFAR100 = CifarSource(
    name="cifar100",
    folder="cifar100",
    inner="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
)


def _read_cifar_batch(src: CifarSource, path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _str_keys(safe_unpickle(path, src.name), path)
    data, labels = batch.get("data"), batch.get(src.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _corrupt(path, f"'data' should be uint8 (N, 3072), found {desc}")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise _corrupt(path, f"'{src.label_key}' is not a list of integers") from exc
    if len(y) != len(data):
        raise _corrupt(path, f"{len(data)} images but {len(y)} '{src.label_key}'")
    if y.size and (y.min() < 0 or y.max() >= src.num_classes):
        raise _corrupt(path, f"label {int(y.max())} outside 0..{src.num_classes - 1}")
    # rows are 1024 red, 1024 green, 1024 blue values, each plane row-major 32x32
    return data.reshape(-1, 3, 32, 32), y


def _read_cifar_folder(src: CifarSource, folder: Path) -> RawSplits:
    meta = _str_keys(safe_unpickle(folder / src.meta_file, src.name), folder / src.meta_file)
    names = meta.get(src.names_key)
    if not isinstance(names, list) or len(names) != src.num_classes:
        raise _corrupt(folder / src.meta_file, f"'{src.names_key}' should list {src.num_classes} names")
    splits = []
    for files in (src.train_files, src.test_files):
        parts = [_read_cifar_batch(src, folder / f) for f in files]
        splits.append(np.concatenate([p[0] for p in parts]))
        splits.append(np.concatenate([p[1] for p in parts]))
    return RawSplits(splits[0], splits[1], splits[2], splits[3], [_text(n) for n in names])


def read_cifar(src: CifarSource, root: Path, download: bool) -> RawSplits:
    """Load a CIFAR release from ``<root>/<folder>/<inner>`` (or torchvision's
    ``<root>/<inner>``); else extract a present archive or download and extract it."""
    target_parent = root / src.folder
    for folder in (target_parent / src.inner, root / src.inner):
        if all((folder / f).is_file() for f in src.files):
            return _read_cifar_folder(src, folder)
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
            raise StardomainError(
                f"{src.name}: missing {missing} in {target} (offline? {hint}; download failed: {_one_line(exc)})"
            ) from exc
        downloaded = True
    else:
        got = dl.md5_file(archive)
        if got != src.md5:
            raise StardomainError(f"{src.name}: {archive} has MD5 {got}, expected {src.md5}; delete it so it is downloaded again")
    target_parent.mkdir(parents=True, exist_ok=True)
    dl.extract_into(archive, target_parent, src.inner, src.files)
    if downloaded:
        archive.unlink(missing_ok=True)  # the extracted folder is what we read; save the space
    return _read_cifar_folder(src, target)
