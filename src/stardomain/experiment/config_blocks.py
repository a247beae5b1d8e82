"""The experiment YAML's value checking (:func:`from_dict`) and its model, star and eval blocks.

Re-exported by :mod:`stardomain.experiment.config`, which assembles the whole file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from stardomain import defaults
from stardomain.defaults import DEFAULT_MATCHING_SAMPLES, DEFAULT_POINTS
from stardomain.errors import StardomainError
from stardomain.starlight.config import CLI, YAML, StarKnobs, at_least, knob_problems, setting

__all__ = ["EvalConfig", "ModelConfig", "StarConfig", "Studies", "from_dict"]


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` (recursing into dataclasses, lists, dicts, optionals)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except StardomainError as e:
                errors.append(str(e))
        raise StardomainError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if isinstance(tp, type) and hasattr(tp, "from_mapping"):  # a block whose keys come from a registry (Studies)
        return value if isinstance(value, tp) else tp.from_mapping(value, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise StardomainError(f"{where}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}; got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise StardomainError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise StardomainError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise StardomainError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise StardomainError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StardomainError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise StardomainError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise StardomainError(f"{where or 'config'}: unknown key '{unknown[0]}'; allowed: {', '.join(names)}")
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def check(cond: bool, message: str) -> None:
    if not cond:
        raise StardomainError(message)


@dataclass
class ModelConfig:
    name: str = "mlp"
    options: dict = field(default_factory=dict)
    init: str = "paper"  # models.init: paper (the authors' scheme per architecture), kaiming, default, xavier


def _epochs_factor(v: float | None) -> str | None:
    ok = v is None or (v > 0 and v < 1e6)
    return None if ok else f"a positive multiple of the sources' epochs, e.g. 1 or 2 (got {v})"


def _init_problem(v: str) -> str | None:
    return None if v in ("fresh", "source") else f"must be 'fresh' or 'source' (got {v!r})"


@dataclass(kw_only=True)
class StarConfig(StarKnobs):
    """The YAML ``star:`` block: Starlight's knobs (:class:`~stardomain.starlight.config.StarKnobs`, declared and
    range-checked there) plus what only the experiment sets; recipe keys override the source recipe (the paper trains
    the star the same way)."""

    recipe: dict = setting(default_factory=dict, help="Overrides of the sources' recipe for the star.", views=(YAML,))
    # star epochs = round(factor x the sources' epochs); null: star.recipe.epochs, else the sources'
    epochs_factor: float | None = setting(
        None, help="The star's epochs as a multiple of its sources'.", check=_epochs_factor, views=(YAML,)
    )
    # "fresh" (new init from the star seed) or "source" (start from the first source); the CLI's --init takes a path
    init: str = setting(
        "fresh", help="fresh (the star seed's own init) or source (the first source's weights).", check=_init_problem, views=(YAML,)
    )
    # stars per star tag, each with its own recorded seed: the star is the unit of replication
    repeats: int = setting(
        1,
        help="Train K stars from the same sources, each from its own recorded seed: OUT-r0 .. OUT-r{K-1} (r0 is the star of --seed).",
        check=at_least(1),
        views=(YAML, CLI),
    )

    def __post_init__(self) -> None:
        self.t_beta = list(self.t_beta)  # type: ignore[assignment]  # YAML (and results.json) hold a list
        check(
            self.epochs_factor is None or "epochs" not in self.recipe,
            "star: give the star's budget once: star.epochs_factor or star.recipe.epochs, not both",
        )
        for name, problem in knob_problems(self):  # every range, worded for this block (fusion_loss vs mu: the
            # ExperimentConfig's, which knows the fusion study's mu too)
            raise StardomainError(f"star.{name}: {problem}")


@dataclass
class EvalConfig:
    points: int = DEFAULT_POINTS
    bn_samples: int | None = None
    eval_train_samples: int | None = None  # evaluate train loss on a subset (None = whole train split)
    eval_test_samples: int | None = None  # likewise the test split (streamed data: a seeded subset held in memory)
    align: str = defaults.MATCHING  # how regular pairs and held-out models are aligned to the star / each other
    symmetry: str = "permutation"  # + orthogonal residual / invertible per-head maps after the permutation (transformers)
    max_pairs: int = 10  # regular-regular pairs evaluated: disjoint pairs first, then a seeded sample of the rest
    max_star_source_pairs: int | None = None  # star-source pairs: None = the star against every one of its sources
    matching_samples: int = DEFAULT_MATCHING_SAMPLES  # size of the seeded class-stratified sample activation matching correlates on
    star_acc_margin: float = defaults.STAR_ACC_MARGIN  # a star this far (fraction, 0.01 = 1 pp) below its sources' mean test acc is flagged
    near_zero_tolerance: float = 0.05  # a barrier is "near 0" when its 95% upper bound is below this (the metric's units)
    metric: str = defaults.BARRIER_METRIC  # the barrier verdicts are judged on (train_loss: the ICLR version's)
    bn_ablation: bool = False  # BN models: also evaluate the main barrier pairs with interpolated (not reset) statistics
    converged_train_acc: float = 0.99  # a zoo with a model below this train accuracy is flagged "not converged"
    converged_train_loss: float | None = None  # ... or, where set, above this final train loss (the paper's: ~0.001)

    def __post_init__(self) -> None:
        check(defaults.points_problem(self.points) is None, f"eval.points: {defaults.points_problem(self.points)}")
        check(
            self.max_star_source_pairs is None or self.max_star_source_pairs >= 1,
            f"eval.max_star_source_pairs: must be >= 1 or null for every source (got {self.max_star_source_pairs})",
        )
        check(self.matching_samples >= 1, f"eval.matching_samples: must be >= 1 (got {self.matching_samples})")
        check(0 <= self.star_acc_margin < 1, f"eval.star_acc_margin: a fraction in [0, 1), e.g. 0.01 for 1 pp (got {self.star_acc_margin})")
        check(
            0 < self.converged_train_acc <= 1,
            f"eval.converged_train_acc: a fraction in (0, 1], e.g. 0.99 for 99% (got {self.converged_train_acc})",
        )
        check(
            self.converged_train_loss is None or self.converged_train_loss > 0,
            f"eval.converged_train_loss: a positive loss in nats, e.g. 0.002, or null (got {self.converged_train_loss})",
        )
        check(
            self.metric in defaults.BARRIER_METRICS,
            f"eval.metric: one of {', '.join(defaults.BARRIER_METRICS)} (got {self.metric!r})",
        )
        check(self.near_zero_tolerance > 0, f"eval.near_zero_tolerance: must be > 0 (got {self.near_zero_tolerance})")
        check(self.align in defaults.ALIGNMENTS, f"eval.align: one of {', '.join(defaults.ALIGNMENTS)} (got {self.align!r})")
        check(
            self.symmetry in defaults.SYMMETRIES,
            f"eval.symmetry: one of {', '.join(defaults.SYMMETRIES)} (got {self.symmetry!r})",
        )
        check(
            self.align != "none" or self.symmetry == "permutation",
            f"eval.symmetry: {self.symmetry} maps move aligned models, but eval.align is none (it would be ignored); "
            "choose an alignment or remove eval.symmetry",
        )
        check(self.max_pairs >= 1, f"eval.max_pairs: must be >= 1 (got {self.max_pairs})")
        check(self.bn_samples is None or self.bn_samples >= 1, f"eval.bn_samples: must be >= 1 or null (got {self.bn_samples})")


T = TypeVar("T")


_PLUGIN_HINT = " (a plugin's study: list its module under plugins:)"


class Studies:
    """The ``studies`` block: the main study's switches (``barriers``, ``distances``) and, under each registered
    study's YAML key, its settings (an instance of the study's ``settings`` dataclass; absent: the study does not run).

    Its keys come from the study registry (:mod:`stardomain.experiment.study`), so a plugin's study gets YAML settings
    by registering; ``cfg.studies.<key>`` reads a study's settings (None when absent), :meth:`of` does so typed.
    """

    def __init__(self, barriers: bool = True, distances: bool = True, **blocks: Any):
        """Every block checked here, however the object is made (YAML, ``Studies(bma=...)``, ``dataclasses.replace``):
        a key no registered study has, or a value of another type, is one line naming ``studies.<key>``."""
        known = self._known()
        self.barriers = coerce(barriers, bool, "studies.barriers")
        self.distances = coerce(distances, bool, "studies.distances")
        self.blocks: dict[str, Any] = {}
        for name, value in blocks.items():
            if name not in known:
                raise StardomainError(
                    f"studies: unknown key '{name}'; allowed: {', '.join(['barriers', 'distances', *known])}{_PLUGIN_HINT}"
                )
            if value is not None:
                self.blocks[name] = coerce(value, known[name].settings, f"studies.{name}")

    @staticmethod
    def _known() -> dict[str, Any]:
        from stardomain.experiment.study import registered_studies

        return {s.yaml_name(): s for s in registered_studies() if s.settings is not None}

    @classmethod
    def from_mapping(cls, data: Any, where: str = "studies") -> Studies:
        known = cls._known()
        names = ["barriers", "distances", *known]
        if not isinstance(data, Mapping):
            raise StardomainError(f"{where}: expected a mapping of {', '.join(names)}; got {data!r}")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise StardomainError(f"{where}: unknown key '{unknown[0]}'; allowed: {', '.join(names)}{_PLUGIN_HINT}")
        return cls(**dict(data))

    def get(self, name: str) -> Any:
        """The settings under ``studies.<name>``, or None where that study is not configured."""
        return self.blocks.get(name)

    def of(self, kind: type[T]) -> T | None:
        """The configured settings of type ``kind`` (a study's settings dataclass), or None (two studies sharing a
        settings class: read each with :meth:`get`)."""
        found = [v for v in self.blocks.values() if type(v) is kind]
        if len(found) > 1:
            raise StardomainError(f"studies: {len(found)} blocks are {kind.__name__} settings; read each by its key (studies.get)")
        return found[0] if found else None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "blocks":
            raise AttributeError(name)
        if name not in self._known():
            raise AttributeError(f"studies: no study is configured by '{name}'")
        return self.blocks.get(name)

    def to_dict(self) -> dict[str, Any]:
        """As results.json and experiment.json record it: the switches, every configured study's settings, and the
        built-in studies' keys as null where absent (folders written before plugin studies stay identical)."""
        builtin = [k for k, s in self._known().items() if type(s).__module__.startswith("stardomain.")]
        out: dict[str, Any] = {"barriers": self.barriers, "distances": self.distances}
        for name in [*builtin, *(k for k in self.blocks if k not in builtin)]:
            value = self.blocks.get(name)
            out[name] = None if value is None else dataclasses.asdict(value)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Studies) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Studies({self.to_dict()!r})"
