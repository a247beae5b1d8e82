"""A study as a user writes one, in one plugin module: its YAML settings, its checks, one ``run`` that asks for its
units and says how its section is made of them, its verdict test and its report section.

``studies: {star_norm: {p: 1}}`` in an experiment YAML (with ``plugins: [own_study]``) runs it: the ℓp norm of every
repeat of the main star and of its sources, one cached evaluation unit per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from stardomain.analysis.stats import mean_std
from stardomain.checkpoints import store
from stardomain.errors import StardomainError
from stardomain.experiment.folder import KeyedCall
from stardomain.experiment.study import Context, Judge, Main, Study, register_study


@dataclass
class StarNormSettings:
    p: float = 2.0  # the norm's order


def norm_compute(path: Path) -> Callable[..., dict[str, Any]]:
    def compute(p: float) -> dict[str, Any]:
        state, _ = store.load_state(path)
        return {"model": path.stem, "norm": float(sum(float((v.double().abs() ** p).sum()) for v in state.values()) ** (1 / p))}

    return compute


def section(stars: list[dict[str, Any]], sources: list[dict[str, Any]], p: float) -> dict[str, Any]:
    return {"p": p, "stars": stars, "sources": sources, "sources_norm": mean_std([s["norm"] for s in sources])}


class StarNormStudy(Study):
    key = "star_norm"
    settings = StarNormSettings

    def check(self, cfg: Any, settings: Any) -> None:
        if not settings.p >= 1:
            raise StardomainError(f"studies.star_norm.p: a norm's order is >= 1 (got {settings.p})")

    def run(self, ctx: Context, main: Main) -> Any:
        p = self.settings_of(ctx.cfg).p
        data = ctx.exp.data_record()

        def norm(model: Any) -> Any:
            call = KeyedCall("star_norm", 1, {"model": model.path}, {"p": p}, data)
            return ctx.evaluation(call, norm_compute(model.path))  # waits for, and is named by, the model it reads

        return ctx.derive(section, [norm(s) for s in main.stars], [norm(m) for m in main.z], p)

    def tests(self, results: Mapping[str, Any], judge: Judge) -> Mapping[str, Any]:
        sec = results["star_norm"]
        return {"star_norm": {"star_below_sources": sec["stars"][0]["norm"] < sec["sources_norm"]["mean"]}}

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        sec = results["star_norm"]
        return ["## Star norm", "", f"ℓ{sec['p']:g} norm of the star's weights: {sec['stars'][0]['norm']:.3f}", ""]


register_study(StarNormStudy())
