"""One setting's evaluated pairs -> the summary every table, test and figure reads.

Why its own module: the summary is the contract between the pipeline (which evaluates pairs) and
everything downstream (report, verdicts, width figure). Each group keeps the per-pair values
behind its means; a star group also keeps each star's own values and the spread over stars
(:func:`stardomain.analysis.stats.over_stars`), for barriers and distances alike.
"""

from __future__ import annotations

from typing import Any, Mapping

from stardomain.analysis.stats import mean_std, over_stars


def summarize_groups(groups: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per group: n, mean ± std of every barrier and distance, the values behind them, and for star groups
    (pairs carrying ``repeat``) the values per star and their spread over stars."""
    out = {}
    for name, pairs in groups.items():
        if not pairs:
            continue
        metrics = pairs[0]["barriers"].keys()
        out[name] = {
            "n_pairs": len(pairs),
            "barriers": {m: mean_std([p["barriers"][m] for p in pairs]) for m in metrics},
            "l2": mean_std([p["l2"] for p in pairs]),
            "l2_aligned": mean_std([p["l2_aligned"] for p in pairs]),
            # the per-pair values behind each mean: what every test of the report is computed from
            "values": {
                **{m: [p["barriers"][m] for p in pairs] for m in metrics},
                "l2": [p["l2"] for p in pairs],
                "l2_aligned": [p["l2_aligned"] for p in pairs],
            },
        }
        if "repeat" in pairs[0]:  # a star group: each star's own pairs, and the spread over stars
            k = 1 + max(p["repeat"] for p in pairs)
            by_star = {m: [[p["barriers"][m] for p in pairs if p["repeat"] == r] for r in range(k)] for m in metrics}
            by_star |= {d: [[p[d] for p in pairs if p["repeat"] == r] for r in range(k)] for d in ("l2", "l2_aligned")}
            out[name]["values_by_star"] = by_star
            out[name]["over_stars"] = {m: over_stars(v) for m, v in by_star.items()}
    return out
