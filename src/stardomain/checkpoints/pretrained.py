"""Checkpoints researchers already have: Hugging Face ``save_pretrained`` folders, read like our own checkpoints.

A folder holding ``config.json`` and ``model.safetensors`` (or shards named by ``model.safetensors.index.json``)
is a checkpoint wherever stardomain takes one (``store.read_metadata``/``load_state``/``load``/``content_hash``,
so every command and ``load_checkpoint``, ``evaluate_pair``, ``train_star``). Its architecture must be one of the
closed list :data:`stardomain.models.hf.PRETRAINED_CLASSES` (config.json's ``architectures``): a name outside it is
refused, never imported; ``auto_map`` (remote code) is refused; a folder with only a pickled ``pytorch_model.bin``
is refused (never unpickled). The model is ``hf:pretrained`` (the config recorded as JSON text in its options),
wrapped ``x -> logits``; the weights are read by ``transformers``' own loader (``use_safetensors=True``), which maps
the file's key names onto the model's, then prefixed ``model.`` like every ``hf:`` model.

Such a folder records no training data, seed or recipe: its metadata is synthesised (:func:`read_metadata`) with
``pretrained`` (what was read) and ``assumed`` (what stardomain assumes for it: the role, the token quantisation,
that the data is the one named with ``--dataset``), which commands print and record in their outputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from stardomain.checkpoints.assumed import assumptions
from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.data.protocol import Data

__all__ = ["NAME", "assumptions", "content_hash", "load_state", "read_metadata"]

NAME = "hf:pretrained"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


def is_complete(path: str | os.PathLike[str]) -> bool:
    """A save_pretrained folder: config.json and safetensors weights (one file or an index)."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG).is_file() and ((p / WEIGHTS).is_file() or (p / INDEX).is_file())


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder (one, or the shards its index names, inside the folder); one line otherwise."""
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    if (folder / INDEX).is_file():
        try:
            index = json.loads((folder / INDEX).read_text())
            shards = sorted(set(dict(index["weight_map"]).values()))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise StardomainError(f"{folder / INDEX} is not a safetensors index (no weight_map); re-save the model") from None
        files = [folder / str(s) for s in shards]
        bad = next((f for f in files if f.parent != folder or f.suffix != ".safetensors" or not f.is_file()), None)
        if bad is not None:
            raise StardomainError(
                f"{folder / INDEX} names shard {bad.name}, which is not a .safetensors file in {folder}; re-save the model"
            )
        return files
    pickled = [n for n in PICKLED if (folder / n).exists()]
    if pickled:
        raise StardomainError(
            f"{folder} holds only {pickled[0]} (a pickle, which stardomain never loads: it can run code); re-save it with "
            "model.save_pretrained(folder, safe_serialization=True) to write model.safetensors"
        )
    raise StardomainError(f"{folder} has no model.safetensors (nor {INDEX}); save the model with model.save_pretrained(folder)")


def _config(folder: Path) -> tuple[str, dict[str, Any]]:
    """(architecture, config.json) of a folder, the architecture checked against the closed list."""
    from stardomain.models.hf import pretrained_class, refuse_remote_code

    path = folder / CONFIG
    if not path.is_file():
        raise StardomainError(
            f"{folder} is a folder without {CONFIG}: not a save_pretrained folder (or a stardomain checkpoint: pass its .safetensors file)"
        )
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise StardomainError(f"{path} is not valid JSON ({getattr(e, 'msg', e)}); re-save the model") from None
    if not isinstance(cfg, dict):
        raise StardomainError(f"{path} is a JSON {type(cfg).__name__}, not an object; re-save the model")
    refuse_remote_code(cfg, str(path))
    names = cfg.get("architectures")
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
        raise StardomainError(
            f"{path} must name exactly one class in 'architectures' (got {names!r}); re-save the model with save_pretrained"
        )
    try:
        pretrained_class(names[0])
    except StardomainError as e:
        raise StardomainError(f"{path}: {e}") from None
    return names[0], cfg


@functools.lru_cache(maxsize=64)
def _folder_hash(files: tuple[tuple[str, int, int, int], ...]) -> str:
    h = hashlib.sha256()
    for path, *_ in files:
        h.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 over config.json and the weight files (names and bytes, in order): what a star records of such a source."""
    folder = Path(path)
    files = [folder / CONFIG, *_weight_files(folder)]
    stats = tuple((str(f.resolve()), (st := os.stat(f)).st_ino, st.st_size, st.st_mtime_ns) for f in files)
    return _folder_hash(stats)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a save_pretrained folder, synthesised: ``arch`` (``hf:pretrained`` with the architecture and
    its config), ``sha256`` (:func:`content_hash`), ``pretrained`` (what was read) and ``assumed``."""
    from stardomain import models
    from stardomain.models.hf import canonical_config, pretrained_class, pretrained_config, pretrained_shape

    folder = Path(path)
    architecture, cfg = _config(folder)
    files = _weight_files(folder)
    config = pretrained_config(architecture, cfg)
    classes, shape = pretrained_shape(architecture, config)
    _, kind = pretrained_class(architecture)
    vocab = None
    if kind != "image":
        vocab = int(config.vocab_size) - (1 if getattr(config, "pad_token_id", None) == config.vocab_size - 1 else 0)
    return {
        "format_version": 1,
        "kind": "regular",
        "role": "source",
        "arch": {
            "name": NAME,
            "num_classes": classes,
            "in_shape": list(shape),
            # as models.create records them (the init made explicit): a star trained from such sources has this arch
            "options": models.with_init(NAME, {"architecture": architecture, "config": canonical_config(cfg), "x_min": -2.0, "x_max": 2.0}),
        },
        "sha256": content_hash(folder),
        "pretrained": {
            "format": "save_pretrained",
            "folder": str(folder),
            "architecture": architecture,
            "model_type": cfg.get("model_type"),
            "kind": kind,
            "weights": [f.name for f in files],
            "transformers_version": cfg.get("transformers_version"),
        },
        "assumed": assumptions(architecture, kind, vocab),
    }


def load_state(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights (``model.``-prefixed, as the ``hf:pretrained`` model names them) and metadata of a folder.

    ``transformers``' loader reads the safetensors files (``use_safetensors=True``: never a pickle, no download,
    no remote code) into the closed-list class built from config.json, mapping the file's key names; weights
    that do not fit the config are refused in one line. The size is checked on the meta device first.
    """
    from stardomain import models
    from stardomain.models.hf import import_transformers, pretrained_config, wrap_pretrained

    folder = Path(path)
    meta = read_metadata(folder)
    arch = meta["arch"]
    models.build_on_meta(NAME, arch["num_classes"], tuple(arch["in_shape"]), **arch["options"])  # size budget
    architecture = arch["options"]["architecture"]
    tf = import_transformers()
    config = pretrained_config(architecture, arch["options"]["config"])
    was_enabled = tf.utils.logging.is_progress_bar_enabled()
    level = tf.utils.logging.get_verbosity()
    tf.utils.logging.disable_progress_bar()
    tf.utils.logging.set_verbosity_error()
    try:
        model, info = getattr(tf, architecture).from_pretrained(  # a class of the closed list
            str(folder), config=config, use_safetensors=True, local_files_only=True, output_loading_info=True, trust_remote_code=False
        )
    except StardomainError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers' loader: shapes that do not fit, a corrupt file
        first = " ".join((str(e).strip().splitlines() or [type(e).__name__])[:1])[:300]
        raise StardomainError(
            f"the weights of {folder} do not fit its config.json ({type(e).__name__}: {first}); re-save the model"
        ) from None
    finally:
        if was_enabled:
            tf.utils.logging.enable_progress_bar()
        tf.utils.logging.set_verbosity(level)
    problems = {k: v for k, v in dict(info).items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        what, keys = next(iter(problems.items()))
        shown = ", ".join(sorted(str(k) for k in keys)[:3])
        raise StardomainError(
            f"the weights of {folder} do not fit its config.json ({what.replace('_', ' ')}: {shown}"
            f"{', ...' if len(keys) > 3 else ''}); re-save the model with save_pretrained"
        )
    wrapped = wrap_pretrained(model, architecture)
    state = {k: v.detach().contiguous() for k, v in wrapped.state_dict().items()}
    return state, meta


def fits_dataset(label: str, meta: Mapping[str, Any], ds: Data) -> None:
    """A folder's model reads the data named with --dataset: images of its shape, or at most its positions of tokens,
    with its number of labels; a causal LM's per-token logits are refused for evaluations (spec and align take it)."""
    import math

    if meta["pretrained"].get("format") == "safetensors":  # a plain state dict: the model --model built
        from stardomain.checkpoints.plain import fits_dataset as plain_fits

        return plain_fits(label, meta, ds)
    arch = meta["arch"]
    kind = meta["pretrained"]["kind"]
    if kind == "lm":
        raise StardomainError(
            f"{label} is a causal language model ({meta['pretrained']['architecture']}: per-token logits over its vocabulary); "
            "stardomain evaluates classifiers on a dataset: `spec` and `align` take it, `eval`, `barrier` and `star` do not"
        )
    classes, shape = int(arch["num_classes"]), tuple(arch["in_shape"])
    fits = tuple(ds.in_shape) == shape if kind == "image" else math.prod(ds.in_shape) <= shape[0]
    if not fits or classes != ds.num_classes:
        reads = f"images {shape}" if kind == "image" else f"at most {shape[0]} tokens"
        raise StardomainError(
            f"{label} ({meta['pretrained']['architecture']}) reads {reads} with {classes} labels, but {ds.name} has inputs "
            f"{tuple(ds.in_shape)} with {ds.num_classes} classes; pass the --dataset it was trained on"
        )
