"""Experiments: one YAML file -> every study of the paper, resumable (see :mod:`.pipeline`).

Names are imported on first use, so a worker process that only unpickles a plan's units (Ray,
submitit) does not pay for torch before it needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"ExperimentConfig": "config", "load_config": "config", "Experiment": "pipeline", "run_experiment": "runner"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"stardomain.experiment.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'stardomain.experiment' has no attribute {name!r}")
