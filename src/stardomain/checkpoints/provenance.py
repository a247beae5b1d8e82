"""Which data a checkpoint was trained on, rebuilt exactly for every later stage.

A model trained on a 200-sample subset must be evaluated, aligned and BN-re-estimated on
those 200 samples, not on the full split nor on a subset redrawn with another seed: a
barrier over other data is a plausible number about the wrong thing. Checkpoints record
``data: {name, subset, subset_seed, image_size}`` (see ``Dataset.record``); this module reads
it back (with a safe fallback for older checkpoints), refuses sets of models trained on
different data, and says in the output which data was used and what the user overrode.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.checkpoints.meta import Checkpoint
    from stardomain.data.protocol import Data
    from stardomain.data.registry import Dataset

FULL = "all"  # --subset all: the whole training split, whatever the checkpoints recorded
_REBUILT = {"name", "subset", "subset_seed", "image_size", "sha256"}  # the record keys load_recorded_data rebuilds and checks


def recorded_data(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` record of a checkpoint; older checkpoints get one rebuilt from ``dataset``/``config``.

    An older checkpoint trained on a subset has no recorded subset seed: ``subset_seed`` is
    then None and :func:`load_recorded_data` refuses unless the user names the seed.
    """
    from stardomain import data

    if "pretrained" in meta:  # a save_pretrained folder records no data: --dataset names it (load_recorded_data)
        return {"name": None, "subset": None, "subset_seed": None, "image_size": None}
    if isinstance(meta.get("data"), Mapping):  # every key counts (a file dataset adds its sha256)
        return {"name": None, "subset": None, "subset_seed": None, "image_size": None, **dict(meta["data"])}
    name = data.canonical_name(meta.get("dataset", "digits"))
    subset = dict(meta.get("config", {})).get("subset")
    shape = meta.get("arch", {}).get("in_shape")
    image_size = int(shape[-1]) if data.accepts_image_size(name) and shape else None
    return {"name": name, "subset": subset, "subset_seed": None, "image_size": image_size}


def describe(rec: Mapping[str, Any]) -> str:
    """``digits, subset 200 (seed 0)`` / ``fashion_mnist, full train split`` (one phrase for messages)."""
    size = f", {rec['image_size']}px" if rec.get("image_size") else ""
    if rec.get("subset") is None:
        return f"{rec['name']}{size}, full train split"
    seed = "seed not recorded" if rec.get("subset_seed") is None else f"seed {rec['subset_seed']}"
    return f"{rec['name']}{size}, subset {rec['subset']} ({seed})"


def parse_subset(value: str | int | None) -> int | str | None:
    """``--subset``: None (as recorded), a size, or ``all`` (the full split)."""
    if value is None or value == FULL:
        return value
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise StardomainError(f"--subset {value}: give a number of training samples >= 1, or '{FULL}' for the whole split")
    return n


