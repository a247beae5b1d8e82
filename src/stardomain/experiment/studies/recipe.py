"""The recipe-sensitivity study: *when* does a star exist?

Barriers between trained models move by an order of magnitude with the training budget, the
initialisation and the weight decay (issue 22), and a barrier between unconverged models is not
the paper's quantity. This study runs the core barrier study (regular–regular, star–source,
star–held-out; :func:`.common.setting`) in every cell of a grid epochs x init x optimizer x lr x
weight decay (x width), each cell with its own zoo and stars, and records every cell's convergence beside its
barriers. Its run, its trial builds and its budget all take the cells from :func:`cells`, so they cannot drift apart.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from stardomain.analysis import verdicts
from stardomain.errors import StardomainError
from stardomain.experiment.config_blocks import check
from stardomain.experiment.studies.common import SETTING_KEYS, check_zoo_size, setting
from stardomain.experiment.study import Context, Judge, Main, Study, register_study
from stardomain.training.loop import Recipe

AXES = ("epochs", "init", "optimizer", "lr", "weight_decay", "width")  # grid order: epochs slowest ... width fastest


@dataclass
class RecipeSettings:
    """``studies.recipe``: when does a star exist? The core barrier study over a grid of training recipes: epochs x
    init x optimizer x lr x weight decay (x width). Every cell is a setting of its own (zoo, stars, pairs); its
    convergence is recorded."""

    epochs: list[int] = field(default_factory=list)  # empty: the main recipe's epochs only
    init: list[str] = field(default_factory=list)  # empty: model.init only
    optimizer: list[str] = field(default_factory=list)  # empty: the main recipe's; another gets its default lr/nesterov
    lr: list[float] = field(default_factory=list)  # empty: the main recipe's lr (another optimizer: that one's default)
    weight_decay: list[float] = field(default_factory=list)  # empty: the main recipe's weight decay only
    width: list[float] = field(default_factory=list)  # model option `width`; empty: the main model's
    sources: int = 4
    held_out: int = 2


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


def check_settings(cfg: Any, rs: RecipeSettings) -> None:
    """Every axis's values in range, distinct and with distinct tags; an lr/optimizer axis never beside a star.recipe
    that fixes the same key; the width axis typed like the model's option (it is converted in place)."""
    from stardomain import models

    where = "studies.recipe"
    check_zoo_size("recipe", rs)
    check(all(e >= 1 for e in rs.epochs), f"{where}.epochs: every entry must be >= 1 (got {rs.epochs})")
    check(all(w >= 0 and w < 1 for w in rs.weight_decay), f"{where}.weight_decay: every entry in [0, 1) (got {rs.weight_decay})")
    check(all(lr > 0 and math.isfinite(lr) for lr in rs.lr), f"{where}.lr: every entry must be > 0 and finite (got {rs.lr})")
    bad = [o for o in rs.optimizer if o not in ("sgd", "adam")]
    check(not bad, f"{where}.optimizer: sgd or adam (got {bad[0] if bad else ''!r})")
    for axis in ("lr", "optimizer"):  # a star trained otherwise than its cell would be reported under the cell's name
        check(
            not (getattr(rs, axis) and axis in cfg.star.recipe),
            f"{where}.{axis} varies every cell's {axis}, but star.recipe.{axis} fixes every star's at "
            f"{cfg.star.recipe.get(axis)!r}, so a cell's stars would not train at its {axis}; remove one of the two",
        )
    for i in rs.init:
        try:
            models.check_init(i)
        except StardomainError as e:
            raise StardomainError(f"{where}.init: {e}") from None
    if rs.width:
        check(
            "width" in models.model_info(cfg.model.name).defaults, f"{where}.width: model {cfg.model.name} has no option 'width'; remove it"
        )
        check(all(w > 0 and math.isfinite(w) for w in rs.width), f"{where}.width: every entry must be > 0 and finite (got {rs.width})")
        rs.width = typed_widths(cfg.model.name, rs.width, f"{where}.width")
    for name in AXES:
        values = getattr(rs, name)
        check(len(set(values)) == len(values), f"{where}.{name}: an entry is repeated ({values})")
    for name, values in (("lr", rs.lr), ("weight_decay", rs.weight_decay), ("width", rs.width)):
        collision = tag_collision(name, values)
        check(collision is None, collision or "")


