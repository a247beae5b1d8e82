"""An experiment YAML's sizes against the size budget (:mod:`stardomain._util.budget`), estimated arithmetically.

Called while the config is validated, before anything is built: the plan's unit count from the counts
alone (a grid of 10^6 recipe cells is refused in microseconds, never enumerated), every recipe's epochs,
the length of each unit's inner loops (t values, pairs per star step, BMA samples) and the values one unit
computes or holds (t values x evaluated samples, BMA samples x test samples x classes); once the trial builds
have counted the parameters, the pairs per star step x parameters. Model depth and parameters are held to
the same budget by :func:`stardomain.models.build_on_meta` (shared with ``train``, ``spec`` and checkpoints);
the run's threads by :func:`stardomain.experiment.runner.run_experiment` (after ``--threads``).

``cfg`` is an :class:`~stardomain.experiment.config.ExperimentConfig` (typed ``Any``: that module imports this one).
"""

from __future__ import annotations

from typing import Any

from stardomain._util import budget

__all__ = ["check_parameters", "check_sizes", "plan_units"]

# (train samples, test samples, classes) of the built-in datasets, known without reading them
_SPLITS: dict[str, tuple[int, int, int]] = {
    "digits": (1437, 360, 10),
    "mnist": (60000, 10000, 10),
    "fashion_mnist": (60000, 10000, 10),
    "cifar10": (50000, 10000, 10),
    "cifar100": (50000, 10000, 100),
}


def _splits(cfg: Any) -> tuple[int, int, int] | None:
    """The run's (train, test, classes) sizes where known without reading the data (the subset applied)."""
    if cfg.dataset not in _SPLITS:
        return None
    train, test, classes = _SPLITS[cfg.dataset]
    return (train if cfg.subset is None else min(cfg.subset, train)), test, classes


class UnitCounts:
    """How many units the context's requests make, from the counts alone: what every study's
    :meth:`~stardomain.experiment.study.Study.budget` adds up (a zoo, a star's repeats, a setting's barrier groups)."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.repeats = cfg.star.repeats

    def zoo(self, n_sources: int, n_held: int) -> int:
        m = self.cfg.batch_models
        return -(-n_sources // m) + -(-n_held // m)  # one unit per member, or per M members of one role

    def pairs(self, n_sources: int, n_held: int) -> int:
        """The pairs of :func:`~stardomain.experiment.studies.common.barrier_groups`, for every repeat of the star."""
        ev = self.cfg.eval
        regular = min(ev.max_pairs, n_sources * (n_sources - 1) // 2)
        star_source = n_sources if ev.max_star_source_pairs is None else min(ev.max_star_source_pairs, n_sources)
        return regular + self.repeats * (star_source + n_held)

    def setting(self, n_sources: int, n_held: int) -> int:
        """The units of :func:`~stardomain.experiment.studies.common.setting`: a zoo, its stars and their groups."""
        return self.zoo(n_sources, n_held) + self.repeats + self.pairs(n_sources, n_held)


def plan_units(cfg: Any) -> dict[str, tuple[int, str]]:
    """The units the plan of ``cfg`` will hold (:func:`stardomain.experiment.units.build_plan`), from the counts
    alone, by the key that asks for them: key -> (units, how they come). An upper bound (a model or pair two
    studies share is one unit): the main zoo and stars, then each configured study's own count (:meth:`Study.budget`)."""
    from stardomain.experiment.study import registered_studies

    count = UnitCounts(cfg)
    parts = {"sources": (count.zoo(cfg.zoo_size, cfg.held_out) + count.repeats, "the main zoo, stars and pairs")}
    for study in registered_studies():
        if study.enabled(cfg):
            for key, (n, how) in study.budget(cfg, count).items():
                parts[key] = (parts[key][0] + n, parts[key][1]) if key in parts else (n, how)
    return parts


def _check_units(cfg: Any) -> None:
    parts = plan_units(cfg)
    key = max(parts, key=lambda k: parts[k][0])  # the key asking for most of them
    total = sum(n for n, _ in parts.values())
    budget.check(key, total, "units", f"the plan's units ({key}: {parts[key][1]})")


def _star_epochs_key(cfg: Any, overrides: Any, where: str) -> str:
    """The key that sets a star's epochs: its recipe's own, else ``star.epochs_factor``, else its sources'."""
    if "epochs" in overrides:
        return f"{where}.epochs"
    return "star.epochs_factor" if cfg.star.epochs_factor is not None else ""


def _check_epochs(cfg: Any) -> None:
    """Every training run's epochs: the zoo, the star, the optimizer study's pair, the recipe grid's longest cell."""
    epochs = lambda key, n: budget.check(key, n, "epochs", "the epochs of one training run")  # noqa: E731
    source = cfg.source_recipe()
    epochs("train.epochs", source.epochs)
    runs = [(source, cfg.star.recipe, "star.recipe", "train.epochs")]
    rs, os_ = cfg.studies.recipe, cfg.studies.optimizer
    if rs is not None and rs.epochs:
        longest = source.replace(epochs=max(rs.epochs))
        epochs("studies.recipe.epochs", longest.epochs)
        runs.append((longest, cfg.star.recipe, "star.recipe", "studies.recipe.epochs"))
    if os_ is not None:
        opt = cfg.optimizer_recipe()
        epochs("studies.optimizer.recipe.epochs", opt.epochs)
        runs.append((opt, os_.star_recipe, "studies.optimizer.star_recipe", "studies.optimizer.recipe.epochs"))
    for recipe, overrides, where, sources_key in runs:
        epochs(_star_epochs_key(cfg, overrides, where) or sources_key, cfg.star_recipe(recipe, overrides).epochs)


def check_sizes(cfg: Any) -> None:
    """Every size of ``cfg`` the budget holds, before any model or plan is built (one line naming the key)."""
    _check_units(cfg)
    _check_epochs(cfg)
    splits = _splits(cfg)
    ev = cfg.eval
    budget.check("eval.points", ev.points, "length", "the t values of each curve")
    if splits is not None:
        train, test, _ = splits
        samples = min(ev.eval_train_samples or train, train) + min(ev.eval_test_samples or test, test)
        budget.check(
            "eval.points", ev.points * samples, "values", f"the t values x evaluated samples of each curve ({ev.points} x {samples})"
        )
    budget.check("star.pairs_per_step", cfg.star.pairs_per_step, "length", "the (source, t) pairs of each star step")
    bma = cfg.studies.bma
    if bma is not None:
        budget.check("studies.bma.max_samples", bma.max_samples, "length", "the BMA's samples")
        if splits is not None:
            _, test, classes = splits
            budget.check(
                "studies.bma.max_samples",
                bma.max_samples * test * classes,
                "values",
                f"the BMA's predicted probabilities (samples x test samples x classes: {bma.max_samples} x {test} x {classes})",
            )


def check_parameters(cfg: Any, parameters: int | None) -> None:
    """What grows with the model, once the trial builds counted its ``parameters`` (the largest model of the run)."""
    if parameters is None:
        return
    from stardomain.starlight.config import check_step_budget

    check_step_budget("star.pairs_per_step", cfg.star.pairs_per_step, parameters)  # the check `stardomain star` makes
