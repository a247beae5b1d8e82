"""An experiment config -> its plan: every model to train and every evaluation, as units.

The plan is derived from the studies themselves: the main barrier study here, then every registered
:class:`~stardomain.experiment.study.Study` asks the builder for what it needs (:meth:`Study.plan`). run()
is executed afterwards in *assemble* mode, where every model and evaluation must already be on disk,
so a unit a study's plan forgot fails loudly instead of being computed behind the executor's back. Units are named by what they make
(``train/main/seed-3``, ``star/main-z10``, ``pair/star/main-z10~train/main/seed-1000``), and a
worker rebuilds the same plan from (config, run folder) to find what a unit id means.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from stardomain.experiment.plan import Plan, Unit


@dataclass
class _Action:
    """How to compute a unit, whether it is done, the file it writes (resolved once inputs exist), and its key:
    what the unit's result is a function of (a model's call, an evaluation's cache key), for tests and tools."""

    compute: Callable[[], Any]
    done: Callable[[], bool]
    output: Callable[[], Path]
    key: Callable[[], Any]


def call_key(call: functools.partial) -> dict[str, Any]:
    """A model unit's key, read off the very call that computes it (the function, its arguments)."""
    from stardomain.experiment.folder import plain

    return {"fn": getattr(call.func, "__qualname__", repr(call.func)), "args": plain(call.args), "kwargs": plain(call.keywords)}


def _same(path: Path) -> Path:
    return path


def _all_complete(paths: Sequence[Path]) -> bool:
    from stardomain.checkpoints import store

    return all(store.is_complete(p) for p in paths)


@dataclass(frozen=True)
class _Model:
    """A model some unit produces: its unit id and checkpoint path."""

    unit: str
    path: Path


