"""The training recipe as data (:class:`Recipe`) and the default recipe of each dataset.

A module without torch: the CLI checks the recipe values a user typed (``train -e 0``, ``--lr inf``) before it
imports anything heavy (issue 35). :mod:`stardomain.training.loop` re-exports the names it defined before;
the named recipes (:func:`named_recipe`, ``train: {recipe: paper}``) are imported from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Mapping

from stardomain.errors import StardomainError, reject_unknown_keys

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
# how a run executes rather than what it trains: left out of to_dict() at these defaults, so the
# identity of every fp32 run recorded before these fields existed is unchanged
_EXECUTION_DEFAULTS: dict[str, Any] = {"precision": "fp32", "channels_last": False, "compile": False}


@dataclass
class Recipe:
    """How a model is trained. Defaults are the paper's CIFAR recipe (App. A)."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    epochs: int = 200
    batch_size: int = 128
    schedule: str = "cosine"
    warmup_epochs: int = 0
    augment: bool = True
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + grad scaler, CUDA only)
    channels_last: bool = False  # NHWC convnets, where stardomain.training.memformat finds it safe
    compile: bool = False  # torch.compile the training forward/backward

    def __post_init__(self) -> None:
        self._check_types()
        for key in ("lr", "momentum", "weight_decay"):  # inf or NaN would train a whole zoo to NaN
            if not math.isfinite(getattr(self, key)):
                raise StardomainError(f"recipe: {key} must be a finite number (got {getattr(self, key)})")
        if self.momentum < 0 or self.momentum >= 1:
            raise StardomainError(f"recipe: momentum must be in [0, 1), e.g. 0.9 (got {self.momentum})")
        if self.weight_decay < 0:
            raise StardomainError(f"recipe: weight_decay must be >= 0, e.g. 5e-4 (got {self.weight_decay})")
        if self.optimizer not in OPTIMIZERS:
            raise StardomainError(f"recipe: unknown optimizer '{self.optimizer}'; use one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise StardomainError(f"recipe: unknown schedule '{self.schedule}'; use one of {', '.join(SCHEDULES)}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise StardomainError(f"recipe: {key} must be >= 1 (got {getattr(self, key)})")
        if not self.lr > 0:
            raise StardomainError(f"recipe: lr must be > 0 (got {self.lr})")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs + 1:
            raise StardomainError(f"recipe: warmup_epochs must be in [0, epochs] (got {self.warmup_epochs})")
        if self.precision not in PRECISIONS:
            raise StardomainError(f"recipe: unknown precision '{self.precision}'; use one of {', '.join(PRECISIONS)}")

    def _check_types(self) -> None:
        """Each field's type, naming the key: a YAML ``epochs: '2'`` must not reach a comparison (or an optimizer)."""
        for f in fields(self):
            value, want = getattr(self, f.name), FIELD_TYPES[f.name]
            if want is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif want is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, want)
            if not ok:
                what = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}[want]
                raise StardomainError(f"recipe: {f.name} must be {what} (got {value!r})")

    def to_dict(self) -> dict[str, Any]:
        """Every field, except execution options (precision, channels_last, compile) at their defaults."""
        return {k: v for k, v in asdict(self).items() if _EXECUTION_DEFAULTS.get(k, object()) != v}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        reject_unknown_keys("recipe", d, (f.name for f in fields(cls)))
        return cls(**dict(d))

    def replace(self, **changes: Any) -> "Recipe":
        return Recipe.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})

    def without_execution(self) -> "Recipe":
        """The same schedule with the execution options at their defaults (fp32, NCHW, eager): what a
        star inherits from its sources, since Starlight implements none of them."""
        return self.replace(**_EXECUTION_DEFAULTS)


FIELD_TYPES: dict[str, type] = {f.name: {"str": str, "float": float, "bool": bool, "int": int}[str(f.type)] for f in fields(Recipe)}

_SMALL_RECIPES: dict[str, dict[str, Any]] = {
    # 1,437 training images: many short epochs, no augmentation (8x8 digits do not crop well)
    "digits": dict(lr=0.05, epochs=15, batch_size=64, weight_decay=5e-4, augment=False),
    "mnist": dict(lr=0.05, epochs=10, batch_size=128, weight_decay=5e-4, augment=False),
    "fashion_mnist": dict(lr=0.05, epochs=10, batch_size=128, weight_decay=5e-4, augment=False),
}


