"""Which pairs of models a barrier group evaluates, and each star's endpoints.

Why not ``combinations()[:max_pairs]``: its first pairs all share model 0, so the "regular–regular"
mean would describe one model's neighbourhood. Disjoint pairs come first (each model used once),
then a seeded sample without replacement of the remaining pairs; the rule and the pairs are
recorded so the report can say exactly which models were compared.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Mapping, Sequence, TypeVar

from stardomain._util.units import pct, pp
from stardomain.analysis.stats import mean_std
from stardomain.defaults import STAR_ACC_MARGIN

T = TypeVar("T")

REGULAR_RULE = "disjoint pairs first (1st-2nd, 3rd-4th, ... source by seed), then a seeded sample without replacement of the rest"


def regular_pairs(models: Sequence[T], max_pairs: int, seed: int) -> list[tuple[T, T]]:
    """Up to ``max_pairs`` distinct pairs of ``models`` (ordered by seed): disjoint first, then a sample."""
    n = len(models)
    disjoint = [(i, i + 1) for i in range(0, n - 1, 2)]
    if max_pairs <= len(disjoint):
        chosen = disjoint[:max_pairs]
    else:
        taken = set(disjoint)
        rest = [p for p in itertools.combinations(range(n), 2) if p not in taken]
        extra = random.Random(seed).sample(rest, min(max_pairs - len(disjoint), len(rest)))
        chosen = disjoint + sorted(extra)
    return [(models[i], models[j]) for i, j in chosen]


def pair_record(names: Sequence[tuple[str, str]], rule: str, possible: int) -> dict[str, Any]:
    """What results.json says about one group's pairs: the rule, the pairs, and how many were possible."""
    return {"rule": rule, "pairs": [list(p) for p in names], "n_pairs": len(names), "possible": possible}


def endpoints(
    star: Mapping[str, float], sources: Sequence[Mapping[str, float]], held: Sequence[Mapping[str, float]], margin: float
) -> dict[str, Any]:
    """Test accuracy and loss of a star and of its sources / held-out models, and the poor-star flag.

    A barrier subtracts its endpoints' losses (Eq. 1), so a star much worse than its sources has a
    small barrier trivially: more than ``margin`` (a fraction) below the sources' mean test
    accuracy, the star is flagged and its barriers are not comparable with regular–regular ones.
    """
    keys = ("test_acc", "test_loss")
    src = {k: mean_std([m[k] for m in sources]) for k in keys}
    gap = src["test_acc"]["mean"] - float(star["test_acc"])
    return {
        "star": {k: float(star[k]) for k in keys},
        "sources": src,
        "held_out": {k: mean_std([m[k] for m in held]) for k in keys} if held else None,
        "star_acc_gap": gap,
        "margin": margin,
        "star_below_sources": bool(gap > margin),
    }


def poor_star_warning(star: Mapping[str, float], sources: Sequence[Mapping[str, float]], margin: float = STAR_ACC_MARGIN) -> str:
    """The pipeline's poor-star flag (:func:`endpoints`) in one line for a star trained alone (``stardomain star``);
    '' when the star is within ``margin`` of its sources' mean test accuracy, or a test accuracy is not recorded."""
    if star.get("test_acc") is None or not sources or any(m.get("test_acc") is None for m in sources):
        return ""
    both = [{**m, "test_loss": m.get("test_loss") or 0.0} for m in (star, *sources)]  # the flag reads accuracy only
    ep = endpoints(both[0], both[1:], [], margin)
    if not ep["star_below_sources"]:
        return ""
    return (
        f"the star's test accuracy {pct(ep['star']['test_acc'])} is {pp(ep['star_acc_gap'])} below its "
        f"sources' mean {pct(ep['sources']['test_acc']['mean'])} (margin {100 * margin:g} pp): its barriers are small "
        "trivially (a barrier subtracts its endpoints' losses) and the pipeline marks such a star not comparable; train "
        "it longer (--epochs) or check its recipe"
    )
