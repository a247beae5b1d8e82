"""BMA: the star domain's posterior against the deep ensemble of its sources (Sec. 4.1; one unit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from stardomain.checkpoints import store
from stardomain.experiment.folder import KeyedCall
from stardomain.experiment.study import Experimenting, Main, Planning, Study, register_study

# the key as a call (version 1: hand-written, with a manual "tests" bump); 3: the curves carry bootstrap
# intervals ("ci"), so a cached version-2 result, which has none, is recomputed rather than reused
BMA_VERSION = 3


def bma_call(exp: Experimenting, star: Path, sources: Sequence[Path]) -> KeyedCall:
    """The BMA study's one evaluation as a call: every checkpoint and every setting it is computed with."""
    b, ev = exp.cfg.studies.bma, exp.cfg.eval
    settings: dict[str, Any] = {
        "max_samples": b.max_samples,
        "seed": b.seed,
        "bn_samples": ev.bn_samples,
        "align": ev.align,
        "symmetry": ev.symmetry,
        "allow_unpermuted": exp.cfg.allow_unpermuted,
    }
    if ev.align == "activation":
        settings["matching_samples"] = ev.matching_samples
    return KeyedCall("bma", BMA_VERSION, {"star": star, "sources": tuple(sources)}, settings, exp.data_record())


def bma_key(exp: Experimenting, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
    return bma_call(exp, star, sources).key()


def bma_section(exp: Experimenting, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
    """The study's one evaluation (cached): BMA over segments to the aligned sources vs their ensemble."""
    from stardomain.bma import core as bma
    from stardomain.data import matching_sample
    from stardomain.permute import align as align_states

    def compute(
        max_samples: int,
        seed: int,
        bn_samples: int | None,
        align: str,
        symmetry: str,
        allow_unpermuted: bool,
        matching_samples: int = 0,
    ) -> dict[str, Any]:
        star_state, meta = store.load_state(star)
        model = store.build_model(meta["arch"]).to(exp.device)
        x = matching_sample(exp.dataset, matching_samples, seed=0).to(exp.device) if align == "activation" else None
        aligned = []
        for p in sources:
            s, _ = store.load_state(p)
            if align != "none":
                s, _ = align_states(
                    star_state,
                    s,
                    spec=exp.spec(model),
                    method=align,
                    model=model,
                    x=x,
                    seed=0,
                    symmetry=symmetry,
                    allow_unpermuted=allow_unpermuted,
                )
            aligned.append(s)
        out = bma.bma_study(
            model,
            star_state,
            aligned,
            exp.dataset,
            max_samples=max_samples,
            seed=seed,
            bn_samples=bn_samples,
            device=exp.device,
            return_probs=True,
        )
        probs = {k: out[k].pop("probs") for k in ("star_domain", "ensemble")}
        out["tests"] = bma.posterior_tests(probs["star_domain"], probs["ensemble"], exp.dataset.test_y, seed=seed)
        return out

    return exp.cache.run(bma_call(exp, star, sources), compute)


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
