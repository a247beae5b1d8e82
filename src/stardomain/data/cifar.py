"""The CIFAR python-pickle releases: where each keeps what, and a parser that never runs code from a file.

CIFAR files are pickles, and unpickling can run arbitrary code; :func:`safe_unpickle`
therefore resolves only the handful of globals a CIFAR batch really contains (numpy's
array reconstruction, ``bytes`` and a latin-1-only ``codecs.encode``) and refuses
everything else. Finding, downloading and extracting the files is
:func:`stardomain.data.sources.read_cifar`'s.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stardomain.data.raw import RawSplits, corrupt, one_line
from stardomain.errors import StardomainError

__all__ = ["CIFAR10", "CIFAR100", "CifarSource", "RefusedGlobal", "safe_unpickle"]


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
        raise StardomainError(f"cannot read {path} ({one_line(exc)})") from exc
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise StardomainError(
            f"{what}: refused to load {path}: it asks for {exc}, which a {what} file never needs "
            f"(tampered or not a {what} file); delete it so it is downloaded again"
        ) from exc
    except Exception as exc:  # a damaged pickle can raise almost anything
        raise corrupt(path, f"unpickling: {type(exc).__name__}: {exc}") from exc


def _str_keys(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise corrupt(path, f"expected a dict, found {type(obj).__name__}")
    return {(k.decode("latin-1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


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
        raise corrupt(path, f"'data' should be uint8 (N, 3072), found {desc}")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise corrupt(path, f"'{src.label_key}' is not a list of integers") from exc
    if len(y) != len(data):
        raise corrupt(path, f"{len(data)} images but {len(y)} '{src.label_key}'")
    if y.size and (y.min() < 0 or y.max() >= src.num_classes):
        raise corrupt(path, f"label {int(y.max())} outside 0..{src.num_classes - 1}")
    # rows are 1024 red, 1024 green, 1024 blue values, each plane row-major 32x32
    return data.reshape(-1, 3, 32, 32), y


def read_cifar_folder(src: CifarSource, folder: Path) -> RawSplits:
    meta = _str_keys(safe_unpickle(folder / src.meta_file, src.name), folder / src.meta_file)
    names = meta.get(src.names_key)
    if not isinstance(names, list) or len(names) != src.num_classes:
        raise corrupt(folder / src.meta_file, f"'{src.names_key}' should list {src.num_classes} names")
    splits = []
    for files in (src.train_files, src.test_files):
        parts = [_read_cifar_batch(src, folder / f) for f in files]
        splits.append(np.concatenate([p[0] for p in parts]))
        splits.append(np.concatenate([p[1] for p in parts]))
    return RawSplits(splits[0], splits[1], splits[2], splits[3], [_text(n) for n in names])
