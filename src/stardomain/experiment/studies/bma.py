"""BMA: the star domain's posterior against the deep ensemble of its sources (Sec. 4.1; one unit)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from stardomain.checkpoints import store
from stardomain.checkpoints.meta import read_state
from stardomain.experiment.config_blocks import check
from stardomain.experiment.folder import KeyedCall
from stardomain.experiment.study import Context, Experimenting, Judge, Main, Study, register_study

# the key as a call (version 1: hand-written, with a manual "tests" bump); 3: the curves carry bootstrap
# intervals ("ci"), so a cached version-2 result, which has none, is recomputed rather than reused
BMA_VERSION = 3


@dataclass
class BMASettings:
    """``studies.bma``: how many points per segment the posterior samples, and their seed."""

    max_samples: int = 20
    seed: int = 0


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


def bma_compute(exp: Experimenting, star: Path, sources: Sequence[Path]) -> Callable[..., dict[str, Any]]:
    """The study's one evaluation (called with :func:`bma_call`'s settings): BMA over segments to the aligned
    sources vs their ensemble, and the posterior tests (:func:`stardomain.bma.study.star_bma`, which ``stardomain
    bma`` calls too)."""

    def compute(
        max_samples: int,
        seed: int,
        bn_samples: int | None,
        align: str,
        symmetry: str,
        allow_unpermuted: bool,
        matching_samples: int = 0,
    ) -> dict[str, Any]:
        from stardomain.bma.study import star_bma
        from stardomain.data.protocol import in_memory

        star_state, ck = read_state(star)
        model = store.build_model(ck.arch.record).to(exp.device)
        return star_bma(
            star_state,
            model,
            [store.load_state(p)[0] for p in sources],
            in_memory(exp.dataset, "studies.bma"),
            align=align,
            symmetry=symmetry,
            spec=exp.spec(model) if align != "none" else None,
            matching_samples=matching_samples,
            max_samples=max_samples,
            seed=seed,
            bn_samples=bn_samples,
            device=exp.device,
            allow_unpermuted=allow_unpermuted,
        )

    return compute


class BMAStudy(Study):
    key = "bma"
    order = 200
    settings = BMASettings

    def check(self, cfg: Any, settings: Any) -> None:
        check(settings.max_samples >= 1, f"studies.bma.max_samples: must be >= 1 (got {settings.max_samples})")
        check(settings.seed >= 0, f"studies.bma.seed: must be >= 0 (got {settings.seed})")
        check(not cfg.stream, "studies.bma: needs the whole test split in memory; remove it when stream: true")

    def run(self, ctx: Context, main: Main) -> Any:
        star, paths = main.stars[0], [m.path for m in main.z]
        return ctx.evaluation(bma_call(ctx.exp, star.path, paths), bma_compute(ctx.exp, star.path, paths), uid=f"bma/{star.unit}")

    def budget(self, cfg: Any, count: Any) -> Mapping[str, tuple[int, str]]:
        return {"studies.bma": (1, "one evaluation")}

    def tests(self, results: Mapping[str, Any], judge: Judge) -> Mapping[str, Any]:
        return {"bma": results["bma"]["tests"]} if "tests" in results["bma"] else {}

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.study_sections import bma_section as section

        return section(results, out, figures)


register_study(BMAStudy())
