"""Fusion (Eq. 9): a star trained with mu > 0 as one fused model, per number of sources, against its sources."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from stardomain.analysis.stats import against_population
from stardomain.checkpoints import store
from stardomain.checkpoints.meta import read_checkpoint, read_state
from stardomain.experiment.config_blocks import check
from stardomain.experiment.folder import KeyedCall
from stardomain.experiment.study import Context, Experimenting, Judge, Main, Study, register_study

FUSION_VERSION = 2  # the key as a call (version 1: hand-written)


@dataclass
class FusionSettings:
    """``studies.fusion``: the |Z| of each fused star and its cross-entropy weight mu (Eq. 9)."""

    sizes: list[int] = field(default_factory=lambda: [2, 5, 10])
    mu: float = 1.0


def fusion_tag(cfg: Any, k: int) -> str:
    return f"fusion-z{k}-mu{cfg.studies.fusion.mu:g}"


def fusion_call(exp: Experimenting, star: Path, sources: Sequence[Path]) -> KeyedCall:
    """One fused star's row as a call: it reads the star and its sources and takes no setting."""
    return KeyedCall("fusion", FUSION_VERSION, {"star": star, "sources": tuple(sources)}, {}, exp.data_record())


def fusion_compute(exp: Experimenting, star: Path, sources: Sequence[Path]) -> Callable[[], dict[str, Any]]:
    """The fused star against its sources and their ensemble (one unit)."""

    def compute() -> dict[str, Any]:
        from stardomain.bma import fusion as bma
        from stardomain.data.protocol import in_memory

        star_state, ck = read_state(star)
        model = store.build_model(ck.arch.record).to(exp.device)
        states = [store.load_state(p)[0] for p in sources]
        return bma.fusion_row(model, states, star_state, in_memory(exp.dataset, "studies.fusion"), device=exp.device)

    return compute


def fusion_record(k: int, row: Mapping[str, Any], star: Path) -> dict[str, Any]:
    return {"n_sources": k, **row, "star_seed": read_checkpoint(star).seed}


class FusionStudy(Study):
    key = "fusion"
    order = 300
    settings = FusionSettings

    def check(self, cfg: Any, settings: Any) -> None:
        check(all(1 <= k for k in settings.sizes), f"studies.fusion.sizes: every size must be >= 1 (got {settings.sizes})")
        check(math.isfinite(settings.mu), f"studies.fusion.mu: must be a finite number (got {settings.mu})")
        check(settings.mu > 0, f"studies.fusion.mu: the fusion variant needs mu > 0 (got {settings.mu})")
        check(not cfg.stream, "studies.fusion: needs the whole test split in memory; remove it when stream: true")

    def run(self, ctx: Context, main: Main) -> Any:
        f, exp = ctx.cfg.studies.fusion, ctx.exp
        rows = []
        for k in sorted(set(f.sizes)):
            sources = main.sources[:k]
            star = ctx.star(fusion_tag(ctx.cfg, k), sources, main.options, main.star_recipe, f.mu)
            paths = [m.path for m in sources]
            row = ctx.evaluation(fusion_call(exp, star.path, paths), fusion_compute(exp, star.path, paths), uid=f"fusion/{star.unit}")
            rows.append(ctx.derive(fusion_record, k, row, star))
        return {"mu": f.mu, "rows": rows, "repeats": 1}  # one fused star per |Z|: star.repeats does not apply here

    def budget(self, cfg: Any, count: Any) -> Mapping[str, tuple[int, str]]:
        k = len(set(cfg.studies.fusion.sizes))
        return {"studies.fusion.sizes": (2 * k, f"{k:,} sizes")}

    def tests(self, results: Mapping[str, Any], judge: Judge) -> Mapping[str, Any]:
        rows = results["fusion"]["rows"]
        return {"fusion": [{"n_sources": r["n_sources"], **against_population(r["regular_accs"], r["star_acc"])} for r in rows]}

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.study_sections import fusion_section

        return fusion_section(results)


register_study(FusionStudy())