# the datasets with a default recipe: the paper's for CIFAR-style and image-folder data, a short one for the small ones;
# any other (a file, a dataset factory, a plugin's) gets a recipe only by an explicit choice of its epochs
RECIPE_DATASETS = ("cifar10", "cifar100", "imagefolder", *_SMALL_RECIPES)


def has_default_recipe(dataset_name: str) -> bool:
    """Whether ``dataset_name`` has a default recipe (:data:`RECIPE_DATASETS`); others need their epochs set."""
    from stardomain.data import canonical_name

    try:
        return canonical_name(dataset_name) in RECIPE_DATASETS
    except StardomainError:
        return False


def no_recipe_refusal(dataset_name: str, how: str) -> StardomainError:
    """The one line refusing to train ``dataset_name`` (no default recipe) with no epochs set; ``how`` says where to set them."""
    return StardomainError(
        f"dataset {dataset_name} has no default recipe (only {', '.join(sorted(RECIPE_DATASETS))} have one): "
        f"choose its training budget, {how}"
    )


def generic_values(recipe: Recipe, explicit: Iterable[str]) -> str:
    """The recipe values not chosen explicitly, in one phrase (what a dataset without a default recipe trains with)."""
    keys = ("optimizer", "lr", "batch_size", "weight_decay", "schedule", "augment")
    return ", ".join(f"{k} {getattr(recipe, k)}" for k in keys if k not in set(explicit))


def default_recipe(dataset_name: str, optimizer: str = "sgd") -> Recipe:
    """The paper's recipe for CIFAR-style data, a short one for digits/MNIST; Adam at lr 1e-3.

    The name is canonicalised first (``fmnist`` -> ``fashion_mnist``): looked up as typed, an
    alias would silently get the 200-epoch CIFAR recipe.
    """
    from stardomain.data import canonical_name

    return _with_optimizer(Recipe(**_SMALL_RECIPES.get(canonical_name(dataset_name), {})), optimizer)


def _with_optimizer(recipe: Recipe, optimizer: str) -> Recipe:
    """``recipe`` for ``optimizer``: SGD as it is, Adam at lr 1e-3 without Nesterov (stardomain's choice: the
    paper's Adam values are not in the text we have, and the authors' code ships no Adam config)."""
    if optimizer == "adam":
        return recipe.replace(optimizer="adam", lr=1e-3, nesterov=False)
    if optimizer != "sgd":
        return recipe.replace(optimizer=optimizer)  # validates, raises
    return recipe


# The named recipes a YAML (`train: {recipe: paper}`) or `stardomain train --recipe` starts from; docs/recipes.md
# tabulates them against the paper and the authors' code, and tests/training/test_recipes_doc.py keeps that table true.
RECIPE_NAMES = ("default", "paper")
DEFAULT_RECIPE_NAME = "default"
# Paper v1 App. A "Hyperparameters", the one training recipe the paper states (ResNet-18 on CIFAR-10/100): SGD,
# momentum 0.9, weight decay 5e-4, lr 0.1 to 0 by cosine decay over 200 epochs, batch 128, pad-4 crop + flip. The
# paper does not say Nesterov; the authors' configs set it (nesterov: 1), so it is on. No warm-up (warmup_steps: 0).
PAPER_RECIPE: dict[str, Any] = dict(
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    epochs=200,
    batch_size=128,
    schedule="cosine",
    warmup_epochs=0,
    augment=True,
)
# data the paper's crop+flip does not suit (and the data registry never augments): 8x8 or 28x28 grayscale digits and
# clothes, where a 4-pixel shift crops away much of a digit and a mirrored digit is another glyph
_NOT_AUGMENTED = frozenset(_SMALL_RECIPES)


def named_recipe(dataset_name: str, name: str = DEFAULT_RECIPE_NAME, optimizer: str = "sgd") -> Recipe:
    """The recipe ``name`` for ``dataset_name``: ``default`` is :func:`default_recipe`; ``paper`` is the paper's
    CIFAR recipe (:data:`PAPER_RECIPE`) for every dataset, without augmentation where the data does not take it
    (digits, MNIST, Fashion-MNIST). ``optimizer: adam`` gets Adam at lr 1e-3 either way."""
    if name == DEFAULT_RECIPE_NAME:
        return default_recipe(dataset_name, optimizer)
    if name != "paper":
        raise StardomainError(f"recipe: unknown recipe name {name!r}; use one of {', '.join(RECIPE_NAMES)}")
    from stardomain.data import canonical_name

    key = canonical_name(dataset_name)
    return _with_optimizer(Recipe(**{**PAPER_RECIPE, "augment": key not in _NOT_AUGMENTED}), optimizer)
