"""Your data without code: a dataset read from one ``.npz`` or ``.safetensors`` file.

The file holds four arrays, ``x_train``, ``y_train``, ``x_test``, ``y_test``: inputs of any
per-sample shape (``(N, F)`` tabular, ``(N, H, W)`` or ``(N, C, H, W)`` images; uint8 is read on
the [0, 1] scale) and integer labels 0..K-1. Inputs are normalised per feature (tabular) or
per channel (images) with the train split's statistics. Reading never runs code (``.npz``
with ``allow_pickle=False``), and the file's SHA-256 is recorded, so a checkpoint names
exactly the data it was trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stardomain.errors import StardomainError

__all__ = ["FILE_PREFIX", "UserData", "file_key", "is_file_dataset", "read_file_dataset"]

FILE_PREFIX = "file:"
_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class UserData:
    """The arrays of a file dataset, normalised, with what a :class:`~stardomain.data.Dataset` records."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    in_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sha256: str


def is_file_dataset(name: object) -> bool:
    """True for dataset names of the form ``file:/path/data.npz``."""
    return isinstance(name, str) and name.startswith(FILE_PREFIX)


def file_key(path: str) -> str:
    """The dataset name of a file: ``file:`` plus its absolute path (what metadata records)."""
    raw = path[len(FILE_PREFIX) :] if is_file_dataset(path) else path
    p = Path(raw).expanduser().resolve()
    if p.suffix not in (".npz", ".safetensors"):
        raise StardomainError(f"dataset file {raw!r} must be .npz or .safetensors (with x_train, y_train, x_test, y_test)")
    return FILE_PREFIX + str(p)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        else:
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
    except FileNotFoundError:
        raise StardomainError(f"dataset file {path} does not exist") from None
    except Exception as exc:  # numpy/safetensors raise many types for a bad file
        raise StardomainError(
            f"dataset file {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    missing = [k for k in _KEYS if k not in arrays]
    if missing:
        raise StardomainError(
            f"dataset file {path} has no array {missing[0]!r}; it needs {', '.join(_KEYS)} (has {', '.join(sorted(arrays)) or 'none'})"
        )
    return arrays


def _labels(y: np.ndarray, split: str, path: Path) -> np.ndarray:
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        raise StardomainError(
            f"dataset file {path}: y_{split} must be a 1-d array of integer class labels (got {y.dtype}, shape {y.shape})"
        )
    if len(y) and y.min() < 0:
        raise StardomainError(f"dataset file {path}: y_{split} has negative labels; use classes 0..K-1")
    return y.astype(np.int64)


def _inputs(x: np.ndarray, split: str, path: Path) -> tuple[np.ndarray, float]:
    if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise StardomainError(f"dataset file {path}: x_{split} must be a numeric array (N, ...) (got {x.dtype}, shape {x.shape})")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    if x.ndim == 3:  # (N, H, W) grey images: one channel
        x = x[:, None]
    x = x.astype(np.float64) / scale
    if not np.isfinite(x).all():
        raise StardomainError(f"dataset file {path}: x_{split} holds NaN or infinite values")
    return x, scale


def read_file_dataset(name: str) -> UserData:
    """Read and normalise the dataset file named ``file:/path`` (see the module docstring)."""
    path = Path(file_key(name)[len(FILE_PREFIX) :])
    arrays = _read_arrays(path)
    y_train, y_test = _labels(arrays["y_train"], "train", path), _labels(arrays["y_test"], "test", path)
    x_train, _ = _inputs(arrays["x_train"], "train", path)
    x_test, _ = _inputs(arrays["x_test"], "test", path)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise StardomainError(
            f"dataset file {path}: x and y differ in length (train {len(x_train)} vs {len(y_train)}, test {len(x_test)} vs {len(y_test)})"
        )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise StardomainError(f"dataset file {path}: x_train samples are {x_train.shape[1:]} but x_test samples {x_test.shape[1:]}")
    if len(y_train) < 2:
        raise StardomainError(f"dataset file {path}: x_train needs at least 2 samples")
    num_classes = int(max(y_train.max(), y_test.max() if len(y_test) else 0)) + 1
    # statistics per feature (tabular) or per channel (images), from the train split only
    axes = (0,) if x_train.ndim == 2 else (0,) + tuple(range(2, x_train.ndim))
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True)
    std = np.where(std > 0, std, 1.0)  # a constant feature: divide by 1, not 0

    def norm(x: np.ndarray) -> Tensor:
        return torch.from_numpy(((x - mean) / std).astype(np.float32))

    return UserData(
        train_x=norm(x_train),
        train_y=torch.from_numpy(y_train),
        test_x=norm(x_test),
        test_y=torch.from_numpy(y_test),
        num_classes=num_classes,
        in_shape=tuple(int(s) for s in x_train.shape[1:]),
        mean=tuple(float(v) for v in mean.reshape(-1)),
        std=tuple(float(v) for v in std.reshape(-1)),
        sha256=_sha256(path),
    )
