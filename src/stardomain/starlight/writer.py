"""Train one star model and write its checkpoint: the one star writer the CLI, the pipeline and the API call.

Everything that makes a star trustworthy lives here once: its seed seeds its initial weights (never a
source's), it is refused when it would start from a source's init, its resume state is named by what
it belongs to, and its metadata records one schema whoever trained it (:data:`STAR_META_KEYS`): the
data, the sources by path *and* SHA-256 *and* seed, the seed and what it was drawn from, the init,
the Starlight config, the budget against the sources' and the spec's coverage.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import torch

from stardomain._util.progress import ProgressConfig
from stardomain.checkpoints.meta import Checkpoint, read_checkpoint
from stardomain.errors import StardomainError
from stardomain.starlight.algorithm import Starlight, StarlightResult
from stardomain.starlight.config import StarlightConfig, check_not_source_init, repeat_seed

if TYPE_CHECKING:
    from stardomain.data.protocol import Data

# every star checkpoint's metadata holds exactly these keys (tests compare the CLI's and the pipeline's)
STAR_META_KEYS = (
    "kind",
    "role",
    "arch",
    "dataset",
    "data",
    "seed",
    "seed_option",
    "repeat",
    "repeats",
    "identity",
    "init",
    "starlight",
    "sources",
    "budget",
    "metrics",
    "history",
    "spec_coverage",
    "torch_threads",
)


@dataclass(frozen=True)
class StarCheckpoint:
    """A star on disk: where, its metadata, and the run's result (None when an existing star was reused).
    ``meta["metrics"]`` gives the star's train/test accuracy as fractions in [0, 1], as every checkpoint does."""

    path: Path
    meta: dict[str, Any]
    result: StarlightResult | None = None

    @property
    def trained(self) -> bool:
        return self.result is not None

    @property
    def checkpoint(self) -> Checkpoint:
        """``meta`` typed (:class:`~stardomain.checkpoints.meta.Checkpoint`): what readers in stardomain use."""
        return Checkpoint.of(self.meta, self.path)


def star_identity(
    config: StarlightConfig, source_hashes: Sequence[str], seed: int, init: str, model: str, options: Mapping[str, Any]
) -> dict[str, Any]:
    """What a star is a function of besides its data: reusing a star whose identity differs is refused."""
    return {
        "config": config.to_dict(),
        "sources": list(source_hashes),
        "seed": int(seed),
        "init": init,
        "model": model,
        "options": dict(options),
    }


