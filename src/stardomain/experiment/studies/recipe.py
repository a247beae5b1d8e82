"""The recipe-sensitivity study: *when* does a star exist?

Barriers between trained models move by an order of magnitude with the training budget, the
initialisation and the weight decay (issue 22), and a barrier between unconverged models is not
the paper's quantity. This study runs the core barrier study (regular–regular, star–source,
star–held-out; :func:`.common.setting`) in every cell of a grid epochs x init x optimizer x lr x
weight decay (x width), each cell with its own zoo and stars, and records every cell's convergence beside its
barriers. The plan and the assembly both take the cells from :func:`cells`, so they cannot drift apart.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from stardomain.experiment.studies.common import SETTING_KEYS, setting
from stardomain.experiment.study import Experimenting, Main, Planning, Study, register_study
from stardomain.training.loop import Recipe

AXES = ("epochs", "init", "optimizer", "lr", "weight_decay", "width")  # grid order: epochs slowest ... width fastest


@dataclass(frozen=True)
class Cell:
    """One recipe of the grid: what varies, the options and recipes it trains with, and its tag."""

    values: dict[str, Any]  # one value per axis of AXES (width None where the model has no width)
    options: dict[str, Any]
    recipe: Recipe
    star_recipe: Recipe

    @property
    def tag(self) -> str:
        """Every axis named, so a folder, a table row and a figure panel say the whole recipe they ran."""
        v = self.values
        width = "" if v["width"] is None else f"-{axis_label('width', v['width'])}"
        return "rc-" + "-".join(axis_label(a, v[a]) for a in AXES[:-1]) + width


def axis_label(axis: str, value: Any) -> str:
    """How one axis value is written in a cell's tag (its folder names): whole numbers exactly, fractions to 6
    significant digits (``wd0.0005``, ``lr0.1``, ``w0.5``): two values that print alike would share a tag, which the
    config refuses (:func:`tag_collision`)."""
    prefix = {"epochs": "e", "init": "", "optimizer": "", "lr": "lr", "weight_decay": "wd", "width": "w"}[axis]
    return f"{prefix}{value}" if isinstance(value, (int, str)) else f"{prefix}{value:g}"


def tag_collision(axis: str, values: list[Any]) -> str | None:
    """One line naming two values of ``axis`` whose tags would be the same, or None: every cell's tag is its
    axes' labels in a fixed order, so tags are distinct exactly when every axis's labels are."""
    seen: dict[str, Any] = {}
    for value in values:
        label = axis_label(axis, value)
        if label in seen:
            return (
                f"studies.recipe.{axis}: {seen[label]!r} and {value!r} print alike ({label}) and their cells would share a "
                "tag (folder names); give values that differ within 6 significant digits, or drop one"
            )
        seen[label] = value
    return None


def _optimizer_recipe(cfg: Any, recipe: Recipe, optimizer: str) -> Recipe:
    """The main recipe trained with ``optimizer``: unchanged for the main one; another takes its own default lr and
    Nesterov (the optimizer study's rule: SGD's lr 0.1 would blow Adam up), everything else the main recipe's."""
    if optimizer == recipe.optimizer:
        return recipe
    own = cfg.base_recipe(optimizer)  # the named recipe (train: {recipe: ...}) as that optimizer takes it
    return recipe.replace(optimizer=optimizer, lr=own.lr, nesterov=own.nesterov)


def cells(cfg: Any, recipe: Recipe) -> list[Cell]:
    """Every cell of ``cfg.studies.recipe`` in grid order (:data:`AXES`, the first slowest); an empty axis
    keeps the main setting's value (``recipe`` is the main zoo's)."""
    rs = cfg.studies.recipe
    options = cfg.model_options()
    axes: dict[str, list[Any]] = {
        "epochs": rs.epochs or [recipe.epochs],
        "init": rs.init or [options["init"]],
        "optimizer": rs.optimizer or [recipe.optimizer],
        "lr": rs.lr or [None],  # None: the cell's optimizer's lr (the main one, or another's default)
        "weight_decay": rs.weight_decay or [recipe.weight_decay],
        "width": rs.width or [options.get("width")],
    }
    out = []
    for epochs, init, optimizer, lr, wd, width in itertools.product(*axes.values()):
        opts = {**options, "init": init, **({"width": width} if width is not None else {})}
        rec = _optimizer_recipe(cfg, recipe, optimizer).replace(epochs=epochs, weight_decay=wd)
        rec = rec if lr is None else rec.replace(lr=lr)
        values = {"epochs": epochs, "init": init, "optimizer": optimizer, "lr": rec.lr, "weight_decay": wd, "width": width}
        out.append(Cell(values, opts, rec, cfg.star_recipe(rec, cfg.star.recipe)))
    return out


def same_runs(cfg: Any, shape: tuple[int, ...], classes: int) -> list[list[str]]:
    """Groups of cells (their tags) that are the same run: the same recipes, and inits that draw the same weights
    for this model (:func:`stardomain.models.init.effective_scheme`; the MLP's ``paper``, ``kaiming`` and ``default``),
    built on the meta device for inputs ``shape`` and ``classes``. Each group trains the same zoo and stars more than once."""
    rs = cfg.studies.recipe
    if rs is None or len(rs.init) < 2:
        return []
    from stardomain import models
    from stardomain.models.init import effective_scheme

    builtin = models.model_info(cfg.model.name).builder.__module__.startswith("stardomain.")
    groups: dict[str, list[str]] = {}
    built: dict[str, Any] = {}  # one meta build per width: the init changes values, never the layers
    for cell in cells(cfg, cfg.source_recipe()):
        shape_key = repr(sorted((k, v) for k, v in cell.options.items() if k != "init"))
        if shape_key not in built:
            built[shape_key] = models.build_on_meta(cfg.model.name, classes, shape, **cell.options)
        model, init = built[shape_key], cell.options["init"]
        scheme = init if model is None else effective_scheme(cfg.model.name, init, model, builtin)
        key = repr(({**cell.options, "init": scheme}, cell.recipe.to_dict(), cell.star_recipe.to_dict()))
        groups.setdefault(key, []).append(cell.tag)
    return [tags for tags in groups.values() if len(tags) > 1]


class RecipeStudy(Study):
    """results.json's ``recipe_study`` section: one row per cell (the setting's summary, endpoints with convergence)."""

    key = "recipe_study"
    order = 600

    def enabled(self, cfg: Any) -> bool:
        return bool(cfg.studies.recipe)

    def plan(self, builder: Planning, main: Main) -> None:
        rs = builder.exp.cfg.studies.recipe
        for cell in cells(builder.exp.cfg, builder.exp.recipe):
            builder.setting(cell.tag, cell.options, cell.recipe, rs.sources, rs.held_out, cell.star_recipe)

    def assemble(self, exp: Experimenting, main: Main) -> Any:
        rs = exp.cfg.studies.recipe
        rows = []
        for cell in cells(exp.cfg, exp.recipe):
            res = setting(exp, cell.tag, cell.options, cell.recipe, rs.sources, rs.held_out, cell.star_recipe)
            rows.append(
                {
                    **{k: res[k] for k in SETTING_KEYS},
                    "cell": dict(cell.values),
                    "recipe": cell.recipe.to_dict(),
                    "star_recipe": cell.star_recipe.to_dict(),
                }
            )
        axes = {k: list(dict.fromkeys(r["cell"][k] for r in rows)) for k in AXES}
        return {"axes": axes, "sources": rs.sources, "held_out": rs.held_out, "rows": rows}

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.recipe import recipe_section

        return recipe_section(results, out, figures)


register_study(RecipeStudy())
