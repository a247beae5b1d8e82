"""Device resolution shared by the CLI and the library (device is always a parameter, never a global)."""

from __future__ import annotations

import torch

from stardomain.errors import StardomainError


def resolve_device(device: str | torch.device) -> str:
    """``auto`` picks CUDA when present; an unavailable device is a user error, not a crash."""
    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StardomainError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    return device
