"""The small full-study experiment config several test modules run (every study on, digits, tiny models)."""

from __future__ import annotations

TINY = {
    "name": "tiny",
    "dataset": "digits",
    "seed": 0,
    "device": "cpu",
    "model": {"name": "mlp", "options": {"depth": 1, "width": 8}},
    "train": {"epochs": 3},
    "sources": 3,
    "held_out": 2,
    "star": {"recipe": {"epochs": 2}, "mu": 0.0},
    "eval": {"points": 5, "max_pairs": 3, "bn_samples": 256},
    "studies": {
        "barriers": True,
        "distances": True,
        "n_sources": {"sizes": [2, 3]},
        "bma": {"max_samples": 4},
        "fusion": {"sizes": [2], "mu": 1.0},
        "width_depth": {"settings": [{"width": 4}], "sources": 2, "held_out": 1},
        "optimizer": {"optimizer": "adam", "sources": 2, "held_out": 1},
    },
}
