"""The BatchNorm ablation: the main barrier pairs with and without the per-t statistics reset.

The paper re-estimates every interpolated model's BatchNorm statistics on training data (its
appendix says that reset is what makes barriers meaningful); the ablation evaluates the same
pairs with the endpoints' running statistics interpolated instead, so the report can say by how
much the reset changes the barrier. The "reset" side is the main study's own pairs (same cache
entries); the "interpolate" side has its own cache keys (``bn`` is part of the pair key).
"""

from __future__ import annotations

from typing import Any, Mapping

from stardomain.analysis.stats import compare, mean_std, paired_t

METRICS = ("test_loss", "test_acc")


def bn_ablation(groups: Mapping[str, list[dict[str, Any]]], interp: Mapping[str, list[dict[str, Any]]] | None, seed: int) -> dict[str, Any]:
    """results.json ``bn_ablation``: per group, both protocols and their per-pair difference (interpolate − reset);
    ``interp`` is None for a model without BatchNorm."""
    if interp is None:
        return {"applicable": False, "why": "the model has no BatchNorm: both protocols are the same computation"}
    out: dict[str, Any] = {
        "applicable": True,
        "metric": "test_loss",
        "protocols": {
            "reset": "statistics re-estimated on training data at every t (the paper's protocol)",
            "interpolate": "the endpoints' running statistics interpolated with the weights (no reset)",
        },
        "groups": {},
        "tests": {},
    }
    for name, reset_pairs in groups.items():
        if not reset_pairs:
            continue
        g: dict[str, Any] = {"n_pairs": len(reset_pairs)}
        for m in METRICS:
            r = [p["barriers"][m] for p in reset_pairs]
            i = [p["barriers"][m] for p in interp[name]]
            g[m] = {
                "reset": mean_std(r),
                "interpolate": mean_std(i),
                "difference": mean_std([b - a for a, b in zip(r, i)]),
                "values": {"reset": r, "interpolate": i},
            }
        out["groups"][name] = g
        v = g["test_loss"]["values"]
        out["tests"][name] = {**compare(v["interpolate"], v["reset"], seed=seed), "paired": paired_t(v["interpolate"], v["reset"])}
    return out
