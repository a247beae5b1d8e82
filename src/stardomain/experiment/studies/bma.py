"""BMA: the star domain's posterior against the deep ensemble of its sources (Sec. 4.1; one unit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from stardomain.checkpoints import store
from stardomain.experiment.study import Experimenting, Main, Planning, Study, register_study


def bma_key(exp: Experimenting, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
    """What the BMA study depends on: every checkpoint's content hash and the settings that change it."""
    b, ev = exp.cfg.studies.bma, exp.cfg.eval
    return {
        "star": store.content_hash(star),
        "sources": [store.content_hash(p) for p in sources],
        "max_samples": b.max_samples,
        "seed": b.seed,
        "bn_samples": ev.bn_samples,
        "align": ev.align,
        "subset": exp.cfg.subset,
        "matching_samples": ev.matching_samples if ev.align == "activation" else None,
        "tests": 1,
    }


def bma_section(exp: Experimenting, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
    """The study's one evaluation (cached): BMA over segments to the aligned sources vs their ensemble."""
    from stardomain.bma import core as bma
    from stardomain.permute import align as align_states

    b, ev = exp.cfg.studies.bma, exp.cfg.eval

    def compute() -> dict[str, Any]:
        star_state, meta = store.load_state(star)
        model = store.build_model(meta["arch"]).to(exp.device)
        aligned = []
        for p in sources:
            s, _ = store.load_state(p)
            if ev.align != "none":
                s, _ = align_states(
                    star_state,
                    s,
                    spec=exp.spec(model),
                    method=ev.align,
                    model=model,
                    x=exp.matching_x(ev.align),
                    seed=0,
                    allow_unpermuted=exp.cfg.allow_unpermuted,
                )
            aligned.append(s)
        out = bma.bma_study(
            model,
            star_state,
            aligned,
            exp.dataset,
            max_samples=b.max_samples,
            seed=b.seed,
            bn_samples=ev.bn_samples,
            device=exp.device,
            return_probs=True,
        )
        probs = {k: out[k].pop("probs") for k in ("star_domain", "ensemble")}
        out["tests"] = bma.posterior_tests(probs["star_domain"], probs["ensemble"], exp.dataset.test_y, seed=b.seed)
        return out

    return exp.cache.get_or_compute("bma", bma_key(exp, star, sources), compute)


class BMAStudy(Study):
    key = "bma"
    order = 200

    def enabled(self, cfg: Any) -> bool:
        return bool(cfg.studies.bma)

    def plan(self, builder: Planning, main: Main) -> None:
        star, paths = main.stars[0], [m.path for m in main.z]
        builder.evaluation(
            "bma",
            f"bma/{star.unit}",
            [star, *main.z],
            lambda: bma_key(builder.exp, star.path, paths),
            lambda: bma_section(builder.exp, star.path, paths),
        )

    def assemble(self, exp: Experimenting, main: Main) -> Any:
        return bma_section(exp, main.stars[0], main.z)

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.study_sections import bma_section as section

        return section(results, out, figures)


register_study(BMAStudy())
