"""Checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (metadata), written atomically.

Why this format: safetensors never executes code on load (unlike pickle), and the JSON beside it
holds everything needed to rebuild the network (architecture + options), plus provenance
(dataset, seed, recipe, metrics) that later stages record and check. The JSON is written last,
so a ``.safetensors`` without its ``.json`` is an incomplete write and is ignored by zoo discovery.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, cast

import torch
from torch import nn

from stardomain._util.fileio import atomic_write_bytes, atomic_write_json, commit, json_bytes, write_temp
from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.data.protocol import Data

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "build_model",
    "check_fits",
    "content_hash",
    "find_checkpoints",
    "is_complete",
    "load",
    "load_state",
    "meta_error",
    "metadata_path",
    "read_metadata",
    "save",
    "validate_metadata",
]

FORMAT_VERSION = 1
SUFFIX = ".safetensors"


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(SUFFIX)
    if p.suffix != SUFFIX:
        p = p.with_name(p.name + SUFFIX)
    return p, p.with_suffix(".json")


def _plain(st_path: Path) -> bool:
    """A .safetensors file given without stardomain's .json: a plain state dict (:mod:`stardomain.checkpoints.plain`)."""
    from stardomain.checkpoints import plain

    return plain.is_plain(st_path)


def metadata_path(path: str | os.PathLike) -> Path:
    """The JSON file that belongs to a checkpoint path."""
    return _paths(path)[1]


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
    meta_blob = json_bytes(meta)
    # both files are fully written before either is renamed; the JSON goes last (it marks completion,
    # and its sha256 exposes weights that do not belong to it)
    tmp_st = write_temp(st_path, lambda f: f.write(blob))
    try:
        tmp_json = write_temp(json_path, lambda f: f.write(meta_blob))
    except BaseException:
        os.unlink(tmp_st)
        raise
    commit([(tmp_st, st_path), (tmp_json, json_path)])
    return st_path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the JSON metadata of a checkpoint (a save_pretrained folder's is synthesised:
    :mod:`stardomain.checkpoints.pretrained`)."""
    if Path(path).is_dir():
        from stardomain.checkpoints import pretrained

        return pretrained.read_metadata(path)
    st_path, json_path = _paths(path)
    if _plain(st_path):  # a plain state dict: its model named by the user (checkpoints.plain), or refused
        from stardomain.checkpoints import plain

        return plain.read_metadata(st_path, sha256=content_hash(st_path) if st_path.is_file() else None)
    if not st_path.exists():
        raise StardomainError(f"checkpoint not found: {st_path} (pass the path of a .safetensors file written by stardomain)")
    if not json_path.exists():
        raise StardomainError(
            f"checkpoint {st_path} has no metadata file {json_path.name}: it is incomplete; retrain or copy its .json too"
        )
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StardomainError(
            f"metadata {json_path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); the checkpoint is corrupt, retrain it"
        ) from None
    validate_metadata(meta, json_path)
    return meta


# key -> (accepted types, what to write there); checked when present
_TYPED_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "kind": ((str,), "a string such as 'regular' or 'star'"),
    "role": ((str,), "a string such as 'source'"),
    "dataset": ((str,), "a dataset name"),
    "seed": ((int,), "an integer"),
    "recipe": ((dict,), "a mapping"),
    "config": ((dict,), "a mapping"),
    "metrics": ((dict,), "a mapping"),
    "history": ((list,), "a list"),
    "sha256": ((str,), "a hex string"),
    "sources": ((list,), "a list"),
}


def meta_error(json_path: Path | str, key: str, problem: str) -> StardomainError:
    """The one line for a metadata key that is missing or of the wrong type (also :mod:`.meta`'s)."""
    return StardomainError(f"metadata {json_path}: {problem} '{key}'; fix that key or retrain the checkpoint")


def validate_metadata(meta: Any, json_path: Path | str) -> None:
    """One line naming the file and the key for every hand-edited or foreign metadata file.

    A model checkpoint needs ``arch.name`` (str), ``arch.num_classes`` (int >= 1),
    ``arch.in_shape`` (list of ints >= 1) and, if present, ``arch.options`` (mapping); a
    training-state file needs only ``arch.name``. Known top-level keys must have their type.
    """
    if not isinstance(meta, dict):
        raise StardomainError(f"metadata {json_path} is a JSON {type(meta).__name__}, not an object; it was not written by stardomain")
    arch = meta.get("arch")
    if arch is None:
        raise meta_error(json_path, "arch", "has no key")
    if not isinstance(arch, dict):
        raise meta_error(json_path, "arch", "needs a mapping in")
    if not isinstance(arch.get("name"), str):
        raise meta_error(json_path, "arch.name", "has no key" if "name" not in arch else "needs a string in")
    for key, (types, what) in _TYPED_KEYS.items():
        value = meta.get(key)
        if key in meta and value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise meta_error(json_path, key, f"needs {what} (got {type(value).__name__}) in")
    if str(meta.get("kind", "")).endswith("-state"):  # a trainer's resumable state (stardomain.training.state)
        return
    n = arch.get("num_classes")
    if "num_classes" not in arch:
        raise meta_error(json_path, "arch.num_classes", "has no key")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise meta_error(json_path, "arch.num_classes", f"needs an integer >= 1 (got {n!r}) in")
    shape = arch.get("in_shape")
    if "in_shape" not in arch:
        raise meta_error(json_path, "arch.in_shape", "has no key")
    if not isinstance(shape, list) or not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise meta_error(json_path, "arch.in_shape", f"needs a list of positive integers (got {shape!r}) in")
    if "options" in arch and not isinstance(arch["options"], dict):
        raise meta_error(json_path, "arch.options", f"needs a mapping (got {type(arch['options']).__name__}) in")


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Refuse, in one line naming the first tensor, weights that do not fit ``model``'s architecture."""
    from stardomain._util.diff import state_mismatch

    problem = state_mismatch(model.state_dict(), state)
    if problem is not None:
        arch = getattr(model, "arch", {}) or {}
        raise StardomainError(
            f"checkpoint {path} does not fit its architecture {arch.get('name', type(model).__name__)}: {problem}; "
            "its weights and metadata do not belong together, retrain or re-copy both files"
        )


def load_state(path: str | os.PathLike, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read weights (as CPU tensors) and metadata without building a model."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    if Path(path).is_dir():  # a save_pretrained folder (its config.json checked against the closed list)
        from stardomain.checkpoints import pretrained

        return pretrained.load_state(path)
    st_path, _ = _paths(path)
    if _plain(st_path):
        from stardomain.checkpoints import plain

        return plain.load_state(st_path)
    meta = read_metadata(st_path)
    blob = st_path.read_bytes()
    if verify and "sha256" in meta and hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise StardomainError(f"checkpoint {st_path} does not match the hash in its metadata: it is corrupt or truncated; retrain it")
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise StardomainError(f"checkpoint {st_path} is corrupt or truncated ({str(e).splitlines()[0]}); retrain it") from None
    _check_arch_on_meta(meta, state, st_path)
    return state, meta


def _check_arch_on_meta(meta: Mapping[str, Any], state: Mapping[str, torch.Tensor], st_path: Path) -> None:
    """Build the recorded architecture on the meta device and compare its shapes with the weights, before
    anyone builds it for real: metadata claiming width 2^40 is refused in one line, never allocated.

    Skipped for a user model whose module the user has not named (its build says which --plugin to pass).
    """
    from stardomain import models
    from stardomain._util.plugins import named_by_user, recorded_names

    if meta.get("kind", "regular") not in ("regular", "star"):
        return  # training-state files hold optimizer tensors too; they are read by the run that wrote them
    arch = meta["arch"]
    name, factory = arch.get("name"), arch.get("factory")
    if (
        name not in models.available_models()
        and not _hf_buildable(name)
        and not any(isinstance(n, str) and named_by_user(n) for n in (name, factory))
    ):
        return  # code nobody named: never called; building it says which --plugin to pass
    try:
        with recorded_names(f"checkpoint {st_path}"):
            model = _meta_model(json.dumps(arch, sort_keys=True, default=str))
    except StardomainError as e:
        raise StardomainError(
            f"checkpoint {st_path}: its metadata's architecture cannot be built ({e}); "
            f"fix arch in {metadata_path(st_path).name} or retrain it"
        ) from None
    if model is not None:
        check_fits(model, state, st_path)


@functools.lru_cache(maxsize=16)
def _meta_model(arch_json: str) -> nn.Module | None:
    """The architecture built on the meta device (no memory; None when a user's builder cannot run there),
    once per architecture: a run reads the same architecture's checkpoints many times."""
    from stardomain import models

    arch = json.loads(arch_json)
    options = models.with_init(str(arch.get("name")), arch.get("options", {}))
    return models.build_on_meta(_builder_name(arch), int(arch["num_classes"]), tuple(arch["in_shape"]), **options)


def _builder_name(arch: Mapping[str, Any]) -> str:
    """What builds ``arch``: its registered name, or its factory when the user named that module (not the registering one)."""
    from stardomain import models
    from stardomain._util.plugins import import_path_module, is_hf_name, is_import_path, named_by_user

    name = arch.get("name")
    factory = arch.get("factory")
    if is_hf_name(name):  # a Hugging Face model: models.hf builds it (a config function only if the user named it)
        return name
    if not is_import_path(name) and name not in models.available_models():
        if is_import_path(factory) and named_by_user(factory):
            return str(factory)  # the builder's module was named (not the one that registered it): build from it
        if is_import_path(factory):
            module = import_path_module(factory)
            raise StardomainError(
                f"checkpoint architecture '{name}' is registered by {factory}, which you have not passed as a plugin; "
                f"if you trust it, pass --plugin {module} (YAML: plugins: [{module}]; Python: plugins=[{module!r}])"
            )
        raise StardomainError(f"checkpoint architecture '{name}' is unknown to this stardomain version; known: {models.valid_names()}")
    return str(name)


def build_model(arch: Mapping[str, Any], plugins: Iterable[str] = ()) -> nn.Module:
    """Rebuild an (untrained) model from the ``arch`` entry of metadata.

    A checkpoint only *names* its builder: a user model is rebuilt when the user named the module
    that defines it (``plugins``, ``--plugin``, YAML ``plugins:``, or the import path typed into
    the Python API in this process), never imported or called because a file said so: registered
    models and the hf: families are the only other names a file can give.
    """
    from stardomain import models
    from stardomain._util.plugins import load_plugins, recorded_names

    load_plugins(plugins)
    with recorded_names("checkpoint metadata"):
        name = _builder_name(arch)
        # a checkpoint from before `init` was recorded is rebuilt with the init it was trained from (models.init)
        options = models.with_init(str(arch.get("name")), arch.get("options", {}))
        model = models.create(name, int(arch["num_classes"]), tuple(arch["in_shape"]), **options)
    # the name as recorded, even when rebuilt from its factory (models.create set model.arch, a dict); torch types
    # Module attributes as Tensor | Module, though any value can be set
    model.arch = {**cast("dict[str, Any]", model.arch), "name": arch.get("name")}  # type: ignore[assignment]
    return model


def load(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    plugins: Iterable[str] = (),
    model: str | None = None,
    dataset: Data | str | None = None,
) -> nn.Module:
    """A ready model in eval mode, rebuilt from metadata alone (no pickle, no code from the file).

    ``plugins``: modules to import first (those defining the checkpoint's user model). ``model`` and ``dataset``
    (a Dataset or its name): for a plain safetensors state dict (no .json), the builder (``"pkg.mod:build"``) and
    the data it was trained on (:mod:`stardomain.checkpoints.plain`); refused for a checkpoint that records its own.
    """
    from stardomain._util.plugins import load_plugins

    if model is None and dataset is None:
        return _load(path, device, plugins)
    from stardomain.checkpoints import plain

    if not plain.is_plain(_paths(path)[0]):
        raise StardomainError(
            f"model=/dataset= name the model of a plain state dict; {path} is not one (it records its own model and data)"
        )
    load_plugins(plugins)
    with plain.named_model(str(model) if model is not None else "", dataset):
        return _load(path, device, ())


def _load(path: str | os.PathLike, device: str | torch.device, plugins: Iterable[str]) -> nn.Module:
    from stardomain._util.plugins import load_plugins, recorded_names

    load_plugins(plugins)  # before the metadata is checked: its architecture may be the plugin's
    state, meta = load_state(path)
    with recorded_names(f"checkpoint {path}"):
        model = build_model(meta["arch"])
    check_fits(model, state, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise StardomainError(f"checkpoint {path} does not fit its architecture {meta['arch']['name']}: {str(e).splitlines()[0]}") from None
    model.meta = meta  # type: ignore[assignment]  # provenance travels with the model (torch types attributes as Tensor | Module)
    return model.to(device).eval()


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of the weights file: how star checkpoints record which sources they used.

    Remembered per (file, inode, size, mtime): a plan asks for the same checkpoints' hashes once per
    evaluation unit; an atomic rewrite changes the inode (and an in-place one the mtime), so a
    rewritten file is hashed again. A save_pretrained folder: config.json and its weight files together.
    """
    if Path(path).is_dir():
        from stardomain.checkpoints import pretrained

        return pretrained.content_hash(path)
    st_path, _ = _paths(path)
    st = os.stat(st_path)
    return _hash_file(str(Path(st_path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _hash_file(path: str, inode: int, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_complete(path: str | os.PathLike) -> bool:
    """A checkpoint is complete when both files exist (the JSON is written last); a save_pretrained folder when it
    holds config.json and safetensors weights."""
    if Path(path).is_dir():
        from stardomain.checkpoints import pretrained

        return pretrained.is_complete(path)
    st_path, json_path = _paths(path)
    if _plain(st_path):  # complete when the user named its model (checkpoints.plain.named_model)
        from stardomain.checkpoints import plain

        return plain.has_named_model()
    return st_path.exists() and json_path.exists()


def find_checkpoints(zoo_dir: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Every complete checkpoint under a folder (``recursive=False``: only its direct children, save_pretrained
    subfolders among them), sorted by path."""
    root = Path(zoo_dir)
    if not root.is_dir():
        raise StardomainError(f"model zoo folder not found: {root} (train one with `stardomain train --n N --out {root}`)")
    found = list(root.rglob(f"*{SUFFIX}") if recursive else root.glob(f"*{SUFFIX}"))
    if not recursive:  # a folder of save_pretrained folders is a zoo too (stardomain star --sources); plain state
        # dicts count when the user named their model (checkpoints.plain.named_model: is_complete)
        found += [p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()]
    return sorted(p for p in found if not p.name.startswith(".") and is_complete(p))


def _hf_buildable(name: Any) -> bool:
    """Whether an ``hf:`` architecture can be built here to check its shapes: transformers is installed and, for
    ``hf:pkg.module:make_config``, the module is imported (a checkpoint never imports it)."""
    import importlib.util

    from stardomain._util.plugins import is_hf_name, is_import_path, named_by_user

    if not is_hf_name(name) or importlib.util.find_spec("transformers") is None:
        return False
    rest = name.strip()[3:]
    return not is_import_path(rest) or named_by_user(rest)
