"""What a study is: one object that yields its own units and assembles its own section of results.json.

The pipeline runs every study twice over the same description: :meth:`Study.plan` asks a plan
builder (:mod:`.units`) for the models and evaluations it needs, each becoming a unit an executor
runs; :meth:`Study.assemble` then asks the experiment (:mod:`.pipeline`) for the same models and
evaluations, which must all be on disk (a unit the plan forgot fails loudly, never computed behind
the executor's back), and returns the section. Both sides share one vocabulary (``zoo``/
``regular_models``, ``stars``, ``pair``, ``star``/``star_model``, ``setting``), so a study's two
methods read the same and live in one file.

Adding a study is one file: a module in :mod:`stardomain.experiment.studies` that defines a
:class:`Study` subclass and registers it with :func:`register_study` (a plugin module listed under
``plugins:`` may do the same). Studies run in ``order``; results.json holds their sections in
that order, after the main barrier study and before the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Protocol, Sequence

from stardomain.errors import StardomainError


@dataclass
class Main:
    """What every study builds on: the main zoo and star(s), as plan handles or as paths."""

    sources: list[Any]  # all zoo_size sources, in seed order
    held: list[Any]  # the held-out models
    z: list[Any]  # the main star's sources: the first ``cfg.sources``
    stars: list[Any]  # every repeat of the main star
    options: dict[str, Any]  # the model options of the main zoo
    star_recipe: Any  # the star's recipe
    summary: dict[str, Any] | None = None  # the main barrier groups' summary (assembly only, when computed)


class Experimenting(Protocol):
    """What a study's assembly may ask of the experiment (:class:`~stardomain.experiment.pipeline.Experiment`):
    typed here so studies stay below the pipeline in the layers and mypy checks every call."""

    cfg: Any  # the ExperimentConfig
    out: Path  # the run folder
    dataset: Any
    device: str
    recipe: Any  # the sources' Recipe
    cache: Any  # the unit result cache (run a KeyedCall, or get_or_compute)

    def regular_models(
        self, tag: str, options: Mapping[str, Any], recipe: Any, n_sources: int, n_held: int
    ) -> tuple[list[Path], list[Path]]: ...
    def stars(
        self, tag: str, sources: Sequence[Path], options: Mapping[str, Any], star_recipe: Any, mu: float, repeats: int | None = None
    ) -> list[Path]: ...
    def star_model(
        self, tag: str, sources: Sequence[Path], options: Mapping[str, Any], star_recipe: Any, mu: float, repeat: int = 0, repeats: int = 1
    ) -> Path: ...
    def pair(self, path_a: Path, path_b: Path, align: str | None = None, bn: str = "reset") -> dict[str, Any]: ...
    def barrier_groups(
        self, sources: Sequence[Path], held: Sequence[Path], stars: Sequence[Path], bn: str = "reset"
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]: ...
    def endpoints(self, stars: Sequence[Path], sources: Sequence[Path], held: Sequence[Path]) -> dict[str, Any]: ...
    def spec(self, model: Any) -> Any: ...
    def has_batchnorm(self) -> bool: ...
    def data_record(self) -> dict[str, Any]: ...


class Planning(Protocol):
    """What a study's plan may ask of the plan builder (:class:`~stardomain.experiment.units.PlanBuilder`)."""

    exp: Any  # the Experiment whose plan this is

    def stars(self, tag: str, sources: Sequence[Any], options: Mapping[str, Any], recipe: Any, mu: float) -> list[Any]: ...
    def star(
        self, tag: str, sources: Sequence[Any], options: Mapping[str, Any], recipe: Any, mu: float, repeat: int = 0, repeats: int = 1
    ) -> Any: ...
    def pair(self, a: Any, b: Any, bn: str = "reset") -> None: ...
    def setting(self, tag: str, options: Mapping[str, Any], recipe: Any, n_sources: int, n_held: int, star_recipe: Any) -> None: ...
    def evaluation(self, stage: str, uid: str, inputs: Sequence[Any], key: Any, compute: Any) -> None: ...


class Study:
    """One study of the pipeline. Subclasses set ``key`` (its results.json section) and ``order``."""

    key: ClassVar[str]
    order: ClassVar[int] = 1000  # built-in studies use 100..700; others run after them, by order then key

    def enabled(self, cfg: Any) -> bool:
        """Whether the config asks for this study."""
        raise NotImplementedError

    def plan(self, builder: Planning, main: Main) -> None:
        """Ask ``builder`` (a :class:`~stardomain.experiment.units.PlanBuilder`) for every model and evaluation."""
        raise NotImplementedError

    def assemble(self, exp: Experimenting, main: Main) -> Any:
        """The results.json section, from the models and evaluations on disk (``exp``: the Experiment)."""
        raise NotImplementedError

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        """report.md's lines for this study's section (its figures are written into ``out`` and named in ``figures``)."""
        return []


_REGISTRY: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    """Add ``study`` to the pipeline (its ``key`` must be new); returns it, so it can decorate an instance."""
    key = getattr(study, "key", None)
    if not isinstance(key, str) or not key.isidentifier():
        raise StardomainError(f"register_study: {type(study).__name__} needs a key naming its results.json section (got {key!r})")
    if key in _RESERVED or (key in _REGISTRY and type(_REGISTRY[key]) is not type(study)):
        raise StardomainError(f"register_study: a study named {key!r} exists already; choose another key")
    _REGISTRY[key] = study
    return study


def unregister_study(key: str) -> None:
    """Remove a registered study (tests, notebooks)."""
    _REGISTRY.pop(key, None)


def registered_studies() -> Iterator[Study]:
    """Every registered study (the built-in ones first), in the order the pipeline runs them."""
    import stardomain.experiment.studies  # noqa: F401  (registers the built-in studies)

    yield from sorted(_REGISTRY.values(), key=lambda s: (s.order, s.key))


# sections the pipeline itself writes
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
