"""``stardomain run``: every study of the paper from one config, resumable at any point.

Work is split into units whose results live on disk as soon as they exist:
regular models in ``zoo/`` (one folder per training setting), star models in ``stars/``, and
every evaluation (one pair's curve, one BMA study) as a JSON file in ``cache/`` keyed by the
*content hashes* of the checkpoints it used plus the evaluation settings. A re-run therefore
redoes no finished model or evaluation, and half-finished training resumes from its per-epoch
state; since every unit is deterministic, a killed-and-resumed run ends with the same
``results.json`` as an uninterrupted one.

:class:`Experiment` owns the run folder and computes one model or evaluation per call (a unit's action); the studies
(:mod:`.studies`, each a registered :class:`~.study.Study`, the main barrier study first) say which units they need
and how their sections are made from them (:mod:`.units` turns that into the plan), and :meth:`Experiment.run`
assembles results.json from the unit files. :func:`~.runner.run_experiment` first hands the units to an executor
(:mod:`.executors` runs them here, on Ray or on SLURM), so results do not depend on who ran the units.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import torch

from stardomain._util.diff import difference_phrases
from stardomain._util.progress import format_event
from stardomain.analysis.stats import mean_std
from stardomain.checkpoints import store
from stardomain.checkpoints.meta import read_checkpoint, read_state
from stardomain.errors import StardomainError
from stardomain.experiment import pairs as pairing
from stardomain.experiment.config import ExperimentConfig
from stardomain.experiment.folder import (
    Cache,
    KeyedCall,
    check_same_execution,
    digest,
    execution_record,
    identity_part,
    read_marker,
    unplanned,
)
from stardomain.experiment.units import build_plan
from stardomain.training import zoo
from stardomain.training.loop import Recipe

SCHEMA_VERSION = 3
PAIR_VERSION = 2  # the pair cache key as a call (version 1: a hand-written key without eval_test_samples)
T = TypeVar("T")


class Experiment:
    """Runs the studies of one :class:`ExperimentConfig` into ``out_dir``."""

    def __init__(
        self, config: ExperimentConfig, out_dir: str | Path, progress: bool | None = None, log: Callable[[str], None] | None = None
    ):
        from stardomain._util.device import resolve_device
        from stardomain.data import open_dataset

        self.cfg = config
        self.out = Path(out_dir)
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.device = resolve_device(config.device)
        self.dataset = open_dataset(
            config.dataset,
            root=config.data_root,
            subset=config.subset,
            seed=config.seed,
            image_size=config.image_size,
            stream=config.stream,
        )
        self.recipe = config.source_recipe()
        self.cache = Cache(self.out / "cache")
        self._specs: dict[str, Any] = {}
        self._has_bn: bool | None = None
        from stardomain.experiment.sinks import EventLog, Sinks

        # events.jsonl and the metrics sinks (opened at the first event): every event of the run goes through here
        self.events = EventLog(self.out / "events.jsonl", Sinks(config.logging, self.out, config.name, config=config.to_dict()))

    # -- bookkeeping --------------------------------------------------------------------------
    def claim_folder(self) -> None:
        """Refuse to mix two different experiments in one folder (it would corrupt both)."""
        self.out.mkdir(parents=True, exist_ok=True)
        marker = self.out / "experiment.json"
        mine = self.cfg.to_dict()
        execution = execution_record(self.cfg.threads, self.device)
        if marker.exists():
            theirs = read_marker(marker)
            comparable = identity_part(mine)
            theirs = identity_part(theirs or {})
            if {k: theirs.get(k) for k in comparable} != comparable:
                there, here = difference_phrases({k: theirs.get(k) for k in comparable}, comparable) or ("?", "?")
                raise StardomainError(
                    f"{self.out} already holds a different experiment ({there} there, {here} in this config); use another --out folder"
                )
            check_same_execution(json.loads(marker.read_bytes()), execution, self.out)
        store.atomic_write_json(marker, {"config": mine, "schema_version": SCHEMA_VERSION, "execution": execution})

    def event(self, kind: str, **fields: Any) -> None:
        """Append a progress event (timings live here, never in results.json, which stays deterministic)."""
        self.record(kind, **fields)
        self.log(format_event(kind, fields))

    def record(self, kind: str, **fields: Any) -> None:
        """An event for events.jsonl and the metrics sinks only (the local executor's unit records and each
        epoch's: their units and progress meters already print their own lines)."""
        self.events.record(kind, **fields)

    def on_epoch(self, tag: str) -> Callable[[int, dict[str, Any]], None]:
        """Each finished epoch of a member of zoo ``tag`` as a ``train_epoch`` event (seed, epoch, losses, accuracies)."""
        return lambda seed, rec: self.record("train_epoch", zoo=tag, seed=seed, **rec)

    def has_batchnorm(self) -> bool:
        """Whether the configured model has BatchNorm (known before any model is trained: the plan asks)."""
        from stardomain import models
        from stardomain.barrier.bn import has_batchnorm

        if self._has_bn is None:
            with torch.random.fork_rng(devices=[]):  # building it must not move anyone's random stream
                m = models.create(self.cfg.model.name, self.dataset.num_classes, tuple(self.dataset.in_shape), **self.cfg.model_options())
            self._has_bn = has_batchnorm(m)
        return self._has_bn

    def spec(self, model: torch.nn.Module) -> Any:
        from stardomain.data.protocol import data_example
        from stardomain.permute import trace_spec

        key = digest(model.arch)
        if key not in self._specs:  # traced on the run's own inputs (their dtype and shape: token ids stay ids)
            self._specs[key] = trace_spec(model, example_input=data_example(self.dataset).to(self.device))
        return self._specs[key]

    # -- regular models ------------------------------------------------------------------------
    def zoo_folder(self, tag: str) -> Path:
        return self.out / "zoo" / tag

    def zoo_seeds(self, n_sources: int, n_held: int) -> list[tuple[int, str]]:
        """(seed, role): sources use seeds s0..s0+|Z|-1 and held-out models s0+1000.. so growing |Z| never changes H."""
        s0 = self.cfg.seed
        return [(s, "source") for s in range(s0, s0 + n_sources)] + [(s, "held_out") for s in range(s0 + 1000, s0 + 1000 + n_held)]

    def member_path(self, tag: str, seed: int) -> Path:
        return zoo.member_path(self.zoo_folder(tag), seed)

    def train_one(self, tag: str, options: Mapping[str, Any], recipe: Recipe, seed: int, role: str) -> Path:
        """Train (or reuse) one zoo member: one unit of the plan."""
        path = self.member_path(tag, seed)
        done = store.is_complete(path)
        if not done and self.cache.frozen:
            raise unplanned(path)
        t0 = time.perf_counter()
        out = zoo.train_member(
            self.dataset,
            self.cfg.model.name,
            options,
            recipe,
            seed,
            self.zoo_folder(tag),
            device=self.device,
            progress=self.progress,
            subset=self.cfg.subset,
            role=role,
            on_epoch=self.on_epoch(tag),
        )
        if not done:
            self.event("trained", zoo=tag, seed=seed, seconds=round(time.perf_counter() - t0, 2))
        return out

    def train_group(self, tag: str, options: Mapping[str, Any], recipe: Recipe, seeds: Sequence[int], role: str) -> list[Path]:
        """Train (or reuse) a group of zoo members in one pass (``train.batch_models``): one unit of the plan.
        Members are the same runs as one at a time (same identity; their metadata records ``batched``)."""
        paths = [self.member_path(tag, s) for s in seeds]
        done = all(store.is_complete(p) for p in paths)
        if not done and self.cache.frozen:
            raise unplanned(paths[0])
        t0 = time.perf_counter()
        out = zoo.train_zoo(
            self.dataset,
            self.cfg.model.name,
            options,
            recipe,
            list(seeds),
            self.zoo_folder(tag),
            device=self.device,
            progress=self.progress,
            subset=self.cfg.subset,
            role=role,
            batch_models=len(seeds),
            notify=self.log,
            on_epoch=self.on_epoch(tag),
        )
        if not done:
            self.event("trained", zoo=tag, seeds=list(seeds), seconds=round(time.perf_counter() - t0, 2))
        return out

    # -- star models ---------------------------------------------------------------------------
    def star_path(self, tag: str) -> Path:
        return self.out / "stars" / f"{tag}.safetensors"

    def star_tags(self, tag: str, repeats: int | None = None) -> list[str]:
        """The tags of a star's repeats: ``tag`` itself (repeat 0, the single star of older runs), then
        ``{tag}-r{r}``, whose seed is :func:`~stardomain.starlight.repeat_seed` of (seed, r, tag)."""
        k = self.cfg.star.repeats if repeats is None else repeats
        return [tag] + [f"{tag}-r{r}" for r in range(1, k)]

    def star_model(
        self,
        tag: str,
        sources: Sequence[Path],
        options: Mapping[str, Any],
        star_recipe: Recipe,
        mu: float,
        repeat: int = 0,
        repeats: int = 1,
    ) -> Path:
        """Train (or reuse) a star model on ``sources`` with ``star_recipe`` (already the star's own:
        see :meth:`ExperimentConfig.star_recipe`); its metadata records the sources' hashes and its seed."""
        from stardomain.starlight import train_star

        path = self.star_path(tag)
        if self.cache.frozen and not store.is_complete(path):
            raise unplanned(path)
        t0 = time.perf_counter()
        star = train_star(
            sources,
            self.dataset,
            **self.star_call(tag, options, star_recipe, mu, repeat, repeats),
            progress=self.progress,
            on_epoch=self.events.recorder("star_epoch", tag=tag),  # not in star_call: no part of the star's key
        )
        if star.trained:
            self.event("star", tag=tag, n_sources=len(sources), mu=mu, seconds=round(time.perf_counter() - t0, 2))
        return star.path

    def star_call(
        self, tag: str, options: Mapping[str, Any], star_recipe: Recipe, mu: float, repeat: int = 0, repeats: int = 1
    ) -> dict[str, Any]:
        """Every keyword :func:`~stardomain.starlight.train_star` gets for the star ``tag`` besides its sources and
        data: the star unit's key is read off it, so no setting reaches a star without reaching its key."""
        from stardomain.starlight import star_seed

        sc = self.cfg.star
        return {
            "config": self.cfg.starlight_config(star_recipe, mu),
            "out": self.star_path(tag),
            "seed": star_seed(self.cfg.seed, tag),  # its own stream, one per tag: never a source's init or batch order
            "seed_option": self.cfg.seed,
            "init": sc.init,
            "repeat": repeat,
            "repeats": repeats,
            "epochs_factor": sc.epochs_factor,
            "model": self.cfg.model.name,
            "options": options,
            "resume_path": self.out / "stars" / f".{tag}.state.safetensors",
            "device": self.device,
            "allow_unpermuted": self.cfg.allow_unpermuted,
        }

    # -- evaluations ---------------------------------------------------------------------------
    def data_record(self) -> dict[str, Any]:
        """The record of the data every unit reads (name, subset and its seed, image size): part of every key."""
        return zoo.dataset_record(self.dataset, self.cfg.subset)

    def pair_call(self, path_a: Path, path_b: Path, align: str | None = None, bn: str = "reset") -> KeyedCall:
        """One pair's evaluation as a call: both checkpoints and every setting :func:`evaluate_pair` receives
        (its cache key is derived from it, so no setting can be left out of the key)."""
        ev = self.cfg.eval
        align = ev.align if align is None else align
        settings: dict[str, Any] = {
            "align": align,
            "symmetry": ev.symmetry if align != "none" else "permutation",
            "points": ev.points,
            "bn": bn,
            "bn_samples": ev.bn_samples,
            "eval_train_samples": ev.eval_train_samples,
            "eval_test_samples": ev.eval_test_samples,
            "allow_unpermuted": self.cfg.allow_unpermuted,
            "seed": 0,
        }
        if align == "activation":  # weight matching never reads it: a change must not recompute its pairs
            settings["matching_samples"] = ev.matching_samples
        return KeyedCall("pairs", PAIR_VERSION, {"a": path_a, "b": path_b}, settings, self.data_record())

    def pair_compute(self, path_a: Path, path_b: Path) -> Callable[..., dict[str, Any]]:
        """The computation of one pair (called with :meth:`pair_call`'s settings): curve, barriers and distances;
        B is aligned to A first unless align is none."""

        def compute(**settings: Any) -> dict[str, Any]:
            from stardomain.barrier import evaluate_pair

            state_a, ck = read_state(path_a)
            state_b, _ = read_state(path_b)
            model = store.build_model(ck.arch.record).to(self.device)
            spec = self.spec(model) if settings["align"] != "none" else None
            result = evaluate_pair(state_a, state_b, model=model, dataset=self.dataset, spec=spec, device=self.device, **settings)
            return {"a": path_a.stem, "b": path_b.stem, **result.record()}

        return compute

    def group_pairs(self, sources: Sequence[T], held: Sequence[T], stars: Sequence[T]) -> dict[str, list[tuple[T, T]]]:
        """Which pairs each barrier group evaluates, of the plan's model handles (:func:`.studies.common.barrier_groups`)."""
        ev = self.cfg.eval
        k = len(sources) if ev.max_star_source_pairs is None else min(ev.max_star_source_pairs, len(sources))
        return {
            "regular-regular": pairing.regular_pairs(list(sources), ev.max_pairs, seed=self.cfg.seed),
            "star-source": [(star, s) for star in stars for s in sources[:k]],
            "star-held-out": [(star, h) for star in stars for h in held],
        }

    def endpoints(self, stars: Sequence[Path], sources: Sequence[Path], held: Sequence[Path]) -> dict[str, Any]:
        """Both endpoints of every barrier of this star: its and its models' test accuracy and loss.
        ``star`` is repeat 0's; with repeats, the stars' spread too, and the flag is raised if ANY repeat is poor."""
        metrics = lambda paths: [read_checkpoint(p).metrics_dict() for p in paths]  # noqa: E731
        margin = self.cfg.eval.star_acc_margin
        src, ho = metrics(sources), metrics(held)
        out = pairing.endpoints(read_checkpoint(stars[0]).metrics_dict(), src, ho, margin)
        if len(stars) > 1:
            each = [pairing.endpoints(m, src, ho, margin) for m in metrics(stars)]
            out["stars_over_repeats"] = {k: mean_std([e["star"][k] for e in each]) for k in ("test_acc", "test_loss")}
            out["stars_below_sources"] = [e["star_below_sources"] for e in each]
            out["star_acc_gaps"] = [e["star_acc_gap"] for e in each]
            out["star_below_sources"] = any(out["stars_below_sources"])
        from stardomain.analysis.convergence import zoo_convergence

        ev = self.cfg.eval  # the paper's models are converged: ~100 % train accuracy, train loss ~0.001
        out["convergence"] = zoo_convergence([*src, *ho], ev.converged_train_acc, ev.converged_train_loss)
        return out

    # -- the studies -----------------------------------------------------------------------------
    def run(self, assemble: bool = False) -> dict[str, Any]:
        """Every study's results. The studies' plan is built (:func:`~.units.build_plan`); unless ``assemble``
        (the executor ran its units already) its units are computed here, in order; then every section is resolved
        from the unit files, with nothing computed, so results are the same whoever ran the units."""
        from stardomain.experiment.study import compute_tests

        self.claim_folder()
        cfg = self.cfg
        self.event("assemble" if assemble else "start", name=cfg.name, device=self.device)
        planned = build_plan(self)
        if not assemble:
            for unit in planned.plan:
                planned.actions[unit.id].compute()
        self.cache.frozen = True
        results: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": cfg.name,
            "config": cfg.to_dict(),
            "dataset": {
                "name": self.dataset.name,
                "train": len(self.dataset.train_y),
                "test": len(self.dataset.test_y),
                "in_shape": list(self.dataset.in_shape),
                "num_classes": self.dataset.num_classes,
            },
            "recipe": self.recipe.to_dict(),
        }
        for study, section in planned.sections:
            planned.ctx.study = study.key
            value = planned.ctx.resolve(section)
            if study.merge:
                results.update(value)
            else:
                results[study.key] = value
        results["tests"] = compute_tests(results)
        self.event("done")
        self.events.close()
        return results