def typed_widths(model: str, widths: list[float], where: str) -> list[Any]:
    """The width axis typed like the model's option it varies: whole numbers for an int width (the MLP's units:
    ``[4, 8]``, read as floats by the axis, are 4 and 8), floats for a width multiplier."""
    from stardomain import models

    want = models.model_info(model).types["width"]
    if want is float:
        return [float(w) for w in widths]
    if want is int:
        fractions = [w for w in widths if not float(w).is_integer()]
        check(not fractions, f"{where}: {model}'s option width is a whole number (got {fractions[0] if fractions else ''})")
        return [int(w) for w in widths]
    raise StardomainError(f"{where}: {model}'s option width is a {want.__name__}, not a number the axis can vary; remove it")


def cell_row(cell: Cell, res: Mapping[str, Any]) -> dict[str, Any]:
    """One cell's row: the setting's record, what varies and both recipes."""
    return {
        **{k: res[k] for k in SETTING_KEYS},
        "cell": dict(cell.values),
        "recipe": cell.recipe.to_dict(),
        "star_recipe": cell.star_recipe.to_dict(),
    }


def recipe_section(rows: list[dict[str, Any]], sources: int, held_out: int) -> dict[str, Any]:
    axes = {k: list(dict.fromkeys(r["cell"][k] for r in rows)) for k in AXES}
    return {"axes": axes, "sources": sources, "held_out": held_out, "rows": rows}


class RecipeStudy(Study):
    """results.json's ``recipe_study`` section: one row per cell (the setting's summary, endpoints with convergence)."""

    key = "recipe_study"
    yaml_key = "recipe"
    order = 600
    settings = RecipeSettings

    def check(self, cfg: Any, settings: Any) -> None:
        check_settings(cfg, settings)

    def builds(self, cfg: Any) -> list[tuple[str, dict[str, Any]]]:
        """The cells' own options, as the study will build them."""
        return [
            ("studies.recipe.width" if c.values["width"] is not None else "studies.recipe", c.options)
            for c in cells(cfg, cfg.source_recipe())
        ]

    def run(self, ctx: Context, main: Main) -> Any:
        rs = ctx.cfg.studies.recipe
        rows = [
            ctx.derive(cell_row, cell, setting(ctx, cell.tag, cell.options, cell.recipe, rs.sources, rs.held_out, cell.star_recipe))
            for cell in cells(ctx.cfg, ctx.exp.recipe)
        ]
        return ctx.derive(recipe_section, rows, rs.sources, rs.held_out)

    def budget(self, cfg: Any, count: Any) -> Mapping[str, tuple[int, str]]:
        """The cells' count from the axes' lengths (a grid of 10^6 cells is refused in microseconds, never enumerated)."""
        rs = cfg.studies.recipe
        k, each = math.prod(max(1, len(getattr(rs, axis))) for axis in AXES), count.setting(rs.sources, rs.held_out)
        return {"studies.recipe": (k * each, f"{k:,} cells x {each:,} units")}

    def tests(self, results: Mapping[str, Any], judge: Judge) -> Mapping[str, Any]:
        t, seed, metric = judge.tolerance, judge.seed, judge.metric
        return {
            "recipe_study": [
                {
                    "tag": r["tag"],
                    **verdicts.setting_tests(r["summary"], r["endpoints"], t, seed, metric),
                    "by_metric": verdicts.by_metric(r["summary"], r["endpoints"], t, seed, metric),
                }
                for r in results["recipe_study"]["rows"]
            ]
        }

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.recipe import recipe_section as section

        return section(results, out, figures)


register_study(RecipeStudy())
