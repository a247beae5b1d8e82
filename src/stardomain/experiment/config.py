"""The experiment YAML: one file describes a whole study, validated before any work starts.

Validation is strict because a typo in a 3-day GPU run must fail in the first second:
unknown keys, wrong types and impossible values each give one line naming the key path.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from stardomain import defaults
from stardomain.defaults import DEFAULT_MATCHING_SAMPLES, DEFAULT_POINTS
from stardomain.errors import StardomainError
from stardomain.experiment.executor_config import ExecutorConfig, check_threads

if TYPE_CHECKING:
    from stardomain.starlight import StarlightConfig
    from stardomain.training.loop import Recipe


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, where: str) -> Any:
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
                return _coerce(value, a, where)
            except StardomainError as e:
                errors.append(str(e))
        raise StardomainError(errors[0] if errors else f"{where}: invalid value {value!r}")
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
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
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
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise StardomainError(message)


@dataclass
class ModelConfig:
    name: str = "mlp"
    options: dict = field(default_factory=dict)
    init: str = "paper"  # models.init: paper (the authors' scheme per architecture), kaiming, default, xavier


@dataclass
class StarConfig:
    """Starlight settings; recipe keys override the source recipe (the paper trains the star the same way)."""

    recipe: dict = field(default_factory=dict)
    mu: float = defaults.MU
    t_sampling: str = defaults.T_SAMPLING
    t_beta: list[float] = field(default_factory=lambda: list(defaults.T_BETA))
    t_constant: float = defaults.T_CONSTANT  # the fixed t of t_sampling: constant
    epochs_factor: float | None = None  # star epochs = round(factor x the sources' epochs); null: star.recipe.epochs, else the sources'
    pairs_per_step: int = defaults.PAIRS_PER_STEP
    realign_every: int | None = None
    matching: str = defaults.MATCHING
    init: str = "fresh"  # "fresh" (new init from the star seed) or "source" (start from the first source)
    repeats: int = 1  # stars per star tag, each with its own recorded seed: the star is the unit of replication

    def __post_init__(self) -> None:
        from stardomain.starlight.algorithm import knob_problems

        _check(self.repeats >= 1, f"star.repeats: must be >= 1 (got {self.repeats})")
        _check(
            self.epochs_factor is None or (self.epochs_factor > 0 and self.epochs_factor < 1e6),
            f"star.epochs_factor: a positive multiple of the sources' epochs, e.g. 1 or 2 (got {self.epochs_factor})",
        )
        _check(
            self.epochs_factor is None or "epochs" not in self.recipe,
            "star: give the star's budget once: star.epochs_factor or star.recipe.epochs, not both",
        )
        _check(self.init in ("fresh", "source"), f"star.init: must be 'fresh' or 'source' (got {self.init!r})")
        for name, problem in knob_problems(self):  # Starlight's own checks, worded for this block
            raise StardomainError(f"star.{name}: {problem}")


@dataclass
class EvalConfig:
    points: int = DEFAULT_POINTS
    bn_samples: int | None = None
    eval_train_samples: int | None = None  # evaluate train loss on a subset (None = whole train split)
    eval_test_samples: int | None = None  # likewise the test split (streamed data: a seeded subset held in memory)
    align: str = "weight"  # how regular pairs and held-out models are aligned to the star / each other
    max_pairs: int = 10  # regular-regular pairs evaluated: disjoint pairs first, then a seeded sample of the rest
    max_star_source_pairs: int | None = None  # star-source pairs: None = the star against every one of its sources
    matching_samples: int = DEFAULT_MATCHING_SAMPLES  # size of the seeded class-stratified sample activation matching correlates on
    star_acc_margin: float = 0.01  # a star this far (fraction, 0.01 = 1 pp) below its sources' mean test acc is flagged
    near_zero_tolerance: float = 0.05  # a test-loss barrier is "near 0" when its 95% upper bound is below this
    bn_ablation: bool = False  # BN models: also evaluate the main barrier pairs with interpolated (not reset) statistics
    converged_train_acc: float = 0.99  # a zoo with a model below this train accuracy is flagged "not converged"
    converged_train_loss: float | None = None  # ... or, where set, above this final train loss (the paper's: ~0.001)

    def __post_init__(self) -> None:
        _check(self.points >= 2, f"eval.points: need at least 2 points on the path (got {self.points})")
        _check(
            self.max_star_source_pairs is None or self.max_star_source_pairs >= 1,
            f"eval.max_star_source_pairs: must be >= 1 or null for every source (got {self.max_star_source_pairs})",
        )
        _check(self.matching_samples >= 1, f"eval.matching_samples: must be >= 1 (got {self.matching_samples})")
        _check(
            0 <= self.star_acc_margin < 1, f"eval.star_acc_margin: a fraction in [0, 1), e.g. 0.01 for 1 pp (got {self.star_acc_margin})"
        )
        _check(
            0 < self.converged_train_acc <= 1,
            f"eval.converged_train_acc: a fraction in (0, 1], e.g. 0.99 for 99% (got {self.converged_train_acc})",
        )
        _check(
            self.converged_train_loss is None or self.converged_train_loss > 0,
            f"eval.converged_train_loss: a positive loss in nats, e.g. 0.002, or null (got {self.converged_train_loss})",
        )
        _check(self.near_zero_tolerance > 0, f"eval.near_zero_tolerance: must be > 0 (got {self.near_zero_tolerance})")
        _check(self.align in ("weight", "activation", "none"), f"eval.align: one of weight, activation, none (got {self.align!r})")
        _check(self.max_pairs >= 1, f"eval.max_pairs: must be >= 1 (got {self.max_pairs})")
        _check(self.bn_samples is None or self.bn_samples >= 1, f"eval.bn_samples: must be >= 1 or null (got {self.bn_samples})")


@dataclass
class NSourcesStudy:
    sizes: list[int] = field(default_factory=lambda: [2, 5, 10])


@dataclass
class BMAStudy:
    max_samples: int = 20
    seed: int = 0


@dataclass
class FusionStudy:
    sizes: list[int] = field(default_factory=lambda: [2, 5, 10])
    mu: float = 1.0


@dataclass
class WidthDepthStudy:
    """Barriers across sizes: each entry is a dict of model options (e.g. {width: 8}); counts kept small."""

    settings: list[dict] = field(default_factory=list)
    sources: int = 4
    held_out: int = 2


@dataclass
class OptimizerStudy:
    optimizer: str = "adam"
    recipe: dict = field(default_factory=dict)  # overrides of the source recipe for this optimizer
    star_recipe: dict = field(default_factory=dict)  # overrides for this study's star (star.recipe never applies here)
    sources: int = 4
    held_out: int = 2


@dataclass
class RecipeStudy:
    """When does a star exist? The core barrier study over a grid of training recipes: epochs x init x
    weight decay (x width). Every cell is a setting of its own (zoo, stars, pairs); its convergence is recorded."""

    epochs: list[int] = field(default_factory=list)  # empty: the main recipe's epochs only
    init: list[str] = field(default_factory=list)  # empty: model.init only
    weight_decay: list[float] = field(default_factory=list)  # empty: the main recipe's weight decay only
    width: list[float] = field(default_factory=list)  # model option `width`; empty: the main model's
    sources: int = 4
    held_out: int = 2


@dataclass
class Studies:
    barriers: bool = True
    distances: bool = True
    n_sources: NSourcesStudy | None = None
    bma: BMAStudy | None = None
    fusion: FusionStudy | None = None
    width_depth: WidthDepthStudy | None = None
    optimizer: OptimizerStudy | None = None
    recipe: RecipeStudy | None = None


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    dataset: str = "digits"
    subset: int | None = None
    data_root: str | None = None  # for imagefolder: the folder holding train/ and val/ (required)
    image_size: int | None = None  # imagefolder only: square side in pixels (default 64; streamed: the crop, 224)
    stream: bool = False  # imagefolder only: decode batches from disk in worker processes (data that does not fit in memory)
    device: str = "auto"
    threads: int = 1  # torch CPU threads every unit (and the assembly) computes with, on every executor: results depend on it
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    train: dict = field(default_factory=dict)  # Recipe overrides of the dataset's default recipe
    sources: int = 10  # |Z|
    held_out: int = 5  # |H|
    star: StarConfig = field(default_factory=StarConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    studies: Studies = field(default_factory=Studies)
    logging: dict = field(default_factory=dict)  # {tensorboard: bool, wandb: {project: ...}}
    plugins: list[str] = field(default_factory=list)  # modules to import first (they register models/datasets)
    allow_unpermuted: bool = False  # align/star even when the permutation spec covers 0% of the parameters
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where units run: local, ray or slurm
    batch_models: int = 1  # zoo members trained M at a time in one pass (written as ``train: {batch_models: M}``)

    def __post_init__(self) -> None:
        # train.batch_models says how members are trained, not what they are: it is no Recipe key and
        # never part of a member's identity, so it is taken out of the recipe overrides here
        if "batch_models" in self.train:
            self.train = dict(self.train)
            self.batch_models = _coerce(self.train.pop("batch_models"), int, "train.batch_models")
        _check(self.batch_models >= 1, f"train.batch_models: must be >= 1 (got {self.batch_models})")
        _check(1 <= self.threads <= 4096, f"threads: torch CPU threads of each unit, a whole number from 1 to 4096 (got {self.threads})")
        check_threads(self.executor, self.threads)  # a Ray/SLURM unit reserves at least the CPUs it computes with
        _check_recipe_overrides(self)  # types and ranges of every recipe key, named, before anything compares them
        from stardomain import data, models
        from stardomain.training.loop import Recipe, default_recipe

        # the plugins this config names were imported by experiment_config (a constructor runs no user code)
        # resolve names to registry keys once, here: recipe, metadata, zoo identity and report use only the key
        try:
            self.dataset = data.canonical_name(self.dataset)
        except StardomainError as e:
            if ":" in str(self.dataset):  # a file or import path: the reader's message says what is wrong
                raise StardomainError(f"dataset: {e}") from None
            raise StardomainError(f"dataset: unknown '{self.dataset}'; choose one of {', '.join(data.available_datasets())}") from None
        try:
            self.model.name = models.canonical_name(self.model.name)
        except StardomainError:
            raise StardomainError(
                f"model.name: unknown '{self.model.name}'; choose one of {', '.join(models.available_models())}"
            ) from None
        _check(
            self.image_size is None or data.accepts_image_size(self.dataset),
            f"image_size: only applies to dataset imagefolder (got dataset '{self.dataset}'); remove it",
        )
        _check(
            self.image_size is None or (type(self.image_size) is int and self.image_size >= 1),
            f"image_size: a whole number of pixels >= 1 (got {self.image_size!r})",
        )
        _check(
            not data.accepts_image_size(self.dataset) or bool(self.data_root),
            "data_root: dataset imagefolder needs the folder holding train/ and val/ (or test/)",
        )
        allowed = [k for k in models.model_info(self.model.name).defaults if k != "init"]
        bad = sorted(set(self.model.options) - set(allowed))
        _check("init" not in self.model.options, "model.options.init: the init scheme is model.init; move it there")
        _check(not bad, f"model.options: '{bad[0] if bad else ''}' is not an option of {self.model.name}; allowed: {', '.join(allowed)}")
        try:
            models.check_init(self.model.init)
        except StardomainError as e:
            raise StardomainError(f"model.init: {e}") from None
        for where, overrides in (("train", self.train), ("star.recipe", {**self.train, **self.star.recipe})):
            try:
                Recipe.from_dict({**default_recipe(self.dataset).to_dict(), **overrides})
            except StardomainError as e:
                raise StardomainError(f"{where}: {e}") from None
        self._check_starlight()

        _check(self.subset is None or self.subset >= 10, f"subset: at least 10 training samples (got {self.subset})")
        if self.stream:  # what reads whole splits into memory cannot take a streamed folder
            _check(self.dataset == "imagefolder", f"stream: only for dataset imagefolder (got '{self.dataset}'); remove it")
            _check(self.subset is None, "stream: streamed folders are used whole; remove subset (or make a smaller folder)")
            _check(self.studies.bma is None, "studies.bma: needs the whole test split in memory; remove it when stream: true")
            _check(
                self.eval.bn_samples is not None and self.eval.eval_train_samples is not None,
                "eval.bn_samples and eval.eval_train_samples: set both when stream: true (seeded subsets held in memory)",
            )
        _check(self.sources >= 2, f"sources: |Z| must be >= 2 to compare regular pairs (got {self.sources})")
        _check(self.held_out >= 1, f"held_out: |H| must be >= 1 (got {self.held_out})")
        s = self.studies
        if s.n_sources is not None:
            _check(all(2 <= k for k in s.n_sources.sizes), f"studies.n_sources.sizes: every size must be >= 2 (got {s.n_sources.sizes})")
        if s.fusion is not None:
            _check(all(1 <= k for k in s.fusion.sizes), f"studies.fusion.sizes: every size must be >= 1 (got {s.fusion.sizes})")
            _check(s.fusion.mu > 0, f"studies.fusion.mu: the fusion variant needs mu > 0 (got {s.fusion.mu})")
        if s.bma is not None:
            _check(s.bma.max_samples >= 1, f"studies.bma.max_samples: must be >= 1 (got {s.bma.max_samples})")
        if s.recipe is not None:
            self._check_recipe_study(s.recipe)
        if s.width_depth is not None:
            allowed = [k for k in models.model_info(self.model.name).defaults if k != "init"] + ["init"]
            for i, extra in enumerate(s.width_depth.settings):
                bad = sorted(set(extra) - set(allowed))
                _check(
                    not bad,
                    f"studies.width_depth.settings[{i}]: '{bad[0] if bad else ''}' is not an option of "
                    f"{self.model.name}; allowed: {', '.join(allowed)}",
                )
        if s.optimizer is not None:
            _check(s.optimizer.optimizer in ("sgd", "adam"), f"studies.optimizer.optimizer: sgd or adam (got {s.optimizer.optimizer!r})")
            for where, build in (
                ("studies.optimizer.recipe", self.optimizer_recipe),
                ("studies.optimizer.star_recipe", lambda: self.star_recipe(self.optimizer_recipe(), s.optimizer.star_recipe)),
            ):
                try:
                    build()
                except StardomainError as e:
                    raise StardomainError(f"{where}: {e}") from None
        _check_before_work(self)

    def starlight_config(self, star_recipe: "Recipe", mu: float) -> "StarlightConfig":
        """The one place the ``star`` block (and the eval settings Starlight shares) becomes a StarlightConfig."""
        from stardomain.starlight import StarlightConfig
        from stardomain.starlight.algorithm import KNOBS

        knobs = {name: getattr(self.star, name) for name in KNOBS}  # the star block's knobs, by their shared names
        return StarlightConfig(
            recipe=star_recipe, **{**knobs, "mu": mu}, bn_samples=self.eval.bn_samples, matching_samples=self.eval.matching_samples
        )

    def _check_starlight(self) -> None:
        """The star's whole Starlight config, built now: what it refuses (e.g. a bf16 star recipe) costs no zoo."""
        try:
            self.starlight_config(self.star_recipe(self.source_recipe(), self.star.recipe), self.star.mu)
        except StardomainError as e:
            raise StardomainError(f"star: {e}") from None

    def _check_recipe_study(self, rs: "RecipeStudy") -> None:
        from stardomain import models

        where = "studies.recipe"
        _check(rs.sources >= 2, f"{where}.sources: |Z| must be >= 2 to compare regular pairs (got {rs.sources})")
        _check(rs.held_out >= 1, f"{where}.held_out: must be >= 1 (got {rs.held_out})")
        _check(all(e >= 1 for e in rs.epochs), f"{where}.epochs: every entry must be >= 1 (got {rs.epochs})")
        _check(all(w >= 0 and w < 1 for w in rs.weight_decay), f"{where}.weight_decay: every entry in [0, 1) (got {rs.weight_decay})")
        for i in rs.init:
            try:
                models.check_init(i)
            except StardomainError as e:
                raise StardomainError(f"{where}.init: {e}") from None
        if rs.width:
            _check(
                "width" in models.model_info(self.model.name).defaults,
                f"{where}.width: model {self.model.name} has no option 'width'; remove it",
            )
            _check(all(w > 0 for w in rs.width), f"{where}.width: every entry must be > 0 (got {rs.width})")
        for name, values in (("epochs", rs.epochs), ("init", rs.init), ("weight_decay", rs.weight_decay), ("width", rs.width)):
            _check(len(set(values)) == len(values), f"{where}.{name}: an entry is repeated ({values})")

    def model_options(self) -> dict[str, Any]:
        """The main zoo's model options with the init scheme: what every model of the run is built with."""
        return {**self.model.options, "init": self.model.init}

    def source_recipe(self) -> "Recipe":
        """The recipe of the main zoo: the dataset's default recipe with ``train`` overrides."""
        from stardomain.training.loop import Recipe, default_recipe

        return Recipe.from_dict({**default_recipe(self.dataset).to_dict(), **self.train})

    def optimizer_recipe(self) -> "Recipe":
        """Sources of the optimizer study: that optimizer's default recipe, the optimizer-independent
        ``train`` overrides (never the main optimizer, lr or nesterov), then ``studies.optimizer.recipe``."""
        from stardomain.training.loop import Recipe, default_recipe

        os_ = self.studies.optimizer
        if os_ is None:
            raise StardomainError("studies.optimizer: not configured")
        base = default_recipe(self.dataset, os_.optimizer).to_dict()
        shared = {k: v for k, v in self.train.items() if k not in ("optimizer", "lr", "nesterov")}
        return Recipe.from_dict({**base, **shared, **os_.recipe})

    def star_recipe(self, source_recipe: "Recipe", overrides: Mapping[str, Any]) -> "Recipe":
        """A star is trained like its sources, plus its own overrides (``star.recipe``, or the
        optimizer study's ``star_recipe``: the main star's overrides never reach another optimizer).
        Its budget is ``star.epochs_factor`` x its sources' epochs where set (the paper: the sources'
        200 epochs), unless ``overrides`` name the epochs. The sources' execution options (precision,
        channels_last, compile) do not carry over."""
        from stardomain.training.loop import Recipe

        budget = {}
        if self.star.epochs_factor is not None and "epochs" not in overrides:
            budget = {"epochs": max(1, round(self.star.epochs_factor * source_recipe.epochs))}
        return Recipe.from_dict({**source_recipe.without_execution().to_dict(), **budget, **overrides})

    @property
    def zoo_size(self) -> int:
        """Sources needed by every study (the largest |Z| asked for) — held-out seeds come after them."""
        sizes = [self.sources]
        if self.studies.n_sources:
            sizes += self.studies.n_sources.sizes
        if self.studies.fusion:
            sizes += self.studies.fusion.sizes
        return max(sizes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["image_size"] is None:
            del d["image_size"]  # unset: configs (and experiment folders) from before the key stay identical
        if d["eval"].get("eval_test_samples") is None:
            del d["eval"]["eval_test_samples"]  # likewise
        if d["star"]["repeats"] == 1:
            del d["star"]["repeats"]  # unset: configs (and experiment folders) from before the key stay identical
        for key, unset in (("t_constant", 0.5), ("epochs_factor", None)):  # likewise
            if d["star"][key] == unset:
                del d["star"][key]
        if not d["eval"]["bn_ablation"]:
            del d["eval"]["bn_ablation"]  # likewise
        if d["eval"]["converged_train_loss"] is None:
            del d["eval"]["converged_train_loss"]  # likewise
        bm = d.pop("batch_models")
        if bm != 1:  # recorded where it is set (a worker rebuilds the same plan from this dict), as a train key
            d["train"] = {**d["train"], "batch_models": bm}
        unset_values: tuple[tuple[str, Any], ...] = (("plugins", []), ("allow_unpermuted", False), ("stream", False))
        for name, unset in unset_values:  # likewise
            if d.get(name) == unset:
                del d[name]
        del d["executor"]  # where units ran never changes a result: results.json is the same for every executor
        return d


# -- every remaining value, checked when the YAML is read: a bad one must not cost a single unit (issue 25) --


def _recipe_keys() -> dict[str, type]:
    from stardomain.training.loop import _FIELD_TYPES

    return _FIELD_TYPES


def _check_recipe_overrides(cfg: ExperimentConfig) -> None:
    """Each recipe override's type and range under its own key (``train.epochs: '2'`` names ``train.epochs``).

    Ranges are checked against the generic defaults (every one valid), so an error here is always the
    override's; how overrides combine with the dataset's recipe is checked afterwards.
    """
    from stardomain.training.loop import Recipe

    blocks = [("train", cfg.train), ("star.recipe", cfg.star.recipe)]
    if cfg.studies.optimizer is not None:
        blocks += [
            ("studies.optimizer.recipe", cfg.studies.optimizer.recipe),
            ("studies.optimizer.star_recipe", cfg.studies.optimizer.star_recipe),
        ]
    keys = _recipe_keys()
    for where, overrides in blocks:
        for key, value in overrides.items():
            if key not in keys:
                continue  # the unknown key is reported (with what exists) by the recipe check that follows
            if keys[key] in (int, float) and isinstance(value, str) and _is_number(value):
                hint = (
                    "write it without quotes" if keys[key] is int or "e" not in value.lower() else "YAML reads 1e-3 as text: write 1.0e-3"
                )
                raise StardomainError(
                    f"{where}.{key}: expected {'an integer' if keys[key] is int else 'a number'}, got the text {value!r} ({hint})"
                )
            _coerce(value, keys[key], f"{where}.{key}")
        known = {k: v for k, v in overrides.items() if k in keys}
        try:
            Recipe.from_dict({**Recipe().to_dict(), **known})
        except StardomainError as e:
            raise StardomainError(_name_recipe_key(where, str(e))) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _name_recipe_key(where: str, message: str) -> str:
    """``recipe: lr must be ...`` -> ``train.lr: must be ...``: the key as the YAML spells it."""
    rest = message.removeprefix("recipe: ")
    key = rest.split(" ", 1)[0]
    if key in _recipe_keys() and rest.startswith(f"{key} must"):
        return f"{where}.{key}: {rest[len(key) + 1 :]}"
    return f"{where}: {message}"


def _check_finite(value: float | None, where: str) -> None:
    _check(value is None or math.isfinite(value), f"{where}: must be a finite number (got {value})")


def _check_before_work(cfg: ExperimentConfig) -> None:
    """Ranges the dataclasses leave open, and a trial build of every model the run will train."""
    _check(0 <= cfg.seed < 2**31, f"seed: a whole number in [0, 2^31) (got {cfg.seed})")
    ev = cfg.eval
    for key in ("eval_train_samples", "eval_test_samples"):
        value = getattr(ev, key)
        _check(value is None or value >= 1, f"eval.{key}: must be >= 1, or null for the whole split (got {value})")
    _check_finite(ev.near_zero_tolerance, "eval.near_zero_tolerance")
    _check_finite(cfg.star.mu, "star.mu")
    _check(all(math.isfinite(b) for b in cfg.star.t_beta), f"star.t_beta: two finite positive numbers (got {cfg.star.t_beta})")
    s = cfg.studies
    if s.bma is not None:
        _check(s.bma.seed >= 0, f"studies.bma.seed: must be >= 0 (got {s.bma.seed})")
    if s.fusion is not None:
        _check_finite(s.fusion.mu, "studies.fusion.mu")
    for name, block in (("width_depth", s.width_depth), ("optimizer", s.optimizer)):
        if block is not None:
            _check(block.sources >= 2, f"studies.{name}.sources: |Z| must be >= 2 to compare regular pairs (got {block.sources})")
            _check(block.held_out >= 1, f"studies.{name}.held_out: must be >= 1 (got {block.held_out})")
    if s.recipe is not None:
        _check(all(math.isfinite(w) for w in s.recipe.width), f"studies.recipe.width: every entry finite (got {s.recipe.width})")
    _trial_builds(cfg)


# the sample shape and class count of the built-in datasets, known without reading them
_KNOWN_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}


