"""The main barrier study (Sec. 3 of the paper): the main zoo, its star(s), the three barrier groups, the distances
and the BatchNorm ablation. It writes results.json's top-level sections (``models``, ``endpoints``, ``barriers``,
``distances``, ``bn_ablation``) and hands the groups' summary (``MAIN_SUMMARY``) to the studies that compare with it
(``main.summary``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from stardomain.analysis import verdicts
from stardomain.analysis.stats import compare, mean_std
from stardomain.checkpoints.meta import read_checkpoint
from stardomain.experiment import ablation
from stardomain.experiment.studies.common import barrier_groups, star_records
from stardomain.experiment.study import MAIN_SUMMARY, Context, Experimenting, Judge, Main, Study, register_study
from stardomain.experiment.summary import summarize_groups


def models_record(exp: Experimenting, z: list[Path], held: list[Path], stars: list[Path], star_recipe: Any) -> dict[str, Any]:
    """results.json ``models``: which models the main study compared, the star's seed, recipe and metrics, histories."""
    star = read_checkpoint(stars[0])
    return {
        "sources": [p.stem for p in z],
        "held_out": [p.stem for p in held],
        "regular_test_acc": mean_std([read_checkpoint(p).metrics_dict()["test_acc"] for p in z]),
        "star": str(stars[0].relative_to(exp.out)),
        "star_seed": star.seed,
        "star_recipe": star_recipe.to_dict(),
        "star_metrics": star.metrics_dict(),
        "repeats": len(stars),
        "stars": star_records(exp, stars),
        "has_batchnorm": exp.has_batchnorm(),
        "histories": {p.stem: list(read_checkpoint(p).history) for p in [*z, *held, *stars]},
    }


def distances_section(summary: Mapping[str, Any]) -> dict[str, Any]:
    """results.json ``distances``: the ℓ2 distances of every group, raw and after alignment."""
    return {
        name: {
            "l2": s["l2"],
            "l2_aligned": s["l2_aligned"],
            "n_pairs": s["n_pairs"],
            "values": {k: s["values"][k] for k in ("l2", "l2_aligned")},
            **({"over_stars": {k: s["over_stars"][k] for k in ("l2", "l2_aligned")}} if "over_stars" in s else {}),
        }
        for name, s in summary.items()
    }


class MainStudy(Study):
    key = "main"
    order = 0
    merge = True  # its sections are results.json's top level

    def enabled(self, cfg: Any) -> bool:
        return True

    def run(self, ctx: Context, main: Main) -> Any:
        cfg, exp = ctx.cfg, ctx.exp
        out: dict[str, Any] = {
            "models": ctx.derive(models_record, exp, main.z, main.held, main.stars, main.star_recipe),
            "endpoints": ctx.derive(exp.endpoints, main.stars, main.z, main.held),
        }
        st = cfg.studies
        if not (st.barriers or st.distances):
            return out
        groups, record = barrier_groups(ctx, main.z, main.held, main.stars)
        summary = out[MAIN_SUMMARY] = ctx.derive(summarize_groups, groups)  # for the other studies (build_plan takes it out)
        if st.barriers:
            out["barriers"] = {"groups": groups, "summary": summary, "pairs": record}
        if cfg.eval.bn_ablation:
            interp = barrier_groups(ctx, main.z, main.held, main.stars, bn="interpolate")[0] if exp.has_batchnorm() else None
            out["bn_ablation"] = ctx.derive(ablation.bn_ablation, groups, interp, int(cfg.seed))
        if st.distances:
            out["distances"] = ctx.derive(distances_section, summary)
        return out

    def budget(self, cfg: Any, count: Any) -> Mapping[str, tuple[int, str]]:
        ev, st = cfg.eval, cfg.studies
        if not (st.barriers or st.distances):
            return {}
        return {"sources": (count.pairs(cfg.sources, cfg.held_out) * (2 if ev.bn_ablation else 1), "the main zoo, stars and pairs")}

    def tests(self, results: Mapping[str, Any], judge: Judge) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        if "barriers" in results:
            side = verdicts.by_metric(results["barriers"]["summary"], results.get("endpoints"), judge.tolerance, judge.seed, judge.metric)
            out["barriers"] = side[judge.metric]
            out["barriers_by_metric"] = side
        d = results.get("distances", {})
        if "regular-regular" in d and "star-held-out" in d:
            rr = d["regular-regular"]["values"]["l2_aligned"]
            out["distances"] = {"star_held_out_vs_regular": compare(d["star-held-out"]["values"]["l2_aligned"], rr, seed=judge.seed)}
            per_star = verdicts.star_means(d["star-held-out"], "l2_aligned") or []
            if len(per_star) >= 2:  # the star as the unit of replication: its mean distance to the held-out models
                out["distances"] |= {
                    "n_stars": len(per_star),
                    "star_held_out_vs_regular_over_stars": compare(per_star, rr, seed=judge.seed),
                }
        if results.get("bn_ablation", {}).get("applicable"):
            out["bn_ablation"] = results["bn_ablation"]["tests"]  # interpolated statistics minus the reset, per group
        return out

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.markdown import barrier_section, distances_section
        from stardomain.report.stars import bn_ablation_section

        lines: list[str] = []
        if "barriers" in results:
            lines += barrier_section(results, out, figures)
        if results.get("bn_ablation", {}).get("applicable"):
            lines += bn_ablation_section(results)
        if "distances" in results:
            lines += distances_section(results)
        return lines


register_study(MainStudy())
