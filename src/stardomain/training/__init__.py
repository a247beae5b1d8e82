"""Training: the per-epoch resumable state every trainer (one model, a batched group, Starlight) shares.

Its names load on first use, so that :mod:`stardomain.training.recipe` imports without torch (the CLI checks the
recipe values a user typed before it imports anything heavy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stardomain.training.state import TrainingState, load_training_state, remove_training_state, save_training_state

__all__ = ["TrainingState", "load_training_state", "remove_training_state", "save_training_state"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from stardomain.training import state

        return getattr(state, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
