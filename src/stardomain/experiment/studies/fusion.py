"""Fusion (Eq. 9): a star trained with mu > 0 as one fused model, per number of sources, against its sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from stardomain.checkpoints import store
from stardomain.experiment.folder import KeyedCall
from stardomain.experiment.study import Experimenting, Main, Planning, Study, register_study


def fusion_tag(exp: Experimenting, k: int) -> str:
    return f"fusion-z{k}-mu{exp.cfg.studies.fusion.mu:g}"


FUSION_VERSION = 2  # the key as a call (version 1: hand-written)


def fusion_call(exp: Experimenting, star: Path, sources: Sequence[Path]) -> KeyedCall:
    """One fused star's row as a call: it reads the star and its sources and takes no setting."""
    return KeyedCall("fusion", FUSION_VERSION, {"star": star, "sources": tuple(sources)}, {}, exp.data_record())


def fusion_key(exp: Experimenting, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
    return fusion_call(exp, star, sources).key()


def fusion_row(exp: Experimenting, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
    """The fused star against its sources and their ensemble (one unit)."""
    from stardomain.bma import fusion as bma

    def compute() -> dict[str, Any]:
        star_state, meta = store.load_state(star)
        model = store.build_model(meta["arch"]).to(exp.device)
        states = [store.load_state(p)[0] for p in sources]
        return bma.fusion_row(model, states, star_state, exp.dataset, device=exp.device)

    return exp.cache.run(fusion_call(exp, star, sources), compute)


class FusionStudy(Study):
    key = "fusion"
    order = 300

    def enabled(self, cfg: Any) -> bool:
        return bool(cfg.studies.fusion)

    def plan(self, builder: Planning, main: Main) -> None:
        exp, f = builder.exp, builder.exp.cfg.studies.fusion
        for k in sorted(set(f.sizes)):
            srcs = main.sources[:k]
            star = builder.star(fusion_tag(exp, k), srcs, main.options, main.star_recipe, f.mu)
            paths = [m.path for m in srcs]
            builder.evaluation(
                "fusion",
                f"fusion/{star.unit}",
                [star, *srcs],
                lambda s=star, p=paths: fusion_key(exp, s.path, p),
                lambda s=star, p=paths: fusion_row(exp, s.path, p),
            )

    def assemble(self, exp: Experimenting, main: Main) -> Any:
        f = exp.cfg.studies.fusion
        rows = []
        for k in sorted(set(f.sizes)):
            star = exp.star_model(fusion_tag(exp, k), main.sources[:k], main.options, main.star_recipe, mu=f.mu)
            row = fusion_row(exp, star, main.sources[:k])
            rows.append({"n_sources": k, **row, "star_seed": store.read_metadata(star)["seed"]})
        return {"mu": f.mu, "rows": rows, "repeats": 1}  # one fused star per |Z|: star.repeats does not apply here

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        from stardomain.report.study_sections import fusion_section

        return fusion_section(results)


register_study(FusionStudy())
