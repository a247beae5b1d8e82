"""Strict JSON: what every JSON file (and JSON line) stardomain writes goes through.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which JavaScript's ``JSON.parse`` and most other
languages' parsers reject. stardomain writes with ``allow_nan=False`` after one documented conversion:

**null stands for a number that is not one**: undefined (NaN: the mean of no values, the spread or the
interval of fewer than two, the AUROC of predictions that are all right) or infinite (a diverged loss). The
record around it says why (its ``n``, ``n_items``, ``no_verdict``, ...); readers treat null there as "no number"
(:func:`stardomain.analysis.stats.clean` drops it, the report prints "–"). Files written before this convention
hold bare ``NaN``; Python's reader (``json.loads``) still accepts them.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "finite"]


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (anywhere in dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always writes strict JSON: non-finite numbers become null (:func:`finite`), and
    ``allow_nan=False`` makes anything that slipped past a loud error instead of an unreadable file."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
