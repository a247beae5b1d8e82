"""Optimizer (v2 of the paper: Adam): the core barrier study again with another optimizer's zoo and star."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from stardomain.experiment.studies.common import SETTING_KEYS, setting
from stardomain.experiment.study import Experimenting, Main, Planning, Study, register_study


class OptimizerStudy(Study):
    key = "optimizer"
    order = 500

    def enabled(self, cfg: Any) -> bool:
        return bool(cfg.studies.optimizer)

    @staticmethod
    def recipes(cfg: Any) -> tuple[Any, Any]:
        rec = cfg.optimizer_recipe()
        return rec, cfg.star_recipe(rec, cfg.studies.optimizer.star_recipe)  # never star.recipe: that is the main optimizer's star

    def plan(self, builder: Planning, main: Main) -> None:
        cfg = builder.exp.cfg
        os_ = cfg.studies.optimizer
        rec, opt_star = self.recipes(cfg)
        builder.setting(f"opt-{os_.optimizer}", main.options, rec, os_.sources, os_.held_out, opt_star)

    def assemble(self, exp: Experimenting, main: Main) -> Any:
        os_ = exp.cfg.studies.optimizer
        rec, opt_star = self.recipes(exp.cfg)
        res = setting(exp, f"opt-{os_.optimizer}", main.options, rec, os_.sources, os_.held_out, opt_star)
        out = {k: res[k] for k in ("optimizer", *SETTING_KEYS)}
        out["recipe"] = rec.to_dict()
        out["star_recipe"] = opt_star.to_dict()
        return out

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.settings import optimizer_section

        return optimizer_section(results)


register_study(OptimizerStudy())
