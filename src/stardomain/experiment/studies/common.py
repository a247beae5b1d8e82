"""What several studies share: the record of a star's repeats and the core barrier study of one training setting.

Functions take the :class:`~stardomain.experiment.pipeline.Experiment` that owns the run folder (its
models, pairs and cache; typed ``Any`` so this module stays below the pipeline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from stardomain.analysis.stats import mean_std
from stardomain.checkpoints import store
from stardomain.experiment.study import Experimenting
from stardomain.experiment.summary import summarize_groups
from stardomain.training.loop import Recipe

# what results.json keeps of one training setting (width/depth rows, the optimizer study)
SETTING_KEYS = (
    "tag",
    "options",
    "n_sources",
    "n_held_out",
    "summary",
    "pairs",
    "endpoints",
    "star_seed",
    "star_metrics",
    "regular_metrics",
    "stars",
    "star_seeds",
)


def star_records(exp: Experimenting, stars: Sequence[Path]) -> list[dict[str, Any]]:
    """What results.json says of each repeat of a star: its file, recorded seed, repeat index and metrics."""
    metas = [store.read_metadata(p) for p in stars]
    return [
        {"path": str(p.relative_to(exp.out)), "seed": m["seed"], "repeat": r, "metrics": m["metrics"]}
        for r, (p, m) in enumerate(zip(stars, metas))
    ]


# -- other training settings: the main barrier study again, for another width/depth or optimizer ------------------
def setting(
    exp: Any, tag: str, options: Mapping[str, Any], recipe: Recipe, n_sources: int, n_held: int, star_recipe: Recipe
) -> dict[str, Any]:
    """The core barrier study for one training setting (its own zoo folder and star)."""
    sources, held = exp.regular_models(tag, options, recipe, n_sources, n_held)
    stars = exp.stars(f"{tag}-z{n_sources}", sources, options, star_recipe, mu=exp.cfg.star.mu)
    star = stars[0]
    groups, record = exp.barrier_groups(sources, held, stars)
    return {
        "tag": tag,
        "options": dict(options),
        "optimizer": recipe.optimizer,
        "n_sources": n_sources,
        "n_held_out": n_held,
        "star": str(star.relative_to(exp.out)),
        "star_seed": store.read_metadata(star)["seed"],
        "star_metrics": store.read_metadata(star)["metrics"],
        "stars": [str(p.relative_to(exp.out)) for p in stars],
        "star_seeds": [store.read_metadata(p)["seed"] for p in stars],
        "regular_metrics": {k: mean_std([store.read_metadata(p)["metrics"][k] for p in sources]) for k in ("test_acc", "test_loss")},
        "endpoints": exp.endpoints(stars, sources, held),
        "pairs": record,
        "groups": groups,
        "summary": summarize_groups(groups),
    }
