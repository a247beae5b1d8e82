"""Width and depth (v2 of the paper): the core barrier study again for every architecture setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from stardomain.experiment.studies.common import SETTING_KEYS, setting
from stardomain.experiment.study import Experimenting, Main, Planning, Study, register_study


def width_depth_tag(i: int, extra: Mapping[str, Any]) -> str:
    return "wd-" + "-".join(f"{k}{v}" for k, v in sorted(extra.items())) if extra else f"wd-{i}"


class WidthDepthStudy(Study):
    key = "width_depth"
    order = 400

    def enabled(self, cfg: Any) -> bool:
        return bool(cfg.studies.width_depth)

    def plan(self, builder: Planning, main: Main) -> None:
        exp, wd = builder.exp, builder.exp.cfg.studies.width_depth
        for i, extra in enumerate(wd.settings):
            builder.setting(width_depth_tag(i, extra), {**main.options, **extra}, exp.recipe, wd.sources, wd.held_out, main.star_recipe)

    def assemble(self, exp: Experimenting, main: Main) -> Any:
        wd = exp.cfg.studies.width_depth
        rows = []
        for i, extra in enumerate(wd.settings):
            res = setting(exp, width_depth_tag(i, extra), {**main.options, **extra}, exp.recipe, wd.sources, wd.held_out, main.star_recipe)
            rows.append({k: res[k] for k in SETTING_KEYS})
        return {"rows": rows}

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.settings import width_depth_section

        return width_depth_section(results, out, figures)


register_study(WidthDepthStudy())
