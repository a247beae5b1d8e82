"""What a study is: one object that asks for its units and says how its section is made from them, in one method.

:meth:`Study.run` is called once, while the plan is built (:func:`~stardomain.experiment.units.build_plan`). It asks
the context (:class:`Context`) for models (``zoo``, ``stars``, ``star``) and evaluations (``pair``, ``evaluation``,
``setting``); each request becomes a unit an executor runs, and returns a *handle*: a model's handle knows its path,
an evaluation's handle is :class:`Pending`, a result not known yet. ``run`` returns its results.json section built
from those handles, with :meth:`Context.derive` for whatever is computed from results. After the executor ran the
units, the pipeline resolves the section: each handle is read back from its unit's file, each ``derive`` is called on
the values. There is no second method to keep in step with the first, and a study cannot ask for a unit at
assembly that it did not ask for while planning: a result is opaque while planning (using or reading it raises), once
planning is over the context refuses new requests, and two requests of one unit id must be the same computation.
(``run`` must not read files itself: what it asks for is a function of the config alone.) Two estimates are made from
the config before anything is built, :meth:`Study.budget` (its unit count) and :meth:`Study.builds` (the models it
trains, built on the meta device); tests/experiment/test_budget.py holds the count to the plan.

Adding a study is one file: a module in :mod:`stardomain.experiment.studies` (or a plugin module listed under
``plugins:``) that defines a :class:`Study` subclass with its settings dataclass, its checks, ``run``, its verdict
tests and its report section, and registers it with :func:`register_study`. Studies run in ``order``; the main
barrier study (order 0) writes the top-level sections (``merge``), the others a section under their ``key``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Protocol, Sequence

from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.data.protocol import SplitData
    from stardomain.experiment.folder import KeyedCall


@dataclass(frozen=True)
class Model:
    """A model some unit produces: its unit id and checkpoint path (known while planning; resolved to the path)."""

    unit: str
    path: Path


class Pending:
    """A unit's result, or a value derived from results: known only when the section is assembled.

    Every use of it as a value raises (truth, comparison, arithmetic, indexing, iteration, text, copies), so what a
    study asks for can never depend on a result (one code path plans and assembles); compute with results inside
    :meth:`Context.derive`. Only the context reads it, and only once planning is over.
    """

    __slots__ = ("what", "_read")

    def __init__(self, what: str, read: Callable[[], Any]):
        self.what = what
        self._read = read

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise StardomainError(
            f"{self.what} is a unit's result, known only when the results are assembled: compute with it inside "
            "ctx.derive(fn, ...) and never let it decide which units a study asks for"
        )

    __bool__ = __iter__ = __len__ = __getitem__ = __contains__ = __eq__ = __ne__ = _refuse
    __float__ = __int__ = __index__ = __lt__ = __le__ = __gt__ = __ge__ = __str__ = __format__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __neg__ = _refuse
    __copy__ = __deepcopy__ = __reduce_ex__ = _refuse
    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("what", "_read"):  # duck-typing probes get what they expect
            raise AttributeError(name)
        return self._refuse()

    def __repr__(self) -> str:
        return f"Pending({self.what})"


def read_pending(p: Pending) -> Any:
    """The value behind ``p`` (the context calls this while assembling; it refuses before planning is over)."""
    return p._read()


MAIN_SUMMARY = "_summary"  # the key under which the main study hands its groups' summary to the others (never written)


@dataclass(frozen=True)
class Main:
    """What every study builds on: the handles of the main zoo and star(s). Frozen, with read-only options: a study
    that changed them would change the main zoo's training behind the other studies' backs."""

    sources: tuple[Model, ...]  # all zoo_size sources, in seed order
    held: tuple[Model, ...]  # the held-out models
    z: tuple[Model, ...]  # the main star's sources: the first ``cfg.sources``
    stars: tuple[Model, ...]  # every repeat of the main star
    options: Mapping[str, Any]  # the model options of the main zoo (read-only)
    star_recipe: Any  # the star's recipe
    summary: Any = None  # the main barrier groups' summary (a Pending; None when neither barriers nor distances run)


class Experimenting(Protocol):
    """What a study's computations may ask of the experiment (:class:`~stardomain.experiment.pipeline.Experiment`):
    typed here so studies stay below the pipeline in the layers and mypy checks every call."""

    cfg: Any  # the ExperimentConfig
    out: Path  # the run folder
    dataset: SplitData  # the run's data (in memory, or a streamed folder)
    device: str
    recipe: Any  # the sources' Recipe

    def endpoints(self, stars: Sequence[Path], sources: Sequence[Path], held: Sequence[Path]) -> dict[str, Any]: ...
    def group_pairs(self, sources: Sequence[Any], held: Sequence[Any], stars: Sequence[Any]) -> dict[str, list[tuple[Any, Any]]]: ...
    def spec(self, model: Any) -> Any: ...
    def has_batchnorm(self) -> bool: ...
    def data_record(self) -> dict[str, Any]: ...


class Context(Protocol):
    """What a study's :meth:`Study.run` asks for (:class:`~stardomain.experiment.units.PlanContext`)."""

    exp: Experimenting
    cfg: Any

    def zoo(self, tag: str, options: Mapping[str, Any], recipe: Any, n_sources: int, n_held: int) -> tuple[list[Model], list[Model]]:
        """The sources and held-out models of zoo ``tag`` trained with ``options`` and ``recipe`` (a unit each)."""
        ...

    def stars(self, tag: str, sources: Sequence[Model], options: Mapping[str, Any], recipe: Any, mu: float) -> list[Model]:
        """Every repeat (``star.repeats``) of the star ``tag`` on ``sources`` (``recipe``: the star's own)."""
        ...

    def star(
        self, tag: str, sources: Sequence[Model], options: Mapping[str, Any], recipe: Any, mu: float, repeat: int = 0, repeats: int = 1
    ) -> Model:
        """One star ``tag`` on ``sources`` (a unit)."""
        ...

    def pair(self, a: Model, b: Model, bn: str = "reset") -> Pending:
        """One pair's curve, barriers and distances, B aligned to A as ``eval`` says (a unit)."""
        ...

    def evaluation(self, call: KeyedCall, compute: Callable[..., Any], uid: str | None = None) -> Pending:
        """Any other evaluation (a unit): ``compute(**call.settings)``, a JSON mapping, cached under ``call``'s key
        (:class:`~stardomain.experiment.folder.KeyedCall`: the checkpoints it reads, by content hash, and every
        setting), so no setting reaches a result without reaching its key. It waits for the units that make those
        checkpoints; its id is derived from its kind, inputs and settings unless ``uid`` names it."""
        ...

    def derive(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pending:
        """``fn(*args, **kwargs)`` at assembly, every handle in the arguments (in dicts, lists, tuples) replaced by its
        value: a model's by its checkpoint path, an evaluation's by its result. ``fn`` must ask for no unit."""
        ...


@dataclass(frozen=True)
class Judge:
    """What every verdict test reads: the tolerance, the seed its bootstraps use and the barrier metric."""

    tolerance: float
    seed: int
    metric: str


class Study:
    """One study of the pipeline. Subclasses set ``key`` (its results.json section), ``order`` and, when the YAML's
    ``studies:`` block configures it, ``settings`` (a dataclass, parsed from ``studies.<yaml_key>``)."""

    key: ClassVar[str]
    order: ClassVar[int] = 1000  # the main study 0, built-in studies 100..700; others run after them, by order then key
    settings: ClassVar[type | None] = None  # the dataclass of its YAML settings; None: the study has none
    yaml_key: ClassVar[str | None] = None  # its key under ``studies:`` (default: ``key``)
    merge: ClassVar[bool] = False  # its section's keys go to the top level of results.json (the main study)

    @classmethod
    def yaml_name(cls) -> str:
        return cls.yaml_key or cls.key

    def settings_of(self, cfg: Any) -> Any:
        """This study's settings in ``cfg`` (an instance of ``settings``), or None where the YAML does not configure it."""
        return cfg.studies.get(self.yaml_name()) if self.settings is not None else None

    def enabled(self, cfg: Any) -> bool:
        """Whether the config asks for this study: its settings block is present (a study without settings: always)."""
        return self.settings is None or self.settings_of(cfg) is not None

    def check(self, cfg: Any, settings: Any) -> None:
        """Refuse, in one line each (StardomainError), settings this config cannot honour; called before any work."""

    def run(self, ctx: Context, main: Main) -> Any:
        """Ask ``ctx`` for every model and evaluation; return the section, built from their handles."""
        raise NotImplementedError

    def builds(self, cfg: Any) -> list[tuple[str, dict[str, Any]]]:
        """The model options it trains with beyond the main zoo's, each with the key that sets them: every one is
        built on the meta device while the config is checked (a width 0 fails there, naming its key)."""
        return []

    def budget(self, cfg: Any, count: Any) -> Mapping[str, tuple[int, str]]:
        """Its units from the counts alone, before anything is built (``count``: a
        :class:`~stardomain.experiment.budget.UnitCounts`): key asking -> (units, how they come); default: not counted."""
        return {}

    def tests(self, results: Mapping[str, Any], judge: Judge) -> Mapping[str, Any]:
        """The verdict tests of this study's section: entries of results.json's ``tests`` (default: none)."""
        return {}

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        """report.md's lines for this study's section (its figures are written into ``out`` and named in ``figures``)."""
        return []


_REGISTRY: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    """Add ``study`` to the pipeline (its ``key`` and YAML key must be new); returns it, so it can decorate an instance."""
    key = getattr(study, "key", None)
    if not isinstance(key, str) or not key.isidentifier():
        raise StardomainError(f"register_study: {type(study).__name__} needs a key naming its results.json section (got {key!r})")
    if key in _RESERVED or (key in _REGISTRY and type(_REGISTRY[key]) is not type(study)):
        raise StardomainError(f"register_study: a study named {key!r} exists already; choose another key")
    taken = {s.yaml_name(): s.key for s in _REGISTRY.values() if s.key != key}
    if study.yaml_name() in taken or study.yaml_name() in _RESERVED_YAML:
        raise StardomainError(f"register_study: studies.{study.yaml_name()} is another study's YAML key; choose another yaml_key")
    _REGISTRY[key] = study
    return study


def unregister_study(key: str) -> None:
    """Remove a registered study (tests, notebooks)."""
    _REGISTRY.pop(key, None)


def registered_studies() -> Iterator[Study]:
    """Every registered study (the main one first, then the built-in ones), in the order the pipeline runs them."""
    import stardomain.experiment.studies  # noqa: F401  (registers the built-in studies)

    yield from sorted(_REGISTRY.values(), key=lambda s: (s.order, s.key))


def compute_tests(results: Mapping[str, Any]) -> dict[str, Any]:
    """results.json ``tests``: the shared header, then every study's verdict tests on its section."""
    from stardomain.analysis import verdicts

    out = verdicts.header(results)
    judge = Judge(tolerance=out["tolerance"], seed=int(results["config"]["seed"]), metric=out["metric"])
    for study in registered_studies():
        if study.merge or study.key in results:
            tests = study.tests(results, judge)
            taken = sorted(set(tests) & set(out))
            if taken:
                raise StardomainError(f"study {study.key}: its verdict test '{taken[0]}' is another's; name its tests after its key")
            out.update(tests)
    return out


# sections the pipeline itself writes, or the main study's
_RESERVED = {
    "schema_version",
    "name",
    "config",
    "dataset",
    "recipe",
    "models",
    "endpoints",
    "barriers",
    "bn_ablation",
    "distances",
    "tests",
}
_RESERVED_YAML = {"barriers", "distances"}  # the main study's switches under ``studies:``