def _nominal_data(cfg: ExperimentConfig) -> tuple[tuple[int, ...], int]:
    """The inputs a trial build is made for: the dataset's own where known without reading it, else a
    nominal image the model accepts (only option checks then count; the shape is checked at the real build)."""
    from stardomain import data, models

    if cfg.dataset in _KNOWN_SHAPES:
        return _KNOWN_SHAPES[cfg.dataset]
    if data.accepts_image_size(cfg.dataset):
        side = cfg.image_size or (224 if cfg.stream else 64)
        return (3, side, side), 2
    side = max(32, models.model_info(cfg.model.name).min_hw)
    return (3, side, side), 10


def _trial_builds(cfg: ExperimentConfig) -> None:
    """Build every architecture of the run on the meta device (no memory, no random numbers): a width 0,
    a depth -1 or a width of 2^40 fails here, naming its key, instead of inside a unit."""
    from stardomain import models

    shape, classes = _nominal_data(cfg)
    options = cfg.model_options()
    builds: list[tuple[str, dict[str, Any]]] = [("model.options", options)]
    if cfg.studies.width_depth is not None:
        builds += [(f"studies.width_depth.settings[{i}]", {**options, **extra}) for i, extra in enumerate(cfg.studies.width_depth.settings)]
    if cfg.studies.recipe is not None:  # the cells' own options, as the study will build them
        from stardomain.experiment.studies.recipe import cells

        builds += [
            ("studies.recipe.width" if c.values["width"] is not None else "studies.recipe", c.options)
            for c in cells(cfg, cfg.source_recipe())
        ]
    seen: set[str] = set()
    for where, opts in builds:
        key = repr(sorted(opts.items()))
        if key in seen:
            continue
        seen.add(key)
        try:
            models.build_on_meta(cfg.model.name, classes, shape, **opts)
        except StardomainError as e:
            raise StardomainError(f"{where}: {e}") from None