class PlanBuilder:
    """Collects the units the studies ask for: the plan-side twin of the Experiment's own methods."""

    def __init__(self, exp: Any):
        self.exp = exp
        self.units: dict[str, Unit] = {}
        self.actions: dict[str, _Action] = {}

    def _add(self, unit: Unit, action: _Action) -> None:
        if unit.id not in self.units:  # the same model or pair asked for by two studies is one unit
            self.units[unit.id] = unit
            self.actions[unit.id] = action

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.exp.out))

    def zoo(self, tag: str, options: Mapping[str, Any], recipe: Any, n_sources: int, n_held: int) -> tuple[list[_Model], list[_Model]]:
        from stardomain.checkpoints import store

        m = self.exp.cfg.batch_models
        if m > 1:
            return self._zoo_groups(tag, options, recipe, n_sources, n_held, m)
        models = []
        for seed, role in self.exp.zoo_seeds(n_sources, n_held):
            path = self.exp.member_path(tag, seed)
            uid = f"train/{tag}/seed-{seed}"
            call = functools.partial(self.exp.train_one, tag, options, recipe, seed, role)
            self._add(
                Unit(uid, "train", self._rel(path)),
                _Action(
                    call, functools.partial(store.is_complete, path), functools.partial(_same, path), functools.partial(call_key, call)
                ),
            )
            models.append(_Model(uid, path))
        return models[:n_sources], models[n_sources:]

    def _zoo_groups(
        self, tag: str, options: Mapping[str, Any], recipe: Any, n_sources: int, n_held: int, m: int
    ) -> tuple[list[_Model], list[_Model]]:
        """``train.batch_models`` M: one unit per M members of one role, in seed order (a fixed grouping,
        so every executor trains the same groups); its outputs are the members."""

        seeds = self.exp.zoo_seeds(n_sources, n_held)
        models = []
        for role in dict.fromkeys(r for _, r in seeds):
            mine = [s for s, r in seeds if r == role]
            for i in range(0, len(mine), m):
                group = mine[i : i + m]
                paths = [self.exp.member_path(tag, s) for s in group]
                uid = f"train/{tag}/seeds-{group[0]}-{group[-1]}"
                call = functools.partial(self.exp.train_group, tag, options, recipe, group, role)
                self._add(
                    Unit(uid, "train", self._rel(paths[0].parent)),
                    _Action(
                        call,
                        functools.partial(_all_complete, paths),
                        functools.partial(_same, paths[0].parent),
                        functools.partial(call_key, call),
                    ),
                )
                models += [_Model(uid, p) for p in paths]
        return models[:n_sources], models[n_sources:]

    def star(
        self, tag: str, sources: Sequence[_Model], options: Mapping[str, Any], recipe: Any, mu: float, repeat: int = 0, repeats: int = 1
    ) -> _Model:
        from stardomain.checkpoints import store

        path = self.exp.star_path(tag)
        uid = f"star/{tag}"
        paths = [m.path for m in sources]
        call = functools.partial(self.exp.star_model, tag, paths, options, recipe, mu, repeat=repeat, repeats=repeats)
        self._add(
            Unit(uid, "star", self._rel(path), tuple(dict.fromkeys(m.unit for m in sources))),
            _Action(
                call,
                functools.partial(store.is_complete, path),
                functools.partial(_same, path),
                functools.partial(self._star_key, tag, paths, options, recipe, mu, repeat, repeats),
            ),
        )
        return _Model(uid, path)

    def _star_key(self, tag: str, paths: Sequence[Path], *args: Any) -> dict[str, Any]:
        """A star unit's key: its sources and every keyword train_star receives (Experiment.star_call)."""
        from stardomain.experiment.folder import plain

        return {"sources": plain(list(paths)), "train_star": plain(self.exp.star_call(tag, *args))}

    def stars(self, tag: str, sources: Sequence[_Model], options: Mapping[str, Any], recipe: Any, mu: float) -> list[_Model]:
        """One unit per repeat of a star (the tags of :meth:`Experiment.star_tags`)."""
        tags = self.exp.star_tags(tag)
        return [self.star(t, sources, options, recipe, mu, repeat=r, repeats=len(tags)) for r, t in enumerate(tags)]

    def evaluation(
        self, stage: str, uid: str, inputs: Sequence[_Model], key: Callable[[], Mapping[str, Any]], compute: Callable[[], Any]
    ) -> None:
        from stardomain.checkpoints import store

        def output() -> Path:
            return self.exp.cache.path(stage, key())

        def done() -> bool:
            return all(store.is_complete(m.path) for m in inputs) and self.exp.cache.has(output())

        self._add(Unit(uid, stage, f"cache/{stage}", tuple(dict.fromkeys(m.unit for m in inputs))), _Action(compute, done, output, key))

    def pair(self, a: _Model, b: _Model, bn: str = "reset") -> None:
        # a batched zoo's members share a unit: the pair is named by the checkpoints it compares
        name = f"{a.unit}~{b.unit}" if self.exp.cfg.batch_models == 1 else f"{self._rel(a.path)}~{self._rel(b.path)}"
        self.evaluation(
            "pairs",
            f"pair/{name}" + ("" if bn == "reset" else f"@bn-{bn}"),
            [a, b],
            functools.partial(self.exp.pair_key, a.path, b.path, None, bn),
            functools.partial(self.exp.pair, a.path, b.path, None, bn),
        )

    def groups(self, sources: Sequence[_Model], held: Sequence[_Model], stars: Sequence[_Model], bn: str = "reset") -> None:
        for pairs in self.exp.group_pairs(list(sources), list(held), list(stars)).values():
            for a, b in pairs:
                self.pair(a, b, bn)

    def setting(self, tag: str, options: Mapping[str, Any], recipe: Any, n_sources: int, n_held: int, star_recipe: Any) -> None:
        sources, held = self.zoo(tag, options, recipe, n_sources, n_held)
        self.groups(sources, held, self.stars(f"{tag}-z{n_sources}", sources, options, star_recipe, self.exp.cfg.star.mu))


def build_plan(exp: Any) -> tuple[Plan, dict[str, _Action]]:
    """The units of ``exp`` (an :class:`Experiment`) in the order ``run()`` would compute them."""
    from stardomain.experiment.study import Main, registered_studies

    cfg, st = exp.cfg, exp.cfg.studies
    b = PlanBuilder(exp)
    options = cfg.model_options()
    star_recipe = cfg.star_recipe(exp.recipe, cfg.star.recipe)
    sources, held = b.zoo("main", options, exp.recipe, cfg.zoo_size, cfg.held_out)
    z = sources[: cfg.sources]
    mains = b.stars(f"main-z{cfg.sources}", z, options, star_recipe, cfg.star.mu)
    if st.barriers or st.distances:
        b.groups(z, held, mains)
        if cfg.eval.bn_ablation and exp.has_batchnorm():
            b.groups(z, held, mains, bn="interpolate")
    main = Main(sources=sources, held=held, z=z, stars=mains, options=options, star_recipe=star_recipe)
    for study in registered_studies():
        if study.enabled(cfg):
            study.plan(b, main)
    return Plan(b.units.values()), b.actions


