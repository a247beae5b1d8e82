"""What the model registry records of one architecture, and the checks every builder uses (no registry state here:
:mod:`.hf` builds entries without importing the registry that looks them up)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from stardomain.errors import StardomainError
from stardomain.models.init import DEFAULT_INIT, INIT_SCHEMES

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one architecture."""

    name: str
    builder: Builder
    min_hw: int  # smallest spatial size (H and W) the network can process
    summary: str
    defaults: dict[str, Any]  # option name -> default value
    types: dict[str, type]  # option name -> annotated type (bool, int, float or str)
    in_dims: int | None = None  # number of input dims the builder needs (3 for (C, H, W)), None: any


_TYPE_NAMES = {"bool": bool, "int": int, "float": float, "str": str}


def option_types(builder: Builder) -> tuple[dict[str, Any], dict[str, type]]:
    """Read keyword-only options (with defaults and bool/int/float/str hints) off a builder."""
    name = getattr(builder, "__qualname__", repr(builder))
    try:
        sig = inspect.signature(builder)
    except (TypeError, ValueError):
        raise StardomainError(f"model builder {name} has no inspectable signature; write it as a Python function") from None
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if [p.name for p in positional] != ["num_classes", "in_shape"]:
        raise StardomainError(
            f"model builder {name} must take (num_classes, in_shape, *, option=default, ...); it takes "
            f"({', '.join(p.name for p in positional)})"
        )
    defaults: dict[str, Any] = {}
    types: dict[str, type] = {}
    for p in params:
        if p.kind != p.KEYWORD_ONLY:
            continue
        if p.default is p.empty:
            raise StardomainError(f"option {p.name!r} of model builder {name} needs a default value")
        ann = p.annotation
        ann_type = _TYPE_NAMES.get(ann, ann) if isinstance(ann, str) else ann
        if ann_type not in (bool, int, float, str):
            raise StardomainError(f"option {p.name!r} of model builder {name} must be annotated bool, int, float or str")
        if p.name == "init":
            raise StardomainError(
                f"model builder {name}: option name 'init' is reserved (stardomain applies the init "
                f"scheme itself: {', '.join(INIT_SCHEMES)}); rename the option"
            )
        defaults[p.name] = p.default
        types[p.name] = ann_type
    defaults["init"], types["init"] = DEFAULT_INIT, str  # every model takes the init scheme (models.init)
    return defaults, types


def check(condition: bool, message: str) -> None:
    """Raise a one-line :class:`StardomainError` when an option value is out of range."""
    if not condition:
        raise StardomainError(message)
