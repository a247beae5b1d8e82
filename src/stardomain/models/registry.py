"""Name -> builder registry, so configs and checkpoints refer to architectures by name.

Every builder has the signature ``builder(num_classes, in_shape, *, option=default, ...)``.
:func:`create` validates the name, the shape and the options against that signature and
stamps the result with ``model.arch`` so a checkpoint can rebuild the exact same network.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from stardomain.errors import StardomainError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one architecture."""

    name: str
    builder: Builder
    min_hw: int  # smallest spatial size (H and W) the network can process
    summary: str
    defaults: dict[str, Any]  # option name -> default value
    types: dict[str, type]  # option name -> annotated type (bool, int or float)


_REGISTRY: dict[str, ModelEntry] = {}

_TYPE_NAMES = {"bool": bool, "int": int, "float": float}


def _option_types(builder: Builder) -> tuple[dict[str, Any], dict[str, type]]:
    """Read keyword-only options (with defaults and bool/int/float hints) off a builder."""
    sig = inspect.signature(builder)
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if [p.name for p in positional] != ["num_classes", "in_shape"]:
        raise TypeError(f"builder {builder.__name__} must take (num_classes, in_shape, *, options...)")
    defaults: dict[str, Any] = {}
    types: dict[str, type] = {}
    for p in params:
        if p.kind != p.KEYWORD_ONLY:
            continue
        if p.default is p.empty:
            raise TypeError(f"option {p.name!r} of builder {builder.__name__} needs a default")
        ann = p.annotation
        ann_type = _TYPE_NAMES.get(ann, ann) if isinstance(ann, str) else ann
        if ann_type not in (bool, int, float):
            raise TypeError(f"option {p.name!r} of builder {builder.__name__} must be annotated bool, int or float")
        defaults[p.name] = p.default
        types[p.name] = ann_type
    return defaults, types


def register(name: str, *, min_hw: int = 1, summary: str = "") -> Callable[[Builder], Builder]:
    """Decorator adding ``builder`` to the registry under ``name``.

    ``min_hw`` is the smallest input height/width the architecture supports; :func:`create`
    rejects smaller inputs with a clear error instead of a shape error deep inside forward.
    """
    key = name.lower()

    def decorate(builder: Builder) -> Builder:
        if key in _REGISTRY:
            raise StardomainError(f"model name {key!r} is already registered; pick another name")
        defaults, types = _option_types(builder)
        doc = summary or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[key] = ModelEntry(key, builder, min_hw, doc, defaults, types)
        return builder

    return decorate


def available_models() -> list[str]:
    """Sorted names accepted by :func:`create`."""
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelEntry:
    """Registry entry for ``name`` (builder, minimum input size, option defaults)."""
    return _lookup(name)


def _lookup(name: str) -> ModelEntry:
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise StardomainError(f"unknown model {name!r}; valid names: {', '.join(available_models())}")
    return _REGISTRY[name.lower()]


def _check_option(entry: ModelEntry, key: str, value: Any) -> Any:
    """Type-check one option against the builder's annotation."""
    want = entry.types[key]
    accepted = ", ".join(f"{k}={v!r}" for k, v in sorted(entry.defaults.items()))
    if want is bool:
        ok = isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:  # float accepts ints too
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise StardomainError(
            f"option {key}={value!r} for model {entry.name!r} must be {want.__name__}; "
            f"accepted options (defaults): {accepted}"
        )
    return value


def _check_shape(entry: ModelEntry, in_shape: Any) -> tuple[int, int, int]:
    try:
        shape = tuple(in_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise StardomainError(f"in_shape must be three positive ints (C, H, W), got {in_shape!r}")
    c, h, w = shape
    if min(h, w) < entry.min_hw:
        raise StardomainError(
            f"model {entry.name!r} needs inputs of at least {entry.min_hw}x{entry.min_hw}, got {h}x{w}; "
            "use a larger image size or another model"
        )
    return c, h, w


def create(name: str, num_classes: int, in_shape: tuple[int, int, int], **options: Any) -> nn.Module:
    """Build a registered model and attach ``model.arch`` for checkpoint rebuilding."""
    entry = _lookup(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise StardomainError(f"num_classes must be a positive int, got {num_classes!r}")
    shape = _check_shape(entry, in_shape)
    unknown = sorted(set(options) - set(entry.defaults))
    if unknown:
        accepted = ", ".join(sorted(entry.defaults)) or "(none)"
        raise StardomainError(
            f"unknown option {unknown[0]!r} for model {entry.name!r}; accepted options: {accepted}"
        )
    resolved = dict(entry.defaults)
    for key, value in options.items():
        resolved[key] = _check_option(entry, key, value)
    model = entry.builder(num_classes, shape, **resolved)
    arch = {"name": entry.name, "num_classes": num_classes, "in_shape": list(shape), "options": resolved}
    json.dumps(arch)  # fails loudly at build time rather than at save time
    model.arch = arch
    return model


def check(condition: bool, message: str) -> None:
    """Raise a one-line :class:`StardomainError` when an option value is out of range."""
    if not condition:
        raise StardomainError(message)


def scaled(channels: int, width: float) -> int:
    """Channel count after a width multiplier (at least one channel)."""
    return max(1, int(round(channels * width)))
