"""|Z|: one star per number of sources, each against the held-out models (more sources, lower barriers?)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from stardomain.analysis import verdicts
from stardomain.analysis.stats import compare, mean_std, over_stars
from stardomain.checkpoints.meta import read_checkpoint
from stardomain.experiment.config_blocks import check
from stardomain.experiment.study import Context, Experimenting, Judge, Main, Study, register_study


@dataclass
class NSourcesSettings:
    """``studies.n_sources``: the |Z| of each star (its first sources by seed), against the same held-out models."""

    sizes: list[int] = field(default_factory=lambda: [2, 5, 10])


def n_sources_row(
    exp: Experimenting, k: int, sources: list[Path], held: list[Path], stars: list[Path], by_star: list[list[dict[str, Any]]]
) -> dict[str, Any]:
    """One |Z|: its stars and their barriers to every held-out model, per star and over stars."""
    pairs = [p for ps in by_star for p in ps]
    cks = [read_checkpoint(star) for star in stars]
    metrics = list(pairs[0]["barriers"])
    values_by_star = {m: [[p["barriers"][m] for p in ps] for ps in by_star] for m in metrics}
    return {
        "n_sources": k,
        "star": str(stars[0].relative_to(exp.out)),
        "star_seed": cks[0].seed,
        "star_test_acc": cks[0].metrics_dict()["test_acc"],
        "endpoints": exp.endpoints(stars, sources, held),
        "stars": [str(p.relative_to(exp.out)) for p in stars],
        "star_seeds": [ck.seed for ck in cks],
        "stars_test_acc": mean_std([ck.metrics_dict()["test_acc"] for ck in cks]),
        "star_held_out": {m: mean_std([p["barriers"][m] for p in pairs]) for m in metrics},
        "values": {m: [p["barriers"][m] for p in pairs] for m in metrics},
        "values_by_star": values_by_star,
        "over_stars": {m: over_stars(v) for m, v in values_by_star.items()},
    }


def n_sources_section(rows: list[dict[str, Any]], summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """results.json ``n_sources``: the rows, and the main study's regular–regular barriers they are compared with."""
    rr = summary.get("regular-regular") if summary else None
    return {"rows": rows, "regular_regular": rr["barriers"] if rr else None, "regular_regular_values": rr["values"] if rr else None}


class NSourcesStudy(Study):
    key = "n_sources"
    order = 100
    settings = NSourcesSettings

    def check(self, cfg: Any, settings: Any) -> None:
        check(all(2 <= k for k in settings.sizes), f"studies.n_sources.sizes: every size must be >= 2 (got {settings.sizes})")

    @staticmethod
    def sizes(cfg: Any) -> list[int]:
        return sorted(set(cfg.studies.n_sources.sizes))

    def run(self, ctx: Context, main: Main) -> Any:
        rows = []
        for k in self.sizes(ctx.cfg):
            sources = main.sources[:k]
            stars = ctx.stars(f"main-z{k}", sources, main.options, main.star_recipe, ctx.cfg.star.mu)
            by_star = [[ctx.pair(star, h) for h in main.held] for star in stars]
            rows.append(ctx.derive(n_sources_row, ctx.exp, k, sources, main.held, stars, by_star))
        return ctx.derive(n_sources_section, rows, main.summary)

    def budget(self, cfg: Any, count: Any) -> Mapping[str, tuple[int, str]]:
        k = len(self.sizes(cfg))
        return {"studies.n_sources.sizes": (k * count.repeats * (1 + cfg.held_out), f"{k:,} sizes")}

    def tests(self, results: Mapping[str, Any], judge: Judge) -> Mapping[str, Any]:
        rows = results["n_sources"]["rows"]
        if len(rows) < 2:
            return {}
        first, last = rows[0], rows[-1]
        out = {
            "first": first["n_sources"],
            "last": last["n_sources"],
            "metric": judge.metric,
            "trend": compare(last["values"][judge.metric], first["values"][judge.metric], seed=judge.seed),
            "comparable": not any(r["endpoints"]["star_below_sources"] for r in (first, last)),
            "converged": verdicts.converged(results.get("endpoints")),
        }
        out.update(verdicts.trend_over_stars(first, last, judge.seed, judge.metric))
        return {"n_sources": out}

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.study_sections import n_sources_section as section

        return section(results, out, figures)


register_study(NSourcesStudy())
