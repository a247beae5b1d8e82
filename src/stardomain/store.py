"""Checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (metadata), written atomically.

Why this format: safetensors never executes code on load (unlike pickle), and the JSON beside it
holds everything needed to rebuild the network (architecture + options), plus provenance
(dataset, seed, recipe, metrics) that later stages record and check. The JSON is written last,
so a ``.safetensors`` without its ``.json`` is an incomplete write and is ignored by zoo discovery.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from stardomain.errors import StardomainError

FORMAT_VERSION = 1
SUFFIX = ".safetensors"


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(SUFFIX)
    if p.suffix != SUFFIX:
        p = p.with_name(p.name + SUFFIX)
    return p, p.with_suffix(".json")


def metadata_path(path: str | os.PathLike) -> Path:
    """The JSON file that belongs to a checkpoint path."""
    return _paths(path)[1]


def _write_temp(path: Path, data: bytes) -> str:
    """Write ``data`` to a fsynced temp file beside ``path``; the caller renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _commit(pairs: list[tuple[str, Path]]) -> None:
    """Rename temp files into place in order; on failure remove the temps that are left."""
    try:
        for tmp, path in pairs:
            os.replace(tmp, path)
    finally:
        for tmp, _ in pairs:
            if os.path.exists(tmp):
                os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: readers never see half a file."""
    path = Path(path)
    _commit([(_write_temp(path, data), path)])


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _state_of(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state, nn.Module):
        state = model_or_state.state_dict()
    else:
        state = dict(model_or_state)
    # safetensors wants contiguous, CPU, non-shared tensors
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save(
    path: str | os.PathLike,
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
) -> Path:
    """Save weights and metadata; returns the ``.safetensors`` path.

    ``metadata`` must hold ``arch`` (``{"name", "num_classes", "in_shape", "options"}``) unless
    ``model_or_state`` is a model carrying ``model.arch``.
    """
    from safetensors.torch import save as st_save

    st_path, json_path = _paths(path)
    meta = dict(metadata)
    if "arch" not in meta:
        arch = getattr(model_or_state, "arch", None)
        if arch is None:
            raise StardomainError("save: metadata has no 'arch' and the model has no .arch; build it with stardomain.models.create")
        meta["arch"] = arch
    meta.setdefault("format_version", FORMAT_VERSION)
    state = _state_of(model_or_state)
    blob = st_save(state, metadata={"stardomain_format": str(FORMAT_VERSION)})
    meta["sha256"] = hashlib.sha256(blob).hexdigest()
    meta_blob = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    # both files are fully written before either is renamed; the JSON goes last (it marks completion,
    # and its sha256 exposes weights that do not belong to it)
    tmp_st = _write_temp(st_path, blob)
    try:
        tmp_json = _write_temp(json_path, meta_blob)
    except BaseException:
        os.unlink(tmp_st)
        raise
    _commit([(tmp_st, st_path), (tmp_json, json_path)])
    return st_path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the JSON metadata of a checkpoint."""
    st_path, json_path = _paths(path)
    if not st_path.exists():
        raise StardomainError(f"checkpoint not found: {st_path} (pass the path of a .safetensors file written by stardomain)")
    if not json_path.exists():
        raise StardomainError(f"checkpoint {st_path} has no metadata file {json_path.name}: it is incomplete; retrain or copy its .json too")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StardomainError(f"metadata {json_path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); the checkpoint is corrupt, retrain it") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arch"), dict) or "name" not in meta["arch"]:
        raise StardomainError(f"metadata {json_path} has no 'arch' entry; it was not written by stardomain")
    return meta


def load_state(path: str | os.PathLike, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read weights (as CPU tensors) and metadata without building a model."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    st_path, _ = _paths(path)
    meta = read_metadata(st_path)
    blob = st_path.read_bytes()
    if verify and "sha256" in meta and hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise StardomainError(f"checkpoint {st_path} does not match the hash in its metadata: it is corrupt or truncated; retrain it")
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise StardomainError(f"checkpoint {st_path} is corrupt or truncated ({str(e).splitlines()[0]}); retrain it") from None
    return state, meta


def build_model(arch: Mapping[str, Any]) -> nn.Module:
    """Rebuild an (untrained) model from the ``arch`` entry of metadata."""
    from stardomain import models

    name = arch.get("name")
    if name not in models.available_models():
        raise StardomainError(
            f"checkpoint architecture '{name}' is unknown to this stardomain version; known: {', '.join(models.available_models())}"
        )
    return models.create(name, int(arch["num_classes"]), tuple(arch["in_shape"]), **dict(arch.get("options", {})))


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A ready model in eval mode, rebuilt from metadata alone (no pickle, no code from the file)."""
    state, meta = load_state(path)
    model = build_model(meta["arch"])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise StardomainError(f"checkpoint {path} does not fit its architecture {meta['arch']['name']}: {str(e).splitlines()[0]}") from None
    model.meta = meta  # provenance travels with the model
    return model.to(device).eval()


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of the weights file: how star checkpoints record which sources they used."""
    st_path, _ = _paths(path)
    h = hashlib.sha256()
    with open(st_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_complete(path: str | os.PathLike) -> bool:
    """A checkpoint is complete when both files exist (the JSON is written last)."""
    st_path, json_path = _paths(path)
    return st_path.exists() and json_path.exists()


def find_checkpoints(zoo_dir: str | os.PathLike) -> list[Path]:
    """Every complete checkpoint under a folder (recursively), sorted by path."""
    root = Path(zoo_dir)
    if not root.is_dir():
        raise StardomainError(f"model zoo folder not found: {root} (train one with `stardomain train --n N --out {root}`)")
    return sorted(p for p in root.rglob(f"*{SUFFIX}") if not p.name.startswith(".") and is_complete(p))
