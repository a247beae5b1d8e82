"""Name the difference: the first option in which two configs, architectures or state dicts differ.

"different architectures (mlp vs mlp)" leaves the user to diff two JSON files by hand; every
mismatch between checkpoints, zoos and configs instead says "width 16 vs 32". The comparison
walks nested mappings depth first, the options that identify a run most (architecture name,
dataset, classes, input shape) before the rest, so the message names the most telling one.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["MISSING", "describe_difference", "difference_phrases", "first_difference", "state_mismatch"]


class _Missing:
    def __repr__(self) -> str:
        return "(not set)"


MISSING: Any = _Missing()

# compared first (in this order), then every other key alphabetically
_PRIORITY = ("name", "kind", "role", "dataset", "data", "num_classes", "in_shape", "model", "options", "subset", "recipe", "optimizer")
# how a path reads in a message: options.width -> width, in_shape -> input shape
_LABELS = {"name": "architecture", "num_classes": "classes", "in_shape": "input shape"}


def _order(keys: Sequence[Any]) -> list[Any]:
    return sorted(keys, key=lambda k: (_PRIORITY.index(k) if k in _PRIORITY else len(_PRIORITY), str(k)))


def first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """(dotted path, value in a, value in b) of the first difference, or None when equal.

    Lists and tuples compare as wholes (an input shape is one option, not three); tuples and
    lists with equal items are equal, as they are after a JSON round trip. A key present on one
    side only gives :data:`MISSING` on the other.
    """
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in _order(list(set(a) | set(b))):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                return sub, a.get(key, MISSING), b.get(key, MISSING)
            found = first_difference(a[key], b[key], sub)
            if found is not None:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return None if list(a) == list(b) else (path, a, b)
    return None if a == b else (path, a, b)


def _label(path: str) -> str:
    parts = [p for p in path.split(".") if p not in ("arch", "options", "config")]
    if not parts:
        return path or "value"
    last = _LABELS.get(parts[-1], parts[-1])
    return ".".join(parts[:-1] + [last])


def _show(v: Any) -> str:
    if isinstance(v, list):
        v = tuple(v)
    return repr(v) if isinstance(v, str) and (v == "" or " " in v) else str(v)


def difference_phrases(a: Any, b: Any) -> tuple[str, str] | None:
    """The first difference as two phrases ('width 16', 'width 32') for messages that group models; None when equal."""
    found = first_difference(a, b)
    if found is None:
        return None
    path, va, vb = found
    label = _label(path)
    return f"{label} {_show(va)}", f"{label} {_show(vb)}"


def describe_difference(a: Any, b: Any, what: str = "") -> str | None:
    """'width 16 vs 32' (or '<what>: width 16 vs 32'), naming the first differing option; None when equal."""
    found = first_difference(a, b)
    if found is None:
        return None
    path, va, vb = found
    text = f"{_label(path)} {_show(va)} vs {_show(vb)}"
    return f"{what}: {text}" if what else text


def state_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any]) -> str | None:
    """The first problem fitting state ``got`` into a model whose state is ``expected``, or None.

    Names the first tensor (in the model's order) whose shape differs, else the first missing
    key, else the first unexpected one. Values only need a ``.shape``.
    """
    for key, ref in expected.items():
        if key in got and tuple(got[key].shape) != tuple(ref.shape):
            return f"tensor '{key}' has shape {tuple(got[key].shape)} but the architecture needs {tuple(ref.shape)}"
    missing = [k for k in expected if k not in got]
    if missing:
        return f"tensor '{missing[0]}' is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    unexpected = [k for k in got if k not in expected]
    if unexpected:
        return f"unexpected tensor '{unexpected[0]}'" + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
    return None
