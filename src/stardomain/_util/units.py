"""One convention for the units of accuracy (issue 35), and the one place human output formats them.

- The Python API, results.json, checkpoint metadata, events.jsonl and ``--json`` / ``--log-json`` output
  give accuracies as **fractions** in [0, 1] (0.9722) and accuracy barriers as fractions too (0.05 is a
  drop of 5 percentage points).
- What a person reads (every CLI line, progress lines and bars, warnings, report.md) shows accuracies
  in **percent** (``97.22%``) and accuracy barriers and differences in **percentage points** (``5.00 pp``).

Every human-output site formats through :func:`pct` and :func:`pp` (and progress fields through
:func:`value_text`), so the two can never drift apart again.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_accuracy", "pct", "pp", "value_text"]


def pct(fraction: float | None, digits: int = 2) -> str:
    """An accuracy for a person: 0.9722 -> '97.22%' (None or NaN -> 'nan%')."""
    value = float("nan") if fraction is None else 100 * float(fraction)
    return f"{value:.{digits}f}%"


def pp(fraction: float | None, digits: int = 2) -> str:
    """An accuracy barrier (or a difference of accuracies) for a person: 0.0512 -> '5.12 pp' (None or NaN -> 'nan pp')."""
    value = float("nan") if fraction is None else 100 * float(fraction)
    return f"{value:.{digits}f} pp"


def is_accuracy(name: str) -> bool:
    """Whether a metric name is an accuracy: ``acc``, ``accuracy`` or ending in ``_acc`` (``test_acc``, ``star_test_acc``)."""
    return name in ("acc", "accuracy") or name.endswith("_acc")


def value_text(name: str, value: Any) -> str:
    """A named value of a progress or log line: accuracies in percent, other floats to 4 significant digits."""
    if isinstance(value, float) and is_accuracy(name):
        return pct(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
