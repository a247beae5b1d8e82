"""The picklable unit runners the executors call (local, Ray, SLURM): ``stardomain run``'s (:class:`ExperimentJob`:
(config, run folder) -> any unit of the plan by id) and ``stardomain train``'s (:class:`ZooJob`: one zoo member per unit).

Above :mod:`.pipeline` and :mod:`.units` (a worker rebuilds the Experiment and its plan from the config), below
:mod:`.runner`, which hands them to :func:`~.executors.run_plan`.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from stardomain.experiment.plan import Plan, Unit
from stardomain.experiment.units import Action, build_plan

if TYPE_CHECKING:
    from stardomain.data import Dataset


@functools.lru_cache(maxsize=2)
def _worker_experiment(config_json: str, out_dir: str) -> tuple[Any, dict[str, Action]]:
    """One Experiment (dataset loaded once) per worker process and run folder: Ray reuses workers."""
    from stardomain.experiment.config import experiment_config
    from stardomain.experiment.pipeline import Experiment

    data = {**json.loads(config_json), "logging": {}}  # metrics sinks belong to the driver
    exp = Experiment(experiment_config(data), out_dir, progress=False)
    return exp, build_plan(exp).actions


class ExperimentJob:
    """The picklable unit runner of one experiment: (config, run folder) -> any unit by id.

    In the driver's process it uses the driver's Experiment (the local executor: today's run,
    same dataset object, same log); unpickled in a worker it rebuilds one from the config.
    """

    def __init__(self, config: Mapping[str, Any], out_dir: str | os.PathLike, local: Any = None):
        self.config_json = json.dumps(dict(config), sort_keys=True, default=str)
        self.out_dir = str(out_dir)
        self._local = (local, build_plan(local).actions) if local is not None else None

    def __getstate__(self) -> dict[str, Any]:
        return {"config_json": self.config_json, "out_dir": self.out_dir, "_local": None}

    def _actions(self) -> dict[str, Action]:
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
def _worker_dataset(data_json: str) -> Dataset:
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
