"""What several studies share: the barrier groups of one star and its zoo, the core barrier study of one training
setting, and the record of a star's repeats.

The first two take the plan context (:class:`~stardomain.experiment.study.Context`): they ask for units and return
handles; the rest are the computations ``ctx.derive`` calls on the resolved values (paths and pair results).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from stardomain.analysis.stats import mean_std
from stardomain.checkpoints.meta import read_checkpoint
from stardomain.experiment import pairs as pairing
from stardomain.experiment.config_blocks import check
from stardomain.experiment.study import Context, Experimenting, Model, Pending
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
    cks = [read_checkpoint(p) for p in stars]
    return [
        {"path": str(p.relative_to(exp.out)), "seed": ck.seed, "repeat": r, "metrics": ck.metrics_dict()}
        for r, (p, ck) in enumerate(zip(stars, cks))
    ]


def with_repeat(pair: Mapping[str, Any], repeat: int) -> dict[str, Any]:
    """A star group's pair record carries which repeat of the star it compares (the spread over stars)."""
    return {**pair, "repeat": repeat}


def barrier_groups(
    ctx: Context, sources: Sequence[Model], held: Sequence[Model], stars: Sequence[Model], bn: str = "reset"
) -> tuple[dict[str, list[Pending]], dict[str, Any]]:
    """regular–regular (sources, aligned), star–source and star–held-out (each aligned to its star, for every repeat
    of the star) as pair handles, and the record of which pairs each group holds (see :mod:`..pairs`)."""
    chosen = ctx.exp.group_pairs(sources, held, stars)
    reg = chosen["regular-regular"]
    k, n = len(chosen["star-source"]) // len(stars), len(sources)
    repeat = {p: r for r, p in enumerate(stars)}
    groups = {
        name: [
            ctx.pair(a, b, bn) if name == "regular-regular" else ctx.derive(with_repeat, ctx.pair(a, b, bn), repeat[a]) for a, b in pairs
        ]
        for name, pairs in chosen.items()
    }
    each = "" if len(stars) == 1 else f"each of the {len(stars)} stars"
    stems = lambda pairs: [(a.path.stem, b.path.stem) for a, b in pairs]  # noqa: E731
    record = {
        "regular-regular": pairing.pair_record(stems(reg), pairing.REGULAR_RULE, n * (n - 1) // 2),
        "star-source": pairing.pair_record(
            stems(chosen["star-source"]),
            (f"{each or 'the star'} against every source" if k == n else f"{each or 'the star'} against its {k} lowest-seed sources"),
            n * len(stars),
        ),
        "star-held-out": pairing.pair_record(
            stems(chosen["star-held-out"]), f"{each or 'the star'} against every held-out model", len(held) * len(stars)
        ),
    }
    return groups, record


def check_zoo_size(name: str, settings: Any) -> None:
    """A study's own zoo (``studies.<name>.sources`` and ``held_out``): enough models for its barrier groups."""
    check(settings.sources >= 2, f"studies.{name}.sources: |Z| must be >= 2 to compare regular pairs (got {settings.sources})")
    check(settings.held_out >= 1, f"studies.{name}.held_out: must be >= 1 (got {settings.held_out})")


# -- other training settings: the main barrier study again, for another width/depth or optimizer ------------------
def setting(
    ctx: Context, tag: str, options: Mapping[str, Any], recipe: Recipe, n_sources: int, n_held: int, star_recipe: Recipe
) -> Pending:
    """The core barrier study for one training setting (its own zoo folder and star): the units, and its record."""
    sources, held = ctx.zoo(tag, options, recipe, n_sources, n_held)
    stars = ctx.stars(f"{tag}-z{n_sources}", sources, options, star_recipe, ctx.cfg.star.mu)
    groups, record = barrier_groups(ctx, sources, held, stars)
    return ctx.derive(setting_record, ctx.exp, tag, dict(options), recipe, sources, held, stars, groups, record)


def setting_record(
    exp: Experimenting,
    tag: str,
    options: dict[str, Any],
    recipe: Recipe,
    sources: list[Path],
    held: list[Path],
    stars: list[Path],
    groups: dict[str, list[dict[str, Any]]],
    record: dict[str, Any],
) -> dict[str, Any]:
    """What results.json holds of one training setting, from its checkpoints and evaluated pairs."""
    star, cks = stars[0], [read_checkpoint(p) for p in stars]
    return {
        "tag": tag,
        "options": options,
        "optimizer": recipe.optimizer,
        "n_sources": len(sources),
        "n_held_out": len(held),
        "star": str(star.relative_to(exp.out)),
        "star_seed": cks[0].seed,
        "star_metrics": cks[0].metrics_dict(),
        "stars": [str(p.relative_to(exp.out)) for p in stars],
        "star_seeds": [ck.seed for ck in cks],
        "regular_metrics": {k: mean_std([read_checkpoint(p).metrics_dict()[k] for p in sources]) for k in ("test_acc", "test_loss")},
        "endpoints": exp.endpoints(stars, sources, held),
        "pairs": record,
        "groups": groups,
        "summary": summarize_groups(groups),
    }
