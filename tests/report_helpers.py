"""Hand-made results.json sections the report and file tests share."""

from __future__ import annotations

from typing import Any


def tied_fusion_results() -> dict[str, Any]:
    """The demo's fusion case: two regular models at the same accuracy (a zero-width interval, no verdict), the
    ensemble and the fused star above them."""
    from stardomain.analysis import stats

    accs = [347 / 360, 347 / 360]
    row = {
        "n_sources": 2,
        "regular_accs": accs,
        "regular_acc_mean": accs[0],
        "regular_acc_std": 0.0,
        "best_regular_acc": accs[0],
        "ensemble_acc": 348 / 360,
        "star_acc": 350 / 360,
    }
    return {
        "dataset": {"name": "digits"},
        "config": {"model": {"name": "mlp"}},
        "models": {},
        "fusion": {"mu": 1.0, "rows": [row]},
        "tests": {"fusion": [{"n_sources": 2, **stats.against_population(accs, 350 / 360)}]},
    }
