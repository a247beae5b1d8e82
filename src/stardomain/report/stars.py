"""The report's parts about repeated stars, the BatchNorm ablation and the width trend.

Why apart from :mod:`stardomain.report.markdown`: these read the results.json fields of repeated stars
(``over_stars``, ``bn_ablation``) and keep the distinction the report must never blur — a spread
*over stars* (the star is the unit of replication) is not a spread *over pairs* (pairs of one star
share that star). Results without those fields (one star, older runs) get the one-star wording.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from stardomain.analysis.stats import verdict
from stardomain.errors import StardomainError
from stardomain.report.formatting import GROUP_LABELS, GROUPS, compare_text, fmt, interval, num, star_claim_lines, table

SPREAD_NOTE = (
    "over stars = mean ± sample std of the per-star means (n = stars), each over that star's pairs; "
    "over pairs = all pairs of all stars pooled (n = pairs)."
)
ONE_STAR = "one star: the spread over stars is unknown"


def over_stars_cell(group: Mapping[str, Any] | None, metric: str = "test_loss", scale: float = 1.0, digits: int = 3) -> str:
    """'mean ± std (n=k stars)' of one star group, or '—' where no star is involved (regular–regular)."""
    if not group or "over_stars" not in group:
        return "—"
    o = group["over_stars"][metric]
    ms = o["over_stars"]
    return fmt(ms, scale, digits, n=False) + f" ({o['n_stars']} star{'s' if o['n_stars'] != 1 else ''})"


def n_stars(summary: Mapping[str, Any]) -> int | None:
    """Stars behind the star groups of one setting (None: results without repeats recorded)."""
    for g in ("star-held-out", "star-source"):
        if g in summary and "over_stars" in summary[g]:
            return int(summary[g]["over_stars"]["test_loss"]["n_stars"])
    return None


def over_star_verdicts(tests: Mapping[str, Any], flag: str = "") -> list[str]:
    """The star claims tested on per-star means (k >= 2), or the one-star caveat (k = 1)."""
    k = tests.get("n_stars")
    if k is None:
        return []
    if k < 2:
        return [f"- ({ONE_STAR}; the verdicts above treat the star's pairs as the sample)"]
    lines = [f"- over {k} stars (the star is the unit of replication; n = {k} per-star means):"]
    return lines + star_claim_lines(tests, flag, suffix="_over_stars", bullet="  - ")


def bn_ablation_section(results: Mapping[str, Any]) -> list[str]:
    """Barriers with the per-t BatchNorm reset (the paper) and with interpolated statistics, side by side."""
    ab = results["bn_ablation"]
    if not ab.get("applicable"):
        return []
    rows = []
    for g in GROUPS:
        if g not in ab["groups"]:
            continue
        a = ab["groups"][g]
        rows.append(
            [
                GROUP_LABELS[g],
                a["n_pairs"],
                *(
                    fmt(a[m][k], s, d, n=False)
                    for m, s, d in (("test_loss", 1, 3), ("test_acc", 100, 2))
                    for k in ("reset", "interpolate", "difference")
                ),
            ]
        )
    lines = [
        "## BatchNorm ablation: re-estimated vs interpolated statistics",
        "",
        "The same pairs evaluated twice: with BatchNorm statistics re-estimated on training data at every t (the paper's "
        "protocol) and with the endpoints' running statistics interpolated along with the weights (no reset). "
        "Difference = interpolated − re-estimated, per pair. Cells: mean ± sample std over the pairs.",
        "",
        table(
            [
                "pair type",
                "pairs",
                "test loss: re-estimated (paper)",
                "test loss: interpolated",
                "test loss: difference",
                "test acc (pp): re-estimated",
                "test acc (pp): interpolated",
                "test acc (pp): difference",
            ],
            rows,
        ),
        "",
    ]
    for g in (g for g in GROUPS if g in ab["tests"]):
        t = ab["tests"][g]
        lines.append(
            "- "
            + compare_text(
                t,
                f"{GROUP_LABELS[g]}: interpolated-statistics minus re-estimated test loss barrier",
                "the interpolated statistics give a LOWER barrier",
                f"the reset lowers the barrier by {num(t['diff'])} nats on average",
            )
        )
        if "paired" in t:  # the same pairs measured twice: the paired interval is the sharper test
            pt = t["paired"]
            word = verdict(pt, "lower with interpolated statistics", "higher with interpolated statistics")
            lines.append(
                f"  - paired over the same {pt['difference']['n']} pairs: mean difference {num(pt['difference']['mean'])}, "
                f"95% t interval {interval(pt['ci'])}: {word}"
            )
    return lines + [""]


def width_trend_lines(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    """The width figure (barrier vs width per group, spreads over stars where repeated), or why it is skipped."""
    from stardomain.report.width_plot import plot_width_trend

    path = out / "width_trend.png"
    try:
        mlp = (results.get("config") or {}).get("model", {}).get("name") == "mlp"
        # the authors' published widths are MLP hidden units: beside a CNN's width multiplier they would mislead
        plot_width_trend(results, path, published=mlp, xlabel="hidden width" if mlp else "width multiplier")
    except StardomainError as e:
        return [f"No width-trend figure: {e}", ""]
    figures.append(path.name)
    k = [n_stars(r["summary"]) for r in results["width_depth"]["rows"]]
    spread = "sample std over stars" if all(x and x > 1 for x in k) else "sample std over pairs"
    return [f"Test loss barrier vs width (error bars: {spread}).", "", f"![barrier vs width]({path.name})", ""]
