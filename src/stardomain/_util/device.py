"""Device resolution shared by the CLI and the library (device is always a parameter, never a global)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stardomain.errors import StardomainError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device) -> str:
    """``auto`` picks CUDA when present; an unavailable device is a user error, not a crash.

    torch is imported here, not at module level: the CLI imports this module, and its start-up
    (``--help``, option refusals) must not pay for torch.
    """
    import torch

    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StardomainError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    return device
