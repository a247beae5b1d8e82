"""Width and depth (v2 of the paper): the core barrier study again for every architecture setting."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from stardomain.analysis import verdicts
from stardomain.experiment.config_blocks import check
from stardomain.experiment.studies.common import SETTING_KEYS, check_zoo_size, setting
from stardomain.experiment.study import Context, Judge, Main, Study, register_study


@dataclass
class WidthDepthSettings:
    """``studies.width_depth``: barriers across sizes; each entry is a dict of model options (e.g. {width: 8})."""

    settings: list[dict] = field(default_factory=list)
    sources: int = 4
    held_out: int = 2


def width_depth_tag(i: int, extra: Mapping[str, Any]) -> str:
    return "wd-" + "-".join(f"{k}{v}" for k, v in sorted(extra.items())) if extra else f"wd-{i}"


def kept(record: Mapping[str, Any]) -> dict[str, Any]:
    """What results.json keeps of one setting's record (a width/depth row)."""
    return {k: record[k] for k in SETTING_KEYS}


class WidthDepthStudy(Study):
    key = "width_depth"
    order = 400
    settings = WidthDepthSettings

    def check(self, cfg: Any, settings: Any) -> None:
        from stardomain import models

        check_zoo_size("width_depth", settings)
        allowed = [k for k in models.model_info(cfg.model.name).defaults if k != "init"] + ["init"]
        for i, extra in enumerate(settings.settings):
            bad = sorted(set(extra) - set(allowed))
            check(
                not bad,
                f"studies.width_depth.settings[{i}]: '{bad[0] if bad else ''}' is not an option of "
                f"{cfg.model.name}; allowed: {', '.join(allowed)}",
            )

    def builds(self, cfg: Any) -> list[tuple[str, dict[str, Any]]]:
        options = cfg.model_options()
        return [(f"studies.width_depth.settings[{i}]", {**options, **extra}) for i, extra in enumerate(cfg.studies.width_depth.settings)]

    def run(self, ctx: Context, main: Main) -> Any:
        wd = ctx.cfg.studies.width_depth
        rows = [
            ctx.derive(
                kept,
                setting(
                    ctx, width_depth_tag(i, extra), {**main.options, **extra}, ctx.exp.recipe, wd.sources, wd.held_out, main.star_recipe
                ),
            )
            for i, extra in enumerate(wd.settings)
        ]
        return {"rows": rows}

    def budget(self, cfg: Any, count: Any) -> Mapping[str, tuple[int, str]]:
        wd = cfg.studies.width_depth
        k, each = len(wd.settings), count.setting(wd.sources, wd.held_out)
        return {"studies.width_depth.settings": (k * each, f"{k:,} settings x {each:,} units")}

    def tests(self, results: Mapping[str, Any], judge: Judge) -> Mapping[str, Any]:
        rows = results["width_depth"]["rows"]
        return {
            "width_depth": [
                {"tag": r["tag"], **verdicts.setting_tests(r["summary"], r["endpoints"], judge.tolerance, judge.seed, judge.metric)}
                for r in rows
            ]
        }

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.settings import width_depth_section

        return width_depth_section(results, out, figures)


register_study(WidthDepthStudy())
