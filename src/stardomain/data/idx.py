"""The IDX file format (MNIST and its relatives), parsed with numpy only."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from stardomain.data.raw import corrupt, one_line
from stardomain.errors import StardomainError

__all__ = ["read_idx"]

_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """File contents, transparently gunzipped (detected by magic bytes, not the suffix)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StardomainError(f"cannot read {path} ({one_line(exc)})") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise corrupt(path, f"gzip: {exc}") from exc
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
        raise corrupt(path, f"{len(raw)} bytes, shorter than the IDX header")
    code, dims_n = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES:
        raise corrupt(path, f"bad IDX magic number 0x{raw[:4].hex()}")
    if (dtype_code is not None and code != dtype_code) or (ndim is not None and dims_n != ndim):
        want = f"0x0000{dtype_code or code:02x}{ndim or dims_n:02x}"
        raise corrupt(path, f"IDX magic 0x{raw[:4].hex()}, expected {want}")
    header = 4 + 4 * dims_n
    if len(raw) < header:
        raise corrupt(path, "header cut short")
    dims = struct.unpack(f">{dims_n}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: dimensions whose product overflows int64 stay exact
    found = len(raw) - header
    if found != expected:
        raise corrupt(path, f"header promises {expected} data bytes for shape {dims}, found {found}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
