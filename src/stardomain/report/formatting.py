"""Formatting shared by the report's sections: table cells (mean ± sample std with n), intervals, verdict lines.

Kept apart from :mod:`stardomain.report.markdown` so that the section modules (``report_stars``,
``report_settings``) and the report itself all build on it, and none imports the other back.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from stardomain.analysis.stats import verdict

GROUPS = ("regular-regular", "star-source", "star-held-out")
GROUP_LABELS = {"regular-regular": "regular – regular", "star-source": "star θ⋆ – source Z", "star-held-out": "star θ⋆ – held-out H"}


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(ms: Mapping[str, float] | None, scale: float = 1.0, digits: int = 3, n: bool = True) -> str:
    """'mean ± sample std (n=N)' of a mean_std dict (scaled, e.g. 100 for %); no ± for a single value,
    whose spread is unknown (not zero)."""
    if not ms or ms.get("n", 1) == 0 or _nan(ms.get("mean")):
        return "–"
    text = f"{ms['mean'] * scale:.{digits}f}"
    if ms.get("n", 2) > 1:
        text += f" ± {ms['std'] * scale:.{digits}f}"
    return f"{text} (n={ms['n']})" if n and "n" in ms else text


def num(x: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "–" if x is None or _nan(x) else f"{x * scale:.{digits}f}"


def interval(pair: Sequence[float] | None, scale: float = 1.0, digits: int = 3) -> str:
    return "[–]" if not pair or any(_nan(v) for v in pair) else f"[{pair[0] * scale:.{digits}f}, {pair[1] * scale:.{digits}f}]"


def clip(pair: Sequence[float]) -> list[float]:
    """An accuracy interval shown within [0, 1]: the t approximation can reach past 100%."""
    return [v if _nan(v) else min(max(v, 0.0), 1.0) for v in pair]


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def near_zero_text(t: Mapping[str, Any], what: str, below: str, above: str, flag: str = "") -> str:
    word = flag or verdict(t, below, above)
    return f"{what} {fmt(t['values'])} vs tolerance {t['tolerance']:g} (one-sided 95% t bounds {interval(t['bounds'])}): {word}"


def compare_text(t: Mapping[str, Any], what: str, lower: str, higher: str, scale: float = 1.0, digits: int = 3, flag: str = "") -> str:
    """A two-sample verdict with its numbers; ``flag`` (why the star is not comparable) replaces the verdict."""
    w = t["welch"]
    p = "–" if _nan(w["p"]) else f"{w['p']:.3g}"
    return (
        f"{what}: {flag or verdict(t, lower, higher)} (difference {num(t['diff'], scale, digits)}, bootstrap 95% CI "
        f"{interval(t['ci95'], scale, digits)}, Welch p = {p}, n = {t['a']['n']} vs {t['b']['n']})"
    )


def acc_loss(part: Mapping[str, Any] | None) -> str:
    """One endpoint cell: test accuracy (%) / test loss, each mean ± sample std for a group."""
    if not part:
        return "–"
    if isinstance(part["test_acc"], Mapping):
        return f"{fmt(part['test_acc'], 100, 2)} / {fmt(part['test_loss'], n=False)}"
    return f"{num(part['test_acc'], 100, 2)} / {num(part['test_loss'])}"


def star_claim_lines(tests: Mapping[str, Any], flag: str = "", suffix: str = "", bullet: str = "- ") -> list[str]:
    """Verdict lines of the two star claims (near 0 to its sources, below regular–regular to held-out models);
    ``suffix`` picks the tests on per-star means (``_over_stars``) instead of the pooled pairs."""
    lines = []
    if "star_source_near_zero" + suffix in tests:
        lines.append(bullet + near_zero_text(tests["star_source_near_zero" + suffix], "star–source barrier", "near 0", "NOT near 0", flag))
    if "star_held_out_vs_regular" + suffix in tests:
        lines.append(
            bullet
            + compare_text(
                tests["star_held_out_vs_regular" + suffix],
                "star–held-out minus regular–regular barrier",
                "star–held-out is below regular–regular",
                "star–held-out is ABOVE regular–regular",
                flag=flag,
            )
        )
    return lines


def poor_star(ep: Mapping[str, Any]) -> str:
    """Which star is below its sources and by how much: with repeats, the worst repeat (not repeat 0,
    which may well be fine), so the flag's wording names the star that raised it."""
    gaps, below = ep.get("star_acc_gaps"), ep.get("stars_below_sources")
    what = "below its sources' mean test accuracy"
    if gaps:
        worst = max(range(len(gaps)), key=lambda i: gaps[i])
        n_below = sum(1 for g in gaps if g > ep["margin"])
        return f"{n_below} of {len(gaps)} stars {what} (worst: repeat {worst}, {100 * gaps[worst]:.2f} pp)"
    if below and not below[0]:  # results written before the per-repeat gaps were recorded
        return f"{sum(below)} of {len(below)} stars {what} (repeats {', '.join(str(i) for i, b in enumerate(below) if b)})"
    return f"the star is {100 * ep['star_acc_gap']:.2f} pp {what}"
