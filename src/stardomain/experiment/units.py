"""An experiment config -> its plan: every model to train and every evaluation, as units.

The plan is what the studies ask for: every registered :class:`~stardomain.experiment.study.Study` (the main barrier
study first) runs once against a :class:`PlanContext`, which records each model and evaluation it asks for as a unit
and hands back a handle. The executor runs the units; the assembly then resolves the studies' sections from the
same context (:meth:`PlanContext.resolve`), reading every handle back from its file, so nothing is computed behind
the executor's back and no unit can be read that the plan did not hold. Units are named by what they make
(``train/main/seed-3``, ``star/main-z10``, ``pair/star/main-z10~train/main/seed-1000``), and a worker rebuilds the
same plan from (config, run folder) to find what a unit id means.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from stardomain.errors import StardomainError
from stardomain.experiment.plan import Plan, Unit
from stardomain.experiment.study import MAIN_SUMMARY, Model, Pending, read_pending

if TYPE_CHECKING:
    from stardomain.experiment.folder import KeyedCall


@dataclass
class Action:
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


class PlanContext:
    """What every :meth:`Study.run` runs against: it records each model and evaluation asked for as a unit (the plan)
    and hands back its handle; after the executor ran the units, :meth:`resolve` reads the handles back.

    Once planning is over the context is sealed: a computation that asks for a unit then (a unit the plan never
    held) is refused, so the plan and the assembly cannot differ.
    """

    def __init__(self, exp: Any):
        self.exp = exp
        self.cfg = exp.cfg
        self.units: dict[str, Unit] = {}
        self.actions: dict[str, Action] = {}
        self.study = "main"  # the study asking (for messages)
        self.sealed = False
        self._asked: dict[str, tuple[str, Any]] = {}  # unit id -> (the study that first asked, its call described)
        self._checked: set[str] = set()  # model units whose checkpoints were verified while resolving
        self._makers: dict[Path, str] = {}  # every checkpoint a unit of the plan makes -> that unit

    def _add(self, unit: Unit, action: Action, call: Any) -> None:
        """Record ``unit``; ``call`` describes what computes it, known while planning (a function and its arguments,
        or an evaluation's kind, version, checkpoint paths, settings and data): one id, one computation."""
        if self.sealed:
            raise StardomainError(
                f"study {self.study}: asked for {unit.id} while its results were assembled; ask for every unit in "
                "run() and compute with the handles inside ctx.derive (what a study asks for may not depend on results)"
            )
        if unit.id in self.units:  # the same model or pair asked for by two studies is one unit
            first, described = self._asked[unit.id]
            if described != call:
                raise StardomainError(
                    f"study {self.study}: asks for {unit.id} computed otherwise than study {first} asked for it; "
                    "give its tag (or evaluation id) a name of its own"
                )
            return
        self.units[unit.id] = unit
        self.actions[unit.id] = action
        self._asked[unit.id] = (self.study, call)

    def _made(self, unit: str, path: Path) -> Model:
        self._makers[path] = unit
        return Model(unit, path)

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.exp.out))

    # -- models -----------------------------------------------------------------------------------------------
    def zoo(self, tag: str, options: Mapping[str, Any], recipe: Any, n_sources: int, n_held: int) -> tuple[list[Model], list[Model]]:
        """The sources and held-out models of zoo ``tag`` (one unit each, or per ``train.batch_models`` group)."""
        from stardomain.checkpoints import store

        m = self.cfg.batch_models
        if m > 1:
            return self._zoo_groups(tag, options, recipe, n_sources, n_held, m)
        models = []
        for seed, role in self.exp.zoo_seeds(n_sources, n_held):
            path = self.exp.member_path(tag, seed)
            uid = f"train/{tag}/seed-{seed}"
            call = functools.partial(self.exp.train_one, tag, dict(options), recipe, seed, role)
            self._add(
                Unit(uid, "train", self._rel(path)),
                Action(call, functools.partial(store.is_complete, path), functools.partial(_same, path), functools.partial(call_key, call)),
                call_key(call),
            )
            models.append(self._made(uid, path))
        return models[:n_sources], models[n_sources:]

    def _zoo_groups(
        self, tag: str, options: Mapping[str, Any], recipe: Any, n_sources: int, n_held: int, m: int
    ) -> tuple[list[Model], list[Model]]:
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
                call = functools.partial(self.exp.train_group, tag, dict(options), recipe, group, role)
                self._add(
                    Unit(uid, "train", self._rel(paths[0].parent)),
                    Action(
                        call,
                        functools.partial(_all_complete, paths),
                        functools.partial(_same, paths[0].parent),
                        functools.partial(call_key, call),
                    ),
                    call_key(call),
                )
                models += [self._made(uid, p) for p in paths]
        return models[:n_sources], models[n_sources:]

    def star(
        self, tag: str, sources: Sequence[Model], options: Mapping[str, Any], recipe: Any, mu: float, repeat: int = 0, repeats: int = 1
    ) -> Model:
        """One star on ``sources`` (``recipe`` is already the star's own: :meth:`ExperimentConfig.star_recipe`)."""
        from stardomain.checkpoints import store

        path = self.exp.star_path(tag)
        uid = f"star/{tag}"
        paths = [m.path for m in sources]
        options = dict(options)
        call = functools.partial(self.exp.star_model, tag, paths, options, recipe, mu, repeat=repeat, repeats=repeats)
        key = functools.partial(self._star_key, tag, paths, options, recipe, mu, repeat, repeats)
        self._add(
            Unit(uid, "star", self._rel(path), tuple(dict.fromkeys(m.unit for m in sources))),
            Action(
                call,
                functools.partial(store.is_complete, path),
                functools.partial(_same, path),
                key,
            ),
            key(),
        )
        return self._made(uid, path)

    def _star_key(self, tag: str, paths: Sequence[Path], *args: Any) -> dict[str, Any]:
        """A star unit's key: its sources and every keyword train_star receives (Experiment.star_call)."""
        from stardomain.experiment.folder import plain

        return {"sources": plain(list(paths)), "train_star": plain(self.exp.star_call(tag, *args))}

    def stars(self, tag: str, sources: Sequence[Model], options: Mapping[str, Any], recipe: Any, mu: float) -> list[Model]:
        """Every repeat of a star, one unit each (the tags of :meth:`Experiment.star_tags`, ``star.repeats``)."""
        tags = self.exp.star_tags(tag)
        return [self.star(t, sources, options, recipe, mu, repeat=r, repeats=len(tags)) for r, t in enumerate(tags)]

    # -- evaluations ------------------------------------------------------------------------------------------
    def evaluation(self, call: KeyedCall, compute: Callable[..., Any], uid: str | None = None) -> Pending:
        """One cached evaluation: ``compute(**call.settings)``, cached under ``call``'s key (a
        :class:`~stardomain.experiment.folder.KeyedCall`: the checkpoints it reads, by content hash, and every setting).

        What it waits for is derived from the checkpoints ``call`` reads (each must be a model of the plan), and its
        unit id, unless ``uid`` names it, from its kind, those models and its settings: written nowhere by hand.
        """
        from stardomain.checkpoints import store
        from stardomain.experiment.folder import digest, plain

        paths = [p for v in call.inputs.values() for p in ([v] if isinstance(v, Path) else v)]
        unknown = [p for p in paths if p not in self._makers]
        if unknown:
            raise StardomainError(
                f"study {self.study}: {call.kind} reads {unknown[0]}, which no unit of the plan makes; give it a model "
                "handle's path (ctx.zoo, ctx.star)"
            )
        if uid is None:
            names = [self._makers[p] if sum(u == self._makers[p] for u in self._makers.values()) == 1 else self._rel(p) for p in paths]
            uid = f"{call.kind}/" + "~".join(dict.fromkeys(names)) + (f"@{digest(plain(call.settings))[:8]}" if call.settings else "")
        cache, name = self.exp.cache, uid

        def output() -> Path:
            return cache.path(call.kind, call.key())

        def done() -> bool:
            return all(store.is_complete(p) for p in paths) and cache.has(output())

        def run() -> Any:
            value = cache.run(call, compute)
            if not isinstance(value, dict):
                raise StardomainError(f"{name}: its computation returned {type(value).__name__}, not a JSON mapping; return a dict")
            return value

        described = {
            "kind": call.kind,
            "version": call.version,
            "inputs": plain(call.inputs),
            "settings": plain(call.settings),
            "data": plain(call.data),
        }
        waits = tuple(dict.fromkeys(self._makers[p] for p in paths))
        self._add(Unit(uid, call.kind, f"cache/{call.kind}", waits), Action(run, done, output, call.key), described)
        return Pending(uid, functools.partial(self._read, uid))

    def pair(self, a: Model, b: Model, bn: str = "reset") -> Pending:
        """One pair's curve, barriers and distances (B aligned to A with ``eval.align``); ``bn``: the BatchNorm protocol."""
        # a batched zoo's members share a unit: the pair is named by the checkpoints it compares
        name = f"{a.unit}~{b.unit}" if self.cfg.batch_models == 1 else f"{self._rel(a.path)}~{self._rel(b.path)}"
        uid = f"pair/{name}" + ("" if bn == "reset" else f"@bn-{bn}")
        return self.evaluation(self.exp.pair_call(a.path, b.path, None, bn), self.exp.pair_compute(a.path, b.path), uid=uid)

    def derive(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pending:
        """``fn(*args, **kwargs)`` at assembly, every handle in the arguments (within lists, tuples and dicts)
        replaced by its value: a model's by its checkpoint's path, an evaluation's by its result."""
        name = getattr(fn, "__name__", repr(fn))
        return Pending(f"{self.study}: {name}(...)", functools.partial(self._call, self.study, fn, args, kwargs))

    # -- assembly -----------------------------------------------------------------------------------------------
    def _assembling(self, what: str) -> None:
        if not self.sealed:
            raise StardomainError(
                f"study {self.study}: read {what} while planning; a result is known only when the results are assembled "
                "(compute with it inside ctx.derive)"
            )

    def _read(self, uid: str) -> Any:
        self._assembling(uid)
        return self.actions[uid].compute()  # read back through the unit the plan holds

    def _call(self, study: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._assembling(getattr(fn, "__name__", repr(fn)))
        self.study = study  # a unit asked for now is refused in this study's name
        value = fn(*self.resolve(args), **self.resolve(kwargs))
        where = handle_in(value)
        if where is not None:
            raise StardomainError(f"study {study}: {getattr(fn, '__name__', fn)} returned a handle at {where}; return values only")
        return value

    def resolve(self, obj: Any) -> Any:
        """``obj`` with every handle read back from its unit's file (the units must have run: assembly only)."""
        if isinstance(obj, Pending):
            return read_pending(obj)
        if isinstance(obj, Model):
            self._assembling(obj.unit)
            if obj.unit not in self._checked:  # the unit's call on a finished checkpoint: verified, never retrained
                self.actions[obj.unit].compute()
                self._checked.add(obj.unit)
            return obj.path
        if isinstance(obj, dict):
            return {k: self.resolve(v) for k, v in obj.items()}
        if type(obj) in (list, tuple):
            return type(obj)(self.resolve(v) for v in obj)
        return obj


def handle_in(obj: Any, where: str = "") -> str | None:
    """Where a handle (Model, Pending) sits inside ``obj``, or None."""
    if isinstance(obj, (Pending, Model)):
        return where or "the top"
    if isinstance(obj, dict):
        return next((w for k, v in obj.items() if (w := handle_in(v, f"{where}[{k!r}]")) is not None), None)
    if isinstance(obj, (list, tuple)):
        return next((w for i, v in enumerate(obj) if (w := handle_in(v, f"{where}[{i}]")) is not None), None)
    return None


def check_section(study: str, obj: Any, where: str = "") -> None:
    """A study's section holds plain JSON values and handles only: anything else would reach results.json unresolved
    (or not at all) after every unit ran; refused while planning, naming where it sits."""
    if isinstance(obj, (Pending, Model)) or obj is None or type(obj) in (str, int, float, bool):
        return
    if type(obj) is dict:
        for k, v in obj.items():
            if not isinstance(k, str):
                raise StardomainError(f"study {study}: its section has the key {k!r} at {where or 'the top'}; use strings")
            check_section(study, v, f"{where}[{k!r}]")
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            check_section(study, v, f"{where}[{i}]")
        return
    raise StardomainError(
        f"study {study}: its section holds a {type(obj).__name__} at {where or 'the top'}; return dicts, lists, strings, "
        "numbers and handles (build anything else inside ctx.derive)"
    )


@dataclass
class Planned:
    """The plan of an experiment (its units in order, how to compute each) and every study's section as handles."""

    plan: Plan
    actions: dict[str, Action]
    sections: list[tuple[Any, Any]]  # (study, section of handles) in the order the studies ran
    ctx: PlanContext


def build_plan(exp: Any) -> Planned:
    """Every study of ``exp`` (an :class:`Experiment`) run against one :class:`PlanContext`: the units in the order
    they were asked for, and the sections to resolve once they ran."""
    from stardomain.experiment.study import Main, registered_studies

    cfg = exp.cfg
    ctx = PlanContext(exp)
    options = cfg.model_options()
    star_recipe = cfg.star_recipe(exp.recipe, cfg.star.recipe)
    sources, held = ctx.zoo("main", options, exp.recipe, cfg.zoo_size, cfg.held_out)
    z = sources[: cfg.sources]
    mains = ctx.stars(f"main-z{cfg.sources}", z, options, star_recipe, cfg.star.mu)
    main = Main(tuple(sources), tuple(held), tuple(z), tuple(mains), MappingProxyType(options), star_recipe)
    sections = []
    for study in registered_studies():
        if study.enabled(cfg):
            ctx.study = study.key
            section = study.run(ctx, main)
            if study.merge and isinstance(section, dict):  # the main study: its summary is what the others compare with
                main = dataclasses.replace(main, summary=section.pop(MAIN_SUMMARY, None))
            check_section(study.key, section)
            sections.append((study, section))
    ctx.sealed = True
    return Planned(Plan(ctx.units.values()), ctx.actions, sections, ctx)


def unit_keys(exp: Any) -> dict[str, Any]:
    """Every unit of ``exp``'s plan and its key: a config setting that reaches a unit's computation changes
    that unit's key (tests/experiment/test_cache_keys.py flips every field to hold this)."""
    return {uid: action.key() for uid, action in build_plan(exp).actions.items()}