def import_plugins(data: Mapping[str, Any]) -> None:
    """Import the user code a config mapping names (``plugins``, import paths as model or dataset): your code
    runs only because the config names it, and only here, before the dataclasses validate names against registries."""
    from stardomain._util.plugins import is_import_path, load_plugins

    model = data.get("model")
    names = [model.get("name") if isinstance(model, Mapping) else model, data.get("dataset")]
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise StardomainError(f"plugins: a list of module names (got {plugins!r})")
    try:
        load_plugins([*plugins, *(n for n in names if isinstance(n, str) and is_import_path(n))])
    except StardomainError as e:
        raise StardomainError(f"plugins: {e}") from None


def experiment_config(data: Mapping[str, Any]) -> ExperimentConfig:
    """An ExperimentConfig from a mapping (a YAML file's, results.json's ``config``): its plugins imported, every key checked."""
    import_plugins(data)
    return from_dict(ExperimentConfig, data)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file."""
    p = Path(path)
    if not p.exists():
        raise StardomainError(f"experiment file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise StardomainError(f"{p}: not a text file (not UTF-8); give the experiment's YAML file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise StardomainError(f"{p}: not valid YAML{where} ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, Mapping):
        raise StardomainError(f"{p}: the top level must be a mapping of experiment keys")
    dataset = data.get("dataset")
    if isinstance(dataset, Mapping):  # dataset: {file: data.npz}, relative to this YAML file
        if set(dataset) != {"file"} or not isinstance(dataset["file"], str):
            raise StardomainError(f"{p}: dataset: a name, an import path, or {{file: path.npz}} (got {dict(dataset)!r})")
        data = {**data, "dataset": "file:" + str((p.parent / Path(dataset["file"]).expanduser()).resolve())}
    try:
        return experiment_config(data)
    except StardomainError as e:
        raise StardomainError(f"{p}: {e}") from None
    except TypeError as e:  # a dataclass __init__ complaint we did not foresee
        raise StardomainError(f"{p}: {e}") from None
