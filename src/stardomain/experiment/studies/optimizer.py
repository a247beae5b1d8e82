"""Optimizer (v2 of the paper: Adam): the core barrier study again with another optimizer's zoo and star."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from stardomain.analysis import verdicts
from stardomain.errors import StardomainError
from stardomain.experiment.config_blocks import check
from stardomain.experiment.config_checks import check_overrides
from stardomain.experiment.studies.common import SETTING_KEYS, check_zoo_size, setting
from stardomain.experiment.study import Context, Judge, Main, Study, register_study


@dataclass
class OptimizerSettings:
    """``studies.optimizer``: the other optimizer, overrides of its sources' and its star's recipes, the zoo's size."""

    optimizer: str = "adam"
    recipe: dict = field(default_factory=dict)  # overrides of the source recipe for this optimizer
    star_recipe: dict = field(default_factory=dict)  # overrides for this study's star (star.recipe never applies here)
    sources: int = 4
    held_out: int = 2


def optimizer_section(res: Mapping[str, Any], recipe: Any, star_recipe: Any) -> dict[str, Any]:
    """results.json ``optimizer``: the setting's record and both recipes it trained with."""
    return {**{k: res[k] for k in ("optimizer", *SETTING_KEYS)}, "recipe": recipe.to_dict(), "star_recipe": star_recipe.to_dict()}


class OptimizerStudy(Study):
    key = "optimizer"
    order = 500
    settings = OptimizerSettings

    def check(self, cfg: Any, settings: Any) -> None:
        check_zoo_size("optimizer", settings)
        for where in ("recipe", "star_recipe"):
            check_overrides(f"studies.optimizer.{where}", getattr(settings, where))
        check(settings.optimizer in ("sgd", "adam"), f"studies.optimizer.optimizer: sgd or adam (got {settings.optimizer!r})")
        for where, build in (
            ("studies.optimizer.recipe", cfg.optimizer_recipe),
            ("studies.optimizer.star_recipe", lambda: self.recipes(cfg)[1]),
        ):
            try:
                build()
            except StardomainError as e:
                raise StardomainError(f"{where}: {e}") from None

    @staticmethod
    def recipes(cfg: Any) -> tuple[Any, Any]:
        rec = cfg.optimizer_recipe()
        return rec, cfg.star_recipe(rec, cfg.studies.optimizer.star_recipe)  # never star.recipe: that is the main optimizer's star

    def run(self, ctx: Context, main: Main) -> Any:
        os_ = ctx.cfg.studies.optimizer
        rec, opt_star = self.recipes(ctx.cfg)
        res = setting(ctx, f"opt-{os_.optimizer}", main.options, rec, os_.sources, os_.held_out, opt_star)
        return ctx.derive(optimizer_section, res, rec, opt_star)

    def budget(self, cfg: Any, count: Any) -> Mapping[str, tuple[int, str]]:
        os_ = cfg.studies.optimizer
        return {"studies.optimizer": (count.setting(os_.sources, os_.held_out), "one setting")}

    def tests(self, results: Mapping[str, Any], judge: Judge) -> Mapping[str, Any]:
        r = results["optimizer"]
        return {
            "optimizer": {
                "tag": r["tag"],
                **verdicts.setting_tests(r["summary"], r["endpoints"], judge.tolerance, judge.seed, judge.metric),
            }
        }

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.settings import optimizer_section as section

        return section(results)


register_study(OptimizerStudy())
