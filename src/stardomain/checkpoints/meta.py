"""A checkpoint's metadata as one typed, frozen record, read once (issue 34: typed seams).

Why: the JSON beside a checkpoint was read as a raw dict in dozens of places (``meta["metrics"]["test_acc"]``,
``meta.get("role")``, ``meta["sources"]``), each deciding for itself which keys may be missing and what a
missing one means. :class:`Checkpoint` decides it once, here: what every checkpoint has (``arch``), what a star
always records (``seed``, ``sources``, ``metrics``: a missing one is a one-line error naming the file and the
key), and what is optional (None or empty: older versions, save_pretrained folders and plain state dicts,
:mod:`stardomain.checkpoints.pretrained` / :mod:`~stardomain.checkpoints.plain`, record no seed, recipe or data).

The dict stays whole in :attr:`Checkpoint.raw` (unknown keys included), for the writers and the provenance
checks that compare records as written; nothing here writes, so the files on disk never change.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from stardomain.errors import StardomainError

__all__ = ["Arch", "Checkpoint", "Metrics", "SourceRef", "read_checkpoint", "read_state"]

# keys a star's writer (starlight.train_star) has recorded since the first version: readers index them
STAR_REQUIRED = ("seed", "sources", "metrics")
METRIC_NAMES = ("train_loss", "train_acc", "test_loss", "test_acc")


def _where(path: str | os.PathLike[str]) -> str:
    """The file an error names: a checkpoint's .json, or the save_pretrained folder itself."""
    from stardomain.checkpoints import store

    return str(path if Path(path).is_dir() else store.metadata_path(path))


def _error(path: str | os.PathLike[str], key: str, problem: str) -> StardomainError:
    from stardomain.checkpoints.store import meta_error

    return meta_error(_where(path), key, problem)


def _number(path: str | os.PathLike[str], key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(path, key, f"needs a number or null (got {type(value).__name__}) in")
    return float(value)


@dataclass(frozen=True)
class Metrics:
    """Final train/test loss and accuracy (accuracies as fractions in [0, 1]); None where the file has null
    (a diverged loss: strict JSON has no NaN) or no such key (hand-written metadata)."""

    train_loss: float | None = None
    train_acc: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, value: Any, path: str | os.PathLike[str]) -> Metrics:
        if not isinstance(value, Mapping):
            raise _error(path, "metrics", f"needs a mapping (got {type(value).__name__}) in")
        return cls(**{k: _number(path, f"metrics.{k}", value.get(k)) for k in METRIC_NAMES}, raw=dict(value))

    def as_dict(self) -> dict[str, Any]:
        """The metrics as recorded (null kept as None, extra keys kept): what results and warnings compare."""
        return dict(self.raw)

    def printable(self) -> dict[str, float]:
        """The four metrics with null (or none recorded) as nan: what a console line formats, never a crash on None."""
        return {k: math.nan if (v := getattr(self, k)) is None else v for k in METRIC_NAMES}


@dataclass(frozen=True)
class Arch:
    """What rebuilds the network (``store.build_model(arch.record)``); ``record`` is the entry as written."""

    name: str
    num_classes: int
    in_shape: tuple[int, ...]
    options: Mapping[str, Any]
    record: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class SourceRef:
    """One source a star was trained on: its path (relative to the star's folder, or as the CLI was given it),
    its SHA-256 (what proves it is the same file) and its seed (None for a save_pretrained folder)."""

    path: str
    sha256: str
    seed: int | None = None


