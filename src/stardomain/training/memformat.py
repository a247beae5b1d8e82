"""When a model may run in channels_last memory format (NHWC), and running it so.

channels_last makes convolutions markedly faster (tensor cores on CUDA, oneDNN on CPU), but it
silently changes the strides every later op sees: a model that flattens with ``x.view(N, -1)``
fails, and one that reinterprets memory (``as_strided``, ``data_ptr`` tricks) could compute
something else. So the choice is made by trial, once per model: one eval-mode forward of a copy on
two example inputs in each format, kept only when both succeed and agree. Training and the
evaluation engine both ask here, so the rule is one rule.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import Tensor, nn

__all__ = ["channels_last_safe", "has_conv2d", "module_to_format", "to_channels_last"]

M = TypeVar("M", bound=nn.Module)


def module_to_format(module: M, memory_format: torch.memory_format) -> M:
    """``module.to(memory_format=...)``: converts its 4-d parameters and buffers in place, returns ``module``."""
    # torch's overloads of Module.to leave out memory_format, which Module.to accepts at runtime
    return module.to(memory_format=memory_format)  # type: ignore[call-overload]


def has_conv2d(model: nn.Module) -> bool:
    """Whether the model has a 2-d convolution (the only layers channels_last speeds up)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


@torch.no_grad()
def channels_last_safe(model: nn.Module, example: Tensor, rtol: float = 1e-3, atol: float = 1e-4) -> bool:
    """True when ``model`` has a Conv2d and gives the same outputs on channels_last inputs and weights.

    ``example`` is a batch shaped like the model's input (the first two samples are used, on the
    model's device). The model itself is not touched: a deep copy runs in eval mode, so BatchNorm
    statistics are not updated. Tolerances cover the different summation order of NHWC kernels.
    """
    if example.dim() != 4 or not has_conv2d(model):
        return False
    probe = copy.deepcopy(model).eval()
    device = next((p.device for p in probe.parameters()), example.device)
    x = example[:2].to(device)
    try:
        reference = probe(x.contiguous())
        probe = module_to_format(probe, torch.channels_last)
        candidate = probe(x.contiguous(memory_format=torch.channels_last))
    except RuntimeError:  # e.g. x.view(N, -1) on NHWC strides
        return False
    if not (torch.is_tensor(reference) and torch.is_tensor(candidate)) or reference.shape != candidate.shape:
        return False
    return bool(torch.allclose(reference.float(), candidate.float(), rtol=rtol, atol=atol))


def to_channels_last(model: nn.Module, example: Tensor) -> bool:
    """Convert ``model`` in place to channels_last when :func:`channels_last_safe`; return whether it was."""
    if not channels_last_safe(model, example):
        return False
    module_to_format(model, torch.channels_last)
    return True
