"""The experiment YAML: one file describes a whole study, validated before any work starts.

Validation is strict because a typo in a 3-day GPU run must fail in the first second:
unknown keys, wrong types and impossible values each give one line naming the key path.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from stardomain import defaults
from stardomain.errors import StardomainError
from stardomain.experiment.config_blocks import EvalConfig, ModelConfig, StarConfig, Studies, check, coerce, from_dict
from stardomain.experiment.config_checks import check_before_work, check_recipe_overrides
from stardomain.experiment.executor_config import ExecutorConfig, check_threads

if TYPE_CHECKING:
    from stardomain.starlight import StarlightConfig
    from stardomain.training.loop import Recipe

__all__ = [
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "StarConfig",
    "Studies",
    "experiment_config",
    "from_dict",
    "import_plugins",
    "load_config",
]


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
    train: dict = field(default_factory=dict)  # Recipe overrides of the named recipe (`recipe`) of the dataset
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
    recipe: str = "default"  # the named recipe `train` overrides: default | paper (written as ``train: {recipe: paper}``)

    def __post_init__(self) -> None:
        # train.batch_models says how members are trained, not what they are: it is no Recipe key and
        # never part of a member's identity, so it is taken out of the recipe overrides here
        if "batch_models" in self.train:
            self.train = dict(self.train)
            self.batch_models = coerce(self.train.pop("batch_models"), int, "train.batch_models")
        if "recipe" in self.train:  # likewise the recipe's name: the keys left in `train` override that recipe
            self.train = dict(self.train)
            name = self.train.pop("recipe")
            check(
                self.recipe in (name, "default"),
                f"train.recipe: {name!r}, but recipe is {self.recipe!r}; name the recipe once (train: {{recipe: ...}})",
            )
            self.recipe = name
        from stardomain.training.recipe import RECIPE_NAMES

        check(self.recipe in RECIPE_NAMES, f"train.recipe: one of {', '.join(RECIPE_NAMES)} (got {self.recipe!r})")
        check(self.batch_models >= 1, f"train.batch_models: must be >= 1 (got {self.batch_models})")
        check(1 <= self.threads <= 4096, f"threads: torch CPU threads of each unit, a whole number from 1 to 4096 (got {self.threads})")
        check_threads(self.executor, self.threads)  # a Ray/SLURM unit reserves at least the CPUs it computes with
        check_recipe_overrides(self)  # types and ranges of every recipe key, named, before anything compares them
        from stardomain import data, models
        from stardomain.training.loop import Recipe, has_default_recipe, no_recipe_refusal

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
        except StardomainError as e:
            if ":" in str(self.model.name):  # an import path or hf: name: the reader's message says what is wrong
                raise StardomainError(f"model.name: {e}") from None  # (e.g. its module needs plugins:)
            raise StardomainError(f"model.name: unknown '{self.model.name}'; choose one of {models.valid_names()}") from None
        check(
            self.image_size is None or data.accepts_image_size(self.dataset),
            f"image_size: only applies to dataset imagefolder (got dataset '{self.dataset}'); remove it",
        )
        check(
            self.image_size is None or (type(self.image_size) is int and self.image_size >= 1),
            f"image_size: a whole number of pixels >= 1 (got {self.image_size!r})",
        )
        check(
            not data.accepts_image_size(self.dataset) or bool(self.data_root),
            "data_root: dataset imagefolder needs the folder holding train/ and val/ (or test/)",
        )
        allowed = [k for k in models.model_info(self.model.name).defaults if k != "init"]
        bad = sorted(set(self.model.options) - set(allowed))
        check("init" not in self.model.options, "model.options.init: the init scheme is model.init; move it there")
        check(not bad, f"model.options: '{bad[0] if bad else ''}' is not an option of {self.model.name}; allowed: {', '.join(allowed)}")
        try:
            models.check_init(self.model.init)
        except StardomainError as e:
            raise StardomainError(f"model.init: {e}") from None
        # never 200 epochs nobody chose (`recipe: paper` chooses the paper's 200)
        if "epochs" not in self.train and self.recipe == "default" and not has_default_recipe(self.dataset):
            raise no_recipe_refusal(
                self.dataset,
                "train: {epochs: N} (and lr, batch_size, weight_decay where the generic SGD recipe does not suit), "
                "or train: {recipe: paper}",
            )
        for where, overrides in (("train", self.train), ("star.recipe", {**self.train, **self.star.recipe})):
            try:
                Recipe.from_dict({**self.base_recipe().to_dict(), **overrides})
            except StardomainError as e:
                raise StardomainError(f"{where}: {e}") from None
        self._check_starlight()
        self._check_sizes_and_studies()

    def _check_sizes_and_studies(self) -> None:
        """The rest of :meth:`__post_init__`: subset, streaming, zoo sizes, then every configured study, then
        the ranges left open and a trial build of every model (:func:`check_before_work`)."""

        check(self.subset is None or self.subset >= 10, f"subset: at least 10 training samples (got {self.subset})")
        if self.stream:  # what reads whole splits into memory cannot take a streamed folder
            check(self.dataset == "imagefolder", f"stream: only for dataset imagefolder (got '{self.dataset}'); remove it")
            check(self.subset is None, "stream: streamed folders are used whole; remove subset (or make a smaller folder)")
            check(
                self.eval.bn_samples is not None and self.eval.eval_train_samples is not None,
                "eval.bn_samples and eval.eval_train_samples: set both when stream: true (seeded subsets held in memory)",
            )
        check(self.sources >= 2, f"sources: |Z| must be >= 2 to compare regular pairs (got {self.sources})")
        check(self.held_out >= 1, f"held_out: |H| must be >= 1 (got {self.held_out})")
        from stardomain.experiment.study import registered_studies

        for study in registered_studies():  # each study checks its own settings
            settings = self.studies.get(study.yaml_name()) if study.settings is not None else None
            if settings is not None:
                study.check(self, settings)
        check_before_work(self)

    def starlight_config(self, star_recipe: "Recipe", mu: float) -> "StarlightConfig":
        """The one place the ``star`` block (and the eval settings Starlight shares) becomes a StarlightConfig."""
        from stardomain.starlight import StarlightConfig
        from stardomain.starlight.config import KNOBS

        knobs = {name: getattr(self.star, name) for name in KNOBS}  # the star block's knobs, by their shared names
        if mu == 0:  # no fusion term: a main star is the same star whatever the fusion study's normalisation
            knobs["fusion_loss"] = defaults.FUSION_LOSS
        return StarlightConfig(
            recipe=star_recipe, **{**knobs, "mu": mu}, bn_samples=self.eval.bn_samples, matching_samples=self.eval.matching_samples
        )

    def _check_starlight(self) -> None:
        """The star's whole Starlight config, built now: what it refuses (e.g. a bf16 star recipe) costs no zoo."""
        from stardomain.starlight.config import knob_problems

        fusion = self.studies.fusion
        mus = [self.star.mu] + ([fusion.mu] if fusion else [])
        which = "star.mu and studies.fusion.mu are 0" if fusion else "star.mu is 0 and there is no fusion study"
        for name, problem in knob_problems(self.star, mus=mus):  # fusion_loss needs a star with mu > 0
            raise StardomainError(f"star.{name}: {problem.replace('mu is 0', which)}")
        try:
            self.starlight_config(self.star_recipe(self.source_recipe(), self.star.recipe), self.star.mu)
        except StardomainError as e:
            raise StardomainError(f"star: {e}") from None

    def model_options(self) -> dict[str, Any]:
        """The main zoo's model options with the init scheme: what every model of the run is built with."""
        return {**self.model.options, "init": self.model.init}

    def base_recipe(self, optimizer: str = "sgd") -> "Recipe":
        """The named recipe (``train: {recipe: ...}``, default ``default``) of the dataset, before any override."""
        from stardomain.training.recipe import named_recipe

        return named_recipe(self.dataset, self.recipe, optimizer)

    def source_recipe(self) -> "Recipe":
        """The recipe of the main zoo: the dataset's named recipe (``train.recipe``) with ``train`` overrides."""
        from stardomain.training.loop import Recipe

        return Recipe.from_dict({**self.base_recipe().to_dict(), **self.train})

    def optimizer_recipe(self) -> "Recipe":
        """Sources of the optimizer study: that optimizer's take on the named recipe, the optimizer-independent
        ``train`` overrides (never the main optimizer, lr or nesterov), then ``studies.optimizer.recipe``."""
        from stardomain.training.loop import Recipe

        os_ = self.studies.optimizer
        if os_ is None:
            raise StardomainError("studies.optimizer: not configured")
        base = self.base_recipe(os_.optimizer).to_dict()
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
        """The config as results.json and experiment.json record it: every key, except that a key added after the
        first release is written only where it differs from its default (:data:`ADDED_LATER`), so configs and
        experiment folders from before each key stay identical (one rule, as ``transformers``' ``to_diff_dict``)."""
        d = dataclasses.asdict(self)
        d["studies"] = self.studies.to_dict()
        for path in ADDED_LATER:
            *parents, key = path.split(".")
            holder = functools.reduce(lambda m, k: m[k], parents, d)
            if holder[key] == _default(path):
                del holder[key]
        bm = d.pop("batch_models")
        if bm != 1:  # recorded where it is set (a worker rebuilds the same plan from this dict), as a train key
            d["train"] = {**d["train"], "batch_models": bm}
        name = d.pop("recipe")
        if name != "default":  # likewise (unset: configs and experiment folders from before the key stay identical)
            d["train"] = {"recipe": name, **d["train"]}
        del d["executor"]  # where units ran never changes a result: results.json is the same for every executor
        return d


# keys added after the first release, by their path: :meth:`ExperimentConfig.to_dict` writes them only where they
# differ from their default (read off the dataclasses, never written twice)
ADDED_LATER = (
    "image_size",
    "stream",
    "plugins",
    "allow_unpermuted",
    "eval.eval_test_samples",
    "eval.symmetry",
    "eval.bn_ablation",
    "eval.converged_train_loss",
    "star.repeats",
    "star.t_constant",
    "star.epochs_factor",
    "star.symmetry",
    "star.fusion_loss",
)


def _default(path: str) -> Any:
    """The default of the config key at ``path`` (``star.repeats``), from the dataclass fields."""
    cls: Any = ExperimentConfig
    *parents, key = path.split(".")
    for name in parents:
        cls = typing.get_type_hints(cls)[name]
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


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