def _mapping(path: str | os.PathLike[str], meta: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = meta.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise _error(path, key, f"needs a mapping (got {type(value).__name__}) in")
    return value


def _string(path: str | os.PathLike[str], meta: Mapping[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if value is not None and not isinstance(value, str):
        raise _error(path, key, f"needs a string (got {type(value).__name__}) in")
    return value


def _int(path: str | os.PathLike[str], value: Any, key: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _error(path, key, f"needs an integer (got {type(value).__name__}) in")
    return value


def _sources(path: str | os.PathLike[str], value: Any) -> tuple[SourceRef, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _error(path, "sources", f"needs a list (got {type(value).__name__}) in")
    refs = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise _error(path, f"sources[{i}]", f"needs a mapping (got {type(entry).__name__}) in")
        for key in ("path", "sha256"):
            if not isinstance(entry.get(key), str):
                raise _error(path, f"sources[{i}].{key}", "has no key" if key not in entry else "needs a string in")
        refs.append(SourceRef(entry["path"], entry["sha256"], _int(path, entry.get("seed"), f"sources[{i}].seed")))
    return tuple(refs)


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint's metadata, typed: build it with :func:`read_checkpoint` (or :meth:`of` for a dict already read).

    Every checkpoint has ``arch``; ``kind`` is ``regular`` unless recorded. Stars (``kind`` ``star``) always have
    ``seed``, ``sources`` and ``metrics``. The rest is None / empty where not recorded: ``role`` (older versions),
    ``seed``/``recipe``/``data``/``metrics``/``history`` (save_pretrained folders and plain state dicts, which
    have ``pretrained`` and ``assumed`` instead), the star settings (``init``, ``starlight``, ``identity``,
    ``spec_coverage``) on regular models. ``raw`` is the whole dict, unknown keys kept.
    """

    path: Path
    kind: str
    arch: Arch
    role: str | None = None
    dataset: str | None = None
    data: Mapping[str, Any] | None = None
    seed: int | None = None
    recipe: Mapping[str, Any] | None = None
    config: Mapping[str, Any] | None = None
    metrics: Metrics | None = None
    history: tuple[Mapping[str, Any], ...] = ()
    sha256: str | None = None
    init: str | None = None
    starlight: Mapping[str, Any] | None = None
    identity: Mapping[str, Any] | None = None
    sources: tuple[SourceRef, ...] = ()
    spec_coverage: float | None = None
    pretrained: Mapping[str, Any] | None = None
    assumed: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, meta: Mapping[str, Any] | Checkpoint, path: str | os.PathLike[str]) -> Checkpoint:
        """The typed record of metadata already read (``store.load_state``'s, ``model.meta``, a public API's
        dict); a Checkpoint is returned as it is. Checked as :func:`store.validate_metadata` checks a file."""
        from stardomain.checkpoints.store import validate_metadata

        if isinstance(meta, Checkpoint):
            return meta
        validate_metadata(meta, _where(path))
        kind = str(meta.get("kind") or "regular")
        if kind.endswith("-state"):  # a trainer's resumable state (stardomain.training.state): no model's record
            raise StardomainError(f"{path} is a training state file, not a checkpoint; give the model's .safetensors")
        if kind == "star":
            missing = next((k for k in STAR_REQUIRED if meta.get(k) is None), None)
            if missing is not None:  # every star writer records them: a hand-edited or foreign file
                raise _error(path, missing, "is a star's metadata but has no key")
        a = meta["arch"]
        options = a.get("options") or {}
        history = meta.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, Mapping) for h in history):
            raise _error(path, "history", "needs a list of per-epoch mappings in")
        assumed = meta.get("assumed") or []
        if not isinstance(assumed, list):
            raise _error(path, "assumed", f"needs a list (got {type(assumed).__name__}) in")
        return cls(
            path=Path(path),
            kind=kind,
            arch=Arch(str(a["name"]), int(a["num_classes"]), tuple(int(d) for d in a["in_shape"]), dict(options), a),
            role=_string(path, meta, "role"),
            dataset=_string(path, meta, "dataset"),
            data=_mapping(path, meta, "data"),
            seed=_int(path, meta.get("seed"), "seed"),
            recipe=_mapping(path, meta, "recipe"),
            config=_mapping(path, meta, "config"),
            metrics=None if meta.get("metrics") is None else Metrics.of(meta["metrics"], path),
            history=tuple(history),
            sha256=_string(path, meta, "sha256"),
            init=_string(path, meta, "init"),
            starlight=_mapping(path, meta, "starlight"),
            identity=_mapping(path, meta, "identity"),
            sources=_sources(path, meta.get("sources")),
            spec_coverage=_number(path, "spec_coverage", meta.get("spec_coverage")),
            pretrained=_mapping(path, meta, "pretrained"),
            assumed=tuple(str(line) for line in assumed),
            raw=meta,
        )

    @property
    def is_star(self) -> bool:
        return self.kind == "star"

    @property
    def imported(self) -> bool:
        """A save_pretrained folder or a plain state dict: no provenance of its own (``assumed`` says what stands in)."""
        return self.pretrained is not None

    def metrics_dict(self) -> dict[str, Any]:
        """The metrics as recorded, ``{}`` where none are (what results and warnings take)."""
        return {} if self.metrics is None else self.metrics.as_dict()

    def labelled(self, label: str | None = None) -> tuple[str, Mapping[str, Any]]:
        """``(label, raw)``, what the provenance checks (:mod:`stardomain.checkpoints.provenance`) take."""
        return (str(self.path) if label is None else label, self.raw)


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """The typed metadata of a checkpoint (a .safetensors file, a save_pretrained folder, or a plain state dict
    inside :func:`stardomain.checkpoints.plain.named_model`), read and checked once."""
    from stardomain.checkpoints import store

    return Checkpoint.of(store.read_metadata(path), path)


def read_state(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Checkpoint]:
    """Weights and typed metadata (``store.load_state``: hash-checked, shapes checked against ``arch``)."""
    from stardomain.checkpoints import store

    state, meta = store.load_state(path)
    return state, Checkpoint.of(meta, path)
