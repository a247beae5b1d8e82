"""Starlight (Algorithm 1): the star's settings (:mod:`.config`), the algorithm (:mod:`.algorithm`) and the one star
writer (:mod:`.writer`).

Names load on first use, so that :mod:`stardomain.starlight.config` imports without torch (the CLI builds the
``star`` options from its settings and refuses bad values before it imports anything heavy).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stardomain.starlight.algorithm import Starlight, StarlightResult, TSampler
    from stardomain.starlight.config import STATE_KIND, T_SAMPLING, StarlightConfig, check_not_source_init, repeat_seed, star_seed
    from stardomain.starlight.writer import STAR_META_KEYS, StarCheckpoint, star_identity, train_star

_EXPORTS = {
    "STAR_META_KEYS": "writer",
    "STATE_KIND": "config",
    "T_SAMPLING": "config",
    "StarCheckpoint": "writer",
    "Starlight": "algorithm",
    "StarlightConfig": "config",
    "StarlightResult": "algorithm",
    "TSampler": "algorithm",
    "check_not_source_init": "config",
    "repeat_seed": "config",
    "star_identity": "writer",
    "star_seed": "config",
    "train_star": "writer",
}

__all__ = [
    "STAR_META_KEYS",
    "STATE_KIND",
    "T_SAMPLING",
    "StarCheckpoint",
    "Starlight",
    "StarlightConfig",
    "StarlightResult",
    "TSampler",
    "check_not_source_init",
    "repeat_seed",
    "star_identity",
    "star_seed",
    "train_star",
]
_SUBMODULES = ("algorithm", "config", "writer")  # `stardomain.starlight.writer` etc. as attributes, imported on first use


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"stardomain.starlight.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:  # importing a submodule binds it on this package too: later reads skip this hook
        return importlib.import_module(f"stardomain.starlight.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
