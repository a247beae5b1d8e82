"""|Z|: one star per number of sources, each against the held-out models (more sources, lower barriers?)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from stardomain.analysis.stats import mean_std, over_stars
from stardomain.checkpoints import store
from stardomain.experiment.study import Experimenting, Main, Planning, Study, register_study


class NSourcesStudy(Study):
    key = "n_sources"
    order = 100

    def enabled(self, cfg: Any) -> bool:
        return bool(cfg.studies.n_sources)

    @staticmethod
    def sizes(cfg: Any) -> list[int]:
        return sorted(set(cfg.studies.n_sources.sizes))

    def plan(self, builder: Planning, main: Main) -> None:
        cfg = builder.exp.cfg
        for k in self.sizes(cfg):
            for star in builder.stars(f"main-z{k}", main.sources[:k], main.options, main.star_recipe, cfg.star.mu):
                for h in main.held:
                    builder.pair(star, h)

    def assemble(self, exp: Experimenting, main: Main) -> Any:
        held, rows = main.held, []
        for k in self.sizes(exp.cfg):
            sources = main.sources[:k]
            stars = exp.stars(f"main-z{k}", sources, main.options, main.star_recipe, mu=exp.cfg.star.mu)
            by_star = [[exp.pair(star, h) for h in held] for star in stars]
            pairs = [p for ps in by_star for p in ps]
            metas = [store.read_metadata(star) for star in stars]
            metrics = list(pairs[0]["barriers"])
            values_by_star = {m: [[p["barriers"][m] for p in ps] for ps in by_star] for m in metrics}
            rows.append(
                {
                    "n_sources": k,
                    "star": str(stars[0].relative_to(exp.out)),
                    "star_seed": metas[0]["seed"],
                    "star_test_acc": metas[0]["metrics"]["test_acc"],
                    "endpoints": exp.endpoints(stars, sources, held),
                    "stars": [str(p.relative_to(exp.out)) for p in stars],
                    "star_seeds": [m["seed"] for m in metas],
                    "stars_test_acc": mean_std([m["metrics"]["test_acc"] for m in metas]),
                    "star_held_out": {m: mean_std([p["barriers"][m] for p in pairs]) for m in metrics},
                    "values": {m: [p["barriers"][m] for p in pairs] for m in metrics},
                    "values_by_star": values_by_star,
                    "over_stars": {m: over_stars(v) for m, v in values_by_star.items()},
                }
            )
        rr = main.summary.get("regular-regular") if main.summary else None
        return {"rows": rows, "regular_regular": rr["barriers"] if rr else None, "regular_regular_values": rr["values"] if rr else None}

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.study_sections import n_sources_section

        return n_sources_section(results, out, figures)


register_study(NSourcesStudy())