def common_record(models: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The one data record shared by ``(label, meta)`` models; refuses models trained on different data.
    save_pretrained folders record none: they go with the others' (a star trained on them records its data)."""
    models = [(label, meta) for label, meta in models if "pretrained" not in meta] or list(models)
    first_label, first = models[0][0], recorded_data(models[0][1])
    for label, meta in models[1:]:
        rec = recorded_data(meta)
        if rec != first:
            raise StardomainError(
                f"{first_label} and {label} were trained on different data ({describe(first)} vs {describe(rec)}); "
                "compare only models trained on the same data"
            )
    return first


def load_recorded_data(
    models: Sequence[tuple[str, Mapping[str, Any]]],
    dataset: str | None = None,
    subset: int | str | None = None,
    subset_seed: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """The training data the models were trained on, or what the user explicitly asked for instead.

    Returns ``(dataset, info)`` where ``info`` is ``{name, subset, subset_seed, image_size,
    recorded, overridden}`` (``overridden`` lists the options that changed the recorded data),
    for the command's output. Checks that the data fits every model's input shape and classes.
    """
    rec = common_record(models)
    label = models[0][0]
    if rec["name"] is None and dataset is None:
        raise StardomainError(
            f"{label} records no training data (a save_pretrained folder or a plain state dict); pass --dataset NAME (and --subset N "
            "if it was trained on a subset): what you name is assumed to be its data, and recorded so"
        )
    want, overridden = _wanted(rec, label, dataset=dataset, subset=subset, subset_seed=subset_seed)
    unknown = sorted(set(rec) - _REBUILT) if "dataset" not in overridden else []
    if unknown:  # e.g. "stream": a folder streamed with resize+crop is other pixels than the in-memory reader gives
        key = unknown[0]
        hint = "evaluate it in an experiment with stream: true" if key == "stream" else "use the stardomain version that wrote it"
        raise StardomainError(
            f"{label} was trained on {rec['name']} with {key} {rec[key]}, which this command cannot "
            f"rebuild (it reads the data without it); {hint}, or pass --dataset to use other data"
        )
    ds, got = _rebuild(want, rec, label, recorded="dataset" not in overridden, data_root=data_root)
    _check_fits(models, ds, classes="dataset" not in overridden)
    info = {**got, "recorded": rec, "overridden": overridden}
    assumed = assumed_by(models)
    if assumed:  # what was assumed for checkpoints without provenance: printed (data_line) and recorded
        info["assumed"] = assumed
    return ds, info


def _wanted(
    rec: Mapping[str, Any], label: str, *, dataset: str | None, subset: int | str | None, subset_seed: int | None
) -> tuple[dict[str, Any], list[str]]:
    """The data record to rebuild: ``rec`` with the user's ``--dataset`` / ``--subset`` / ``--subset-seed`` applied,
    and the options that changed it. A seed without a subset, and a subset whose seed nobody knows, are refused."""
    from stardomain import data

    want = dict(rec)
    overridden: list[str] = []
    if dataset is not None and data.canonical_name(dataset) != rec["name"]:
        key = data.canonical_name(dataset)
        want = {"name": key, "subset": None, "subset_seed": None, "image_size": rec["image_size"] if data.accepts_image_size(key) else None}
        overridden.append("dataset")
    if subset is not None:
        size = None if subset == FULL else int(subset)
        if size != want["subset"]:
            want["subset"] = size
            overridden.append("subset")
        if size is None:
            want["subset_seed"] = None
    if subset_seed is not None and want["subset"] is None:  # ignoring it would silently use the whole split
        why = (
            "--subset all asks for"
            if subset == FULL
            else f"--dataset {dataset} uses"
            if "dataset" in overridden
            else f"{label} was trained on"
        )
        raise StardomainError(
            f"--subset-seed {subset_seed} draws a subset, but {why} the full train split; "
            "add --subset N to evaluate on a seeded subset, or drop --subset-seed"
        )
    if subset_seed is not None and want["subset"] is not None and subset_seed != want["subset_seed"]:
        want["subset_seed"] = int(subset_seed)
        overridden.append("subset_seed")
    if want["subset"] is not None and want["subset_seed"] is None:
        if "subset" in overridden:
            want["subset_seed"] = 0
        else:
            raise StardomainError(
                f"{label} was trained on a {want['subset']}-sample subset whose seed was not recorded (older stardomain); "
                f"pass --subset-seed S (the seed that drew it) or --subset {FULL}, or retrain"
            )
    return want, overridden


def _rebuild(
    want: Mapping[str, Any], rec: Mapping[str, Any], label: str, *, recorded: bool, data_root: str | os.PathLike[str] | None
) -> tuple[Any, dict[str, Any]]:
    """The dataset of ``want`` and its record. A ``recorded`` name (not --dataset) comes from the file, so it may
    reach only registered datasets and code the user named; a recorded file's SHA-256 must still match (a changed
    file is other data)."""
    from stardomain import data
    from stardomain._util.plugins import recorded_names

    with recorded_names(f"{label} (its data record)") if recorded else contextlib.nullcontext():
        ds = data.load_dataset(
            want["name"], root=data_root, subset=want["subset"], seed=want["subset_seed"] or 0, image_size=want["image_size"]
        )
    got = ds.record()
    if recorded and rec.get("sha256") is not None and got.get("sha256") != rec["sha256"]:
        raise StardomainError(
            f"{label} was trained on {rec['name']} with SHA-256 {rec['sha256'][:12]}, but that file now "
            f"has {str(got.get('sha256'))[:12]}: it changed; restore it or pass --dataset to use other data"
        )
    return ds, got


def _check_fits(models: Sequence[tuple[str, Mapping[str, Any]]], ds: Data, *, classes: bool) -> None:
    """Every model can read ``ds``: its input shape and class count, and (``classes``: the recorded data, not
    --dataset) its class list; a save_pretrained folder, which records no shape of its data, by its config."""
    for label, meta in models:
        if "pretrained" in meta:
            from stardomain.checkpoints.pretrained import fits_dataset

            fits_dataset(label, meta, ds)
            continue
        check_shapes(label, meta, ds)
        if classes:
            check_classes(label, meta, ds)


def assumed_by(models: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, list[str]]:
    """``{label: [what was assumed]}`` for the checkpoints that record no provenance (save_pretrained folders)."""
    return {str(label): list(meta["assumed"]) for label, meta in models if meta.get("assumed")}


def data_line(info: Mapping[str, Any]) -> str:
    """One line for stdout: which data the figures come from, and whether it was the recorded data."""
    if info["recorded"].get("name") is None:
        assumed = "; ".join(dict.fromkeys(line for lines in dict(info.get("assumed") or {}).values() for line in lines))
        return f"data: {describe(info)} (named by --dataset: the checkpoints record none; assumed: {assumed})"
    if not info["overridden"]:
        return f"data: {describe(info)} (as recorded in the checkpoints)"
    return f"data: {describe(info)} (overridden: {', '.join(info['overridden'])}; recorded: {describe(info['recorded'])})"


def check_shapes(label: str, meta: Mapping[str, Any], ds: Data) -> None:
    """A model can only be evaluated on data of the shape and class count it was built for."""
    arch = meta["arch"]
    if list(arch["in_shape"]) != list(ds.in_shape) or int(arch["num_classes"]) != ds.num_classes:
        raise StardomainError(
            f"{label} expects input {tuple(arch['in_shape'])} with {arch['num_classes']} classes but {ds.name} has "
            f"{tuple(ds.in_shape)} with {ds.num_classes}; pass the --dataset it was trained on ({meta.get('dataset')})"
        )


def check_classes(label: str, meta: Mapping[str, Any], ds: Data) -> None:
    """Image folders all share the name ``imagefolder``: the recorded class list tells another folder apart."""
    trained = dict(dict(meta.get("config") or {}).get("data") or {}).get("classes")
    here = list(getattr(ds, "classes", None) or [])
    if trained is not None and here and list(trained) != here:

        def short(names: Sequence[str]) -> str:
            return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")

        raise StardomainError(
            f"{label} was trained on a {ds.name} with classes {short(list(trained))}, but this one has "
            f"{short(here)}: other data; pass the --data-root it was trained on"
        )


def star_sources(
    star_path: str | os.PathLike[str], meta: Checkpoint | Mapping[str, Any], search_dir: str | os.PathLike[str] | None = None
) -> list[Any]:
    """The exact source checkpoints a star was trained on: found from its metadata and hash-checked.

    A recorded path may be relative to the star's folder (the CLI), to the folder above it (a
    run folder: ``stars/X`` next to ``zoo/``) or to the working directory; ``search_dir`` is
    searched by hash when a file has moved. A file at the recorded path with other weights,
    or a source found nowhere, is refused: BMA over models the star never saw is another study.
    """
    from pathlib import Path

    from stardomain.checkpoints import store
    from stardomain.checkpoints.meta import Checkpoint, read_checkpoint

    recorded = Checkpoint.of(meta, star_path).sources
    if not recorded:
        raise StardomainError(
            f"{star_path} records no sources (not a star written by stardomain star); "
            "pass --other-sources DIR to choose the sources yourself"
        )
    star_dir = Path(star_path).resolve().parent
    by_hash: dict[str | None, Path] | None = None
    found: list[Path] = []
    for entry in recorded:
        rel, want = Path(entry.path), entry.sha256
        candidates = [rel] if rel.is_absolute() else [star_dir / rel, star_dir.parent / rel, Path.cwd() / rel]
        hit, other = None, None
        for c in candidates:
            if store.is_complete(c):
                if read_checkpoint(c).sha256 == want:
                    hit = c
                    break
                other = other or c
        if hit is None and search_dir is not None:
            if by_hash is None:
                by_hash = {read_checkpoint(p).sha256: p for p in store.find_checkpoints(search_dir, recursive=False)}
            hit = by_hash.get(want)
        if hit is None:
            if other is not None:
                raise StardomainError(
                    f"{other} is not the source {star_path} was trained on (SHA-256 differs from the recorded "
                    f"{want[:12]}); restore it, pass --sources DIR holding it, or --other-sources DIR to use another set"
                )
            where = f"{star_dir}, {star_dir.parent}, {Path.cwd()}" + (f" or {search_dir}" if search_dir is not None else "")
            raise StardomainError(
                f"source {rel} of {star_path} (SHA-256 {want[:12]}) is missing: not found in {where}; "
                "pass --sources DIR holding it, or --other-sources DIR to use another set"
            )
        found.append(hit)
    return found