def default_resume_path(out: Path, identity: Mapping[str, Any], data: Mapping[str, Any]) -> Path:
    """``.<stem>.<hash>.state.safetensors`` beside the star: a re-run with other sources or settings never picks it up."""
    digest = hashlib.sha256(json.dumps({"identity": identity, "data": data}, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return out.with_name(f".{out.stem}.{digest}.state.safetensors")


def _remove_own_temps(out: Path, resume: Path, older_than: float) -> list[Path]:
    """The temp files a killed run of this star left: those of the star, of its resume state and of their JSON
    files, in their own folders only (the names of no other file, no other folder). A re-run calls it once its
    star is written, with its own start time: a write still going on since then is never touched."""
    from stardomain._util.fileio import remove_stray_temps
    from stardomain.checkpoints import store

    removed: list[Path] = []
    for p in dict.fromkeys((out, resume)):
        removed += remove_stray_temps(p.parent, older_than, targets=[p.name, store.metadata_path(p).name])
    return removed


def _init_state(init: str, model: torch.nn.Module, states: Sequence[Mapping[str, torch.Tensor]], sources: Sequence[Checkpoint]) -> None:
    """Start the star where ``init`` says: ``fresh`` (its own seeded init), ``source`` (the first source) or a checkpoint."""
    from stardomain._util.diff import state_mismatch
    from stardomain.checkpoints import store

    if init == "source":
        model.load_state_dict(states[0])
    elif init != "fresh":
        init_state = store.load_state(init)[0]
        problem = state_mismatch(model.state_dict(), init_state)
        if problem is not None:
            name = getattr(model, "arch", {}).get("name", "?")
            raise StardomainError(
                f"--init {init} does not fit the sources' architecture {name}: {problem}; "
                "start from a checkpoint of the same architecture, or drop --init for a fresh init"
            )
        model.load_state_dict(init_state)
    else:
        check_not_source_init(model.state_dict(), [(str(ck.path), ck.raw) for ck in sources])


def _reuse(out: Path, ident: Mapping[str, Any], data: Mapping[str, Any], resume: Path, started: float) -> StarCheckpoint:
    """The finished star at ``out`` when it is this very star (same identity and data); one of other data or settings is
    refused in one line, never silently retrained over."""
    from stardomain._util.diff import difference_phrases
    from stardomain.checkpoints.provenance import describe

    old = read_checkpoint(out)
    if old.identity == ident and old.data is not None and old.data != data:  # older pipeline stars record no data
        raise StardomainError(
            f"{out} was trained on other data ({describe(old.data)} there, {describe(data)} here); delete it or use another --out folder"
        )
    if old.identity == ident:
        _remove_own_temps(out, resume, started)
        return StarCheckpoint(out, dict(old.raw))
    there, here = difference_phrases(old.identity or {}, ident) or ("?", "?")
    raise StardomainError(
        f"{out} was trained with other settings ({there} there, {here} in this config); delete it or use another --out folder"
    )


def existing_stars(
    outs: Sequence[Path],
    sources: Sequence[Checkpoint],
    dataset: Data,
    config: StarlightConfig,
    seed: int,
    init: str,
    force: bool = False,
) -> list[bool]:
    """Which of ``outs`` (repeat r at ``outs[r]``, its seed ``repeat_seed(seed, r)``) already hold this very star (same
    sources, settings, seed, init and data): to be reused. Checked before any star is trained, so one of another
    identity is refused in one line naming --force; ``force`` retrains all."""
    from stardomain._util.diff import difference_phrases
    from stardomain.checkpoints import store
    from stardomain.training.zoo import dataset_record

    if force:
        return [False] * len(outs)
    arch, hashes, reuse = sources[0].arch, None, []
    for r, out in enumerate(outs):
        if not store.is_complete(out):
            reuse.append(False)
            continue
        hashes = hashes or [store.content_hash(ck.path) for ck in sources]
        ident = star_identity(config, hashes, repeat_seed(seed, r), init, arch.name, arch.options)
        old, data = read_checkpoint(out), dataset_record(dataset)
        there = {**(old.identity or {}), "data": data if old.data is None else old.data}
        differs = difference_phrases(there, {**ident, "data": data})
        if differs:
            raise StardomainError(
                f"{out} already holds a star of other settings ({differs[0]} there, {differs[1]} requested); "
                "pass --force to replace it, or choose another --out"
            )
        reuse.append(True)
    return reuse


def train_star(
    sources: Sequence[str | os.PathLike[str]],
    dataset: Data,
    config: StarlightConfig,
    out: str | os.PathLike[str],
    *,
    seed: int,
    seed_option: int | None = None,
    init: str = "fresh",
    repeat: int = 0,
    repeats: int = 1,
    epochs_factor: float | None = None,
    model: str | None = None,
    options: Mapping[str, Any] | None = None,
    existing: Literal["reuse", "replace"] = "reuse",
    resume_path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    progress: bool | ProgressConfig | None = None,
    allow_unpermuted: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> StarCheckpoint:
    """Train (or reuse) the star of ``sources`` (checkpoints) on ``dataset`` with Starlight and save it at ``out``.

    ``seed`` is the star's own (draw it with :func:`~stardomain.starlight.star_seed` or
    :func:`~stardomain.starlight.repeat_seed` from ``seed_option``): it seeds the initial weights,
    batch order and t draws. ``init``: ``fresh``, ``source`` or a checkpoint path. ``model``/``options``
    name what the caller asked for (recorded in the identity; default: the sources' recorded
    architecture, which builds the star). With ``existing="reuse"`` a finished star of the same
    identity is returned as it is and one of another identity refused; ``"replace"`` retrains.
    ``on_epoch(record)`` is called after each epoch trained here (its history record; no part of the identity).
    """
    from stardomain.checkpoints import store
    from stardomain.data.protocol import data_example
    from stardomain.training.loop import final_metrics, seed_everything
    from stardomain.training.zoo import dataset_record

    started = time.time()
    out = Path(out)
    paths = [Path(p) for p in sources]
    if not paths:
        raise StardomainError("train_star: needs at least one source checkpoint")
    cks = [read_checkpoint(p) for p in paths]
    arch = cks[0].arch
    hashes = [store.content_hash(p) for p in paths]
    ident = star_identity(config, hashes, seed, str(init), model or arch.name, arch.options if options is None else options)
    data = dataset_record(dataset)  # a duck-typed dataset (train_x, ..., name) gets a record too
    resume = Path(resume_path) if resume_path is not None else default_resume_path(out, ident, data)
    if existing == "reuse" and store.is_complete(out):
        return _reuse(out, ident, data, resume, started)
    seed_everything(seed)
    star = store.build_model(arch.record)
    states = [store.load_state(p)[0] for p in paths]
    for p, s in zip(paths, states):
        store.check_fits(star, s, p)
    _init_state(str(init), star, states, cks)
    runner = Starlight(
        star,
        states,
        dataset,
        config,
        seed=seed,
        device=device,
        allow_unpermuted=allow_unpermuted,
        example_input=data_example(dataset).to(device),
    )  # traced on real inputs: token ids stay ids
    result = runner.fit(progress=progress, resume_path=resume, on_epoch=on_epoch)
    star_dir = out.resolve().parent
    meta = {
        "kind": "star",
        "role": "star",
        "arch": star.arch,
        "dataset": dataset.name,
        "data": data,
        "seed": seed,
        "seed_option": seed if seed_option is None else seed_option,
        "repeat": repeat,
        "repeats": repeats,
        "identity": ident,
        "init": str(init),
        "starlight": config.to_dict(),
        "sources": [{"path": os.path.relpath(p.resolve(), star_dir), "sha256": h, "seed": ck.seed} for p, h, ck in zip(paths, hashes, cks)],
        "budget": {
            "epochs": config.recipe.epochs,
            "epochs_factor": epochs_factor,
            "source_epochs": [(ck.recipe or {}).get("epochs") for ck in cks],
        },
        "metrics": final_metrics(runner.model, dataset, device=device),
        "history": result.history,
        "spec_coverage": runner.spec.summary()["covered_share"] if runner.spec is not None else None,
        "torch_threads": torch.get_num_threads(),
    }
    assert tuple(meta) == STAR_META_KEYS  # the one schema: a new key is added to STAR_META_KEYS too
    store.save(out, runner.model, meta)
    _remove_own_temps(out, resume, started)  # what a killed run of this star left (issue 30: it stayed for ever)
    return StarCheckpoint(out, store.read_metadata(out), result)  # as written (with its sha256)
