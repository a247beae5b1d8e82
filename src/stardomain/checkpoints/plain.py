"""Plain safetensors state dicts (``safetensors.torch.save_file(model.state_dict(), "W.safetensors")``, no ``.json``
beside them) whose model the user names by an explicit import path: ``--model pkg.mod:build`` with ``--dataset``.

Such a file records nothing but tensors: inside :func:`named_model` the store reads it as a checkpoint whose model is
the one the named builder makes for the named dataset's ``(num_classes, in_shape)`` (the builder's signature checked
before it is called, as :func:`stardomain.models.create` does for every builder), the state dict checked to fit that
model (one line naming the first tensor otherwise), and its metadata synthesised with ``pretrained`` (what was read)
and ``assumed`` (what stardomain assumes: the data named with --dataset, the model --model builds), printed and
recorded by every command as for save_pretrained folders (:mod:`stardomain.checkpoints.pretrained`). Outside it such
a file is refused in one line. The file's own header metadata is never read: a name written there is never called.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, cast

import torch

from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.data.protocol import Data

__all__ = ["is_plain", "load_state", "named_model", "read_metadata", "refusal"]

SUFFIX = ".safetensors"


@dataclass(frozen=True)
class _Named:
    builder: str  # as the user typed it (--model / model=)
    dataset: str  # the dataset's name (--dataset / dataset=)
    arch: dict[str, Any]  # what models.create records for it
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]  # the built model's state: the file must fit it


_NAMED: contextvars.ContextVar[_Named | None] = contextvars.ContextVar("stardomain_plain_model", default=None)


def is_plain(path: str | os.PathLike[str]) -> bool:
    """A ``.safetensors`` file without stardomain's ``.json`` beside it: a plain state dict."""
    p = Path(path)
    return p.suffix == SUFFIX and p.is_file() and not p.with_suffix(".json").exists()


def refusal(path: str | os.PathLike[str]) -> StardomainError:
    """The one line for a plain state dict read without a model named for it."""
    return StardomainError(
        f"{path} has no metadata file {Path(path).with_suffix('.json').name}: a plain safetensors state dict names no "
        "model, so pass --model pkg.mod:build and --dataset NAME (Python: model='pkg.mod:build', dataset=...), or save it "
        "with stardomain's store (stardomain.save_checkpoint) to record its model and data (a stardomain checkpoint: "
        "copy its .json too)"
    )


@contextlib.contextmanager
def named_model(model: str, dataset: Data | str | None, data_root: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Inside this block plain ``.safetensors`` files are checkpoints of the model ``model`` (an import path the user
    typed, or a registered name) builds for ``dataset`` (a Dataset, or its name: loaded for its shape)."""
    from stardomain import data, models
    from stardomain._util.plugins import is_import_path, load_plugins

    if not isinstance(model, str) or not model.strip():
        raise StardomainError(f"model={model!r}: name the builder of a plain state dict as pkg.mod:build")
    if is_import_path(model):
        load_plugins([model])  # the user named it: import its module (never a name read from the file)
    ds = data.load_dataset(dataset, root=data_root) if isinstance(dataset, str) else dataset
    if ds is None or not hasattr(ds, "in_shape"):
        raise StardomainError(
            f"a plain state dict read with --model {model} needs --dataset NAME (Python: dataset=): its classes and input "
            "shape are what the builder is called with"
        )
    name = models.canonical_name(model)
    num_classes, in_shape = int(ds.num_classes), tuple(int(d) for d in ds.in_shape)
    built = models.build_on_meta(name, num_classes, in_shape)  # signature checked (check_call) before the call; size budget
    if built is None:  # a builder that cannot run on the meta device: built for real, once
        built = models.create(name, num_classes, in_shape)
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in built.state_dict().items()}
    arch = dict(cast("dict[str, Any]", built.arch))
    token = _NAMED.set(_Named(name, str(ds.name), arch, shapes))
    try:
        yield
    finally:
        _NAMED.reset(token)


def has_named_model() -> bool:
    """Whether plain state dicts are checkpoints of a named model here (inside :func:`named_model`)."""
    return _NAMED.get() is not None


def _named(path: str | os.PathLike[str]) -> _Named:
    named = _NAMED.get()
    if named is None:
        raise refusal(path)
    return named


def read_metadata(path: str | os.PathLike[str], sha256: str | None) -> dict[str, Any]:
    """Metadata synthesised for a plain state dict: ``arch`` (what the named builder makes), ``sha256`` (the
    file's, hashed by the store that asks), ``pretrained`` (what was read) and ``assumed``; never anything from the
    file's own header."""
    from stardomain.checkpoints.assumed import assumptions

    named = _named(path)
    if not Path(path).is_file():
        raise StardomainError(f"checkpoint not found: {path}")
    return {
        "format_version": 1,
        "kind": "regular",
        "role": "source",
        "arch": dict(named.arch),
        "sha256": sha256,
        "pretrained": {"format": "safetensors", "file": str(path), "model": named.builder, "kind": "state_dict"},
        "assumed": assumptions(named.builder, "state_dict", None, builder=named.builder),
    }


def load_state(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a plain state dict (its header metadata ignored) and their synthesised metadata; a state dict
    that does not fit the named model is refused in one line naming the first tensor."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from stardomain._util.diff import state_mismatch

    if not Path(path).is_file():
        read_metadata(path, None)  # the one-line refusal (no --model named, or no such file)
    data = Path(path).read_bytes()
    meta = read_metadata(path, hashlib.sha256(data).hexdigest())  # the store's content hash: sha256 of the file
    named = _named(path)
    try:
        state = st_load(data)  # tensors only: the header's __metadata__ is never looked at
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise StardomainError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]})") from None
    expected = {k: torch.empty(shape, dtype=dtype, device="meta") for k, (shape, dtype) in named.shapes.items()}
    problem = state_mismatch(expected, state)
    if problem is not None:
        arch = named.arch
        raise StardomainError(
            f"{path} does not fit the model --model {named.builder} builds for {named.dataset} ({arch['num_classes']} classes, "
            f"inputs {tuple(arch['in_shape'])}): {problem}; name the builder (and dataset) these weights were trained with"
        )
    return state, meta


def fits_dataset(label: str, meta: Mapping[str, Any], ds: Data) -> None:
    """The model built for a plain state dict reads the data named with --dataset."""
    arch = meta["arch"]
    if tuple(arch["in_shape"]) != tuple(ds.in_shape) or int(arch["num_classes"]) != int(ds.num_classes):
        raise StardomainError(
            f"{label} was read as {meta['pretrained']['model']}'s model for inputs {tuple(arch['in_shape'])} with "
            f"{arch['num_classes']} classes, but {ds.name} has inputs {tuple(ds.in_shape)} with {ds.num_classes} classes; "
            "name the same dataset for both"
        )