def unit_keys(exp: Any) -> dict[str, Any]:
    """Every unit of ``exp``'s plan and its key: a config setting that reaches a unit's computation changes
    that unit's key (tests/experiment/test_cache_keys.py flips every field to hold this)."""
    return {uid: action.key() for uid, action in build_plan(exp)[1].items()}


@functools.lru_cache(maxsize=2)
def _worker_experiment(config_json: str, out_dir: str) -> tuple[Any, dict[str, _Action]]:
    """One Experiment (dataset loaded once) per worker process and run folder: Ray reuses workers."""
    from stardomain.experiment.config import experiment_config
    from stardomain.experiment.pipeline import Experiment

    data = {**json.loads(config_json), "logging": {}}  # metrics sinks belong to the driver
    exp = Experiment(experiment_config(data), out_dir, progress=False)
    return exp, build_plan(exp)[1]


class ExperimentJob:
    """The picklable unit runner of one experiment: (config, run folder) -> any unit by id.

    In the driver's process it uses the driver's Experiment (the local executor: today's run,
    same dataset object, same log); unpickled in a worker it rebuilds one from the config.
    """

    def __init__(self, config: Mapping[str, Any], out_dir: str | os.PathLike, local: Any = None):
        self.config_json = json.dumps(dict(config), sort_keys=True, default=str)
        self.out_dir = str(out_dir)
        self._local = (local, build_plan(local)[1]) if local is not None else None

    def __getstate__(self) -> dict[str, Any]:
        return {"config_json": self.config_json, "out_dir": self.out_dir, "_local": None}

    def _actions(self) -> dict[str, _Action]:
        return (self._local or _worker_experiment(self.config_json, self.out_dir))[1]

    def prepare(self) -> None:
        self._actions()

    def __call__(self, unit_id: str) -> None:
        self._actions()[unit_id].compute()

    def is_done(self, unit: Unit) -> bool:
        return self._actions()[unit.id].done()

    def output(self, unit: Unit) -> Path:
        return self._actions()[unit.id].output()


@functools.lru_cache(maxsize=2)
def _worker_dataset(data_json: str) -> Any:
    """The zoo's dataset, loaded once per worker process (plugins first: they may define it)."""
    from stardomain import data
    from stardomain._util.plugins import is_import_path, load_plugins

    spec = json.loads(data_json)
    load_plugins([n for n in (spec["name"], spec["model"]) if is_import_path(n)])
    return data.load_dataset(
        spec["name"], root=spec["root"], subset=spec["subset"], seed=spec["subset_seed"], image_size=spec["image_size"]
    )


class ZooJob:
    """`stardomain train --n N --executor ...`: one unit per seed, each a zoo member (picklable).

    ``data`` holds what rebuilds the dataset in a worker: name, root, subset, subset_seed, image_size
    (and ``model``, for plugins); ``local`` is the driver's already loaded dataset.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        model_name: str,
        options: Mapping[str, Any],
        recipe: Mapping[str, Any],
        out_dir: str | os.PathLike,
        role: str,
        device: str,
        local: Any = None,
    ):
        self.data_json = json.dumps({**dict(data), "model": model_name}, sort_keys=True)
        self.model_name, self.options, self.recipe = model_name, dict(options), dict(recipe)
        self.out_dir, self.role, self.device = str(out_dir), role, device
        self._local = local

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_local": None}

    def plan(self, seeds: Sequence[int]) -> Plan:
        from stardomain.training import zoo

        return Plan(Unit(f"train/seed-{s}", "train", zoo.member_path(".", s).name) for s in seeds)

    def output(self, unit: Unit) -> Path:
        return Path(self.out_dir) / unit.output

    def is_done(self, unit: Unit) -> bool:
        from stardomain.checkpoints import store

        return store.is_complete(self.output(unit))

    def prepare(self) -> None:
        if self._local is None:
            _worker_dataset(self.data_json)

    def __call__(self, unit_id: str) -> None:
        from stardomain._util.device import resolve_device
        from stardomain.training import zoo
        from stardomain.training.loop import Recipe

        ds = self._local if self._local is not None else _worker_dataset(self.data_json)
        zoo.train_member(
            ds,
            self.model_name,
            self.options,
            Recipe.from_dict(self.recipe),
            int(unit_id.rsplit("-", 1)[1]),
            self.out_dir,
            device=resolve_device(self.device),
            progress=False,
            role=self.role,
        )
