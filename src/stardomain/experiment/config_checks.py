"""Checks of an experiment config made when the YAML is read, beyond what each block checks itself.

Every recipe override's type and range under its own key, the ranges the dataclasses leave open, and a
trial build of every model the run will train (on the meta device). ``cfg`` is an
:class:`~stardomain.experiment.config.ExperimentConfig` (typed ``Any``: that module imports this one).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from stardomain.errors import StardomainError
from stardomain.experiment.config_blocks import check, coerce

# -- every remaining value, checked when the YAML is read: a bad one must not cost a single unit (issue 25) --


def _recipe_keys() -> dict[str, type]:
    from stardomain.training.recipe import FIELD_TYPES

    return FIELD_TYPES


def check_recipe_overrides(cfg: Any) -> None:
    """Each recipe override's type and range under its own key (``train.epochs: '2'`` names ``train.epochs``).

    Ranges are checked against the generic defaults (every one valid), so an error here is always the
    override's; how overrides combine with the dataset's recipe is checked afterwards (a study's blocks: by its check).
    """
    for where, overrides in (("train", cfg.train), ("star.recipe", cfg.star.recipe)):
        check_overrides(where, overrides)


def check_overrides(where: str, overrides: Mapping[str, Any]) -> None:
    """One block of recipe overrides (``train``, ``star.recipe``, a study's): each key's type and range, named."""
    from stardomain.training.loop import Recipe

    keys = _recipe_keys()
    for key, value in overrides.items():
        if key not in keys:
            continue  # the unknown key is reported (with what exists) by the recipe check that follows
        if keys[key] in (int, float) and isinstance(value, str) and _is_number(value):
            hint = "write it without quotes" if keys[key] is int or "e" not in value.lower() else "YAML reads 1e-3 as text: write 1.0e-3"
            raise StardomainError(
                f"{where}.{key}: expected {'an integer' if keys[key] is int else 'a number'}, got the text {value!r} ({hint})"
            )
        coerce(value, keys[key], f"{where}.{key}")
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
    check(value is None or math.isfinite(value), f"{where}: must be a finite number (got {value})")


def check_before_work(cfg: Any) -> None:
    """Ranges the dataclasses leave open, and a trial build of every model the run will train."""
    check(0 <= cfg.seed < 2**31, f"seed: a whole number in [0, 2^31) (got {cfg.seed})")
    ev = cfg.eval
    for key in ("eval_train_samples", "eval_test_samples"):
        value = getattr(ev, key)
        check(value is None or value >= 1, f"eval.{key}: must be >= 1, or null for the whole split (got {value})")
    _check_finite(ev.near_zero_tolerance, "eval.near_zero_tolerance")
    from stardomain.experiment.budget import check_parameters, check_sizes

    check_sizes(cfg)  # the size budget, arithmetically: before a plan, a cell or a model is built
    check_parameters(cfg, _trial_builds(cfg))


# the sample shape and class count of the built-in datasets, known without reading them
_KNOWN_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}


def nominal_data(cfg: Any) -> tuple[tuple[int, ...], int]:
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


def _trial_builds(cfg: Any) -> int | None:
    """Build every architecture of the run on the meta device (no memory, no random numbers): a width 0,
    a depth -1 or a width of 2^40 fails here, naming its key, instead of inside a unit. Returns the largest
    parameter count (None when no model could be built there)."""
    from stardomain import models
    from stardomain.experiment.study import registered_studies

    shape, classes = nominal_data(cfg)
    options = cfg.model_options()
    builds: list[tuple[str, dict[str, Any]]] = [("model.options", options)]
    for study in registered_studies():  # the architectures each configured study will build
        if study.enabled(cfg):
            builds += study.builds(cfg)
    seen: set[str] = set()
    largest: int | None = None
    for where, opts in builds:
        key = repr(sorted(opts.items()))
        if key in seen:
            continue
        seen.add(key)
        try:
            model = models.build_on_meta(cfg.model.name, classes, shape, **opts)
        except StardomainError as e:
            raise StardomainError(f"{where}: {e}") from None
        if model is not None:
            largest = max(largest or 0, sum(p.numel() for p in model.parameters()))
    return largest
