"""Weight initialisation schemes, applied by :func:`stardomain.models.create` after a builder ran.

Why a choice at all: barriers between trained models move by an order of magnitude with the
initialisation (issue 22's digits probes), so the init is part of a model's identity, recorded in
``arch["options"]["init"]`` and in every checkpoint. Schemes:

- ``paper``: what the authors' code (``aktsonthalia/starlight``) runs for this architecture
  (:data:`PAPER_SCHEMES`); for a model stardomain did not write, the builder's own init.
- ``kaiming``: Kaiming-normal convs (fan_out, ReLU) with zero bias, BatchNorm 1/0, Linear default:
  what every stardomain architecture used before ``init`` existed (torchvision's ResNet init).
- ``default``: PyTorch's layer defaults (Kaiming-uniform a=√5 weights, fan-in uniform biases).
- ``xavier``: Xavier-uniform convs with gain √2 and zero bias, BatchNorm 1/0 (the ``conv_init`` the
  authors' WideResNet file defines but never calls).

Built-in builders construct with PyTorch's defaults and never re-initialise, so every scheme is
"construct, then re-draw in module order": deterministic under ``torch.manual_seed``, and the
``kaiming`` weights are bit-identical to those of stardomain before this module had a choice.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

INIT_SCHEMES = ("paper", "kaiming", "default", "xavier")
DEFAULT_INIT = "paper"
# checkpoints written before `init` existed: every built-in architecture then used Kaiming-normal convs
LEGACY_BUILTIN_INIT = "kaiming"

# The authors' schemes, read from their model files; the one-line source is what the README quotes.
PAPER_SCHEMES: dict[str, tuple[str, str]] = {
    "mlp": ("default", "models/mlp.py: nn.Linear layers, no init code (PyTorch default)"),
    "resnet18": ("default", "models/resnet_cifar_std.py: no init code (PyTorch default)"),
    "resnet20": ("default", "the authors' CIFAR ResNet family (resnet_cifar_std.py): no init code (PyTorch default)"),
    "resnet18_imagenet": ("kaiming", "torchvision.models.resnet18: Kaiming-normal fan_out convs, BN 1/0"),
    "vgg11": ("kaiming", "models/vgg.py: conv weight ~ N(0, 2/(k*k*out_channels)), bias 0 (= Kaiming-normal fan_out)"),
    "vgg16": ("kaiming", "models/vgg.py: conv weight ~ N(0, 2/(k*k*out_channels)), bias 0 (= Kaiming-normal fan_out)"),
    "vgg19": ("kaiming", "models/vgg.py: conv weight ~ N(0, 2/(k*k*out_channels)), bias 0 (= Kaiming-normal fan_out)"),
    "densenet40_12": ("densenet", "models/densenet.py: conv ~ N(0, 2/(k*k*out_channels)), BN 1/0, Linear bias 0"),
    "wrn": ("default", "models/wide_resnet.py: conv_init (Xavier, gain √2) is defined but never applied (PyTorch default)"),
}


def _convs_and_bn(model: nn.Module, conv_init: Callable[[torch.Tensor], Any]) -> None:
    """``conv_init`` on every conv weight, conv biases 0, BatchNorm 1/0: the shape every CNN scheme here shares."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            conv_init(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _kaiming(model: nn.Module) -> None:
    _convs_and_bn(model, lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"))


def _densenet(model: nn.Module) -> None:
    _kaiming(model)
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def _xavier(model: nn.Module) -> None:
    _convs_and_bn(model, lambda w: nn.init.xavier_uniform_(w, gain=math.sqrt(2)))


def _reset(model: nn.Module) -> None:
    """PyTorch's defaults for a model whose builder may have re-initialised (models stardomain did not write)."""
    for m in model.modules():
        if m is model:
            continue
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


_SCHEMES: dict[str, Callable[[nn.Module], None]] = {"kaiming": _kaiming, "densenet": _densenet, "xavier": _xavier}


def resolve(name: str, init: str) -> str:
    """The concrete scheme ``init`` means for architecture ``name`` (``paper`` -> the authors' one)."""
    if init == "paper":
        return PAPER_SCHEMES[name][0] if name in PAPER_SCHEMES else "builder"
    return init


def effective_scheme(name: str, init: str, model: nn.Module, builtin: bool) -> str:
    """The scheme ``init`` really applies to ``model`` (built by :func:`apply_init`'s rules): two inits with the same
    effective scheme draw the same weights. ``kaiming`` and ``xavier`` re-draw only Conv2d weights (BatchNorm's 1/0 is
    PyTorch's own), so on a stardomain model without convolutions (the MLP) they are PyTorch's ``default``."""
    scheme = resolve(name, init)
    if builtin and scheme in ("kaiming", "xavier") and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return "default"
    return scheme


def apply_init(model: nn.Module, name: str, init: str, builtin: bool) -> None:
    """Re-initialise a freshly built ``model`` (architecture ``name``) with scheme ``init``.

    ``builtin``: built by a stardomain builder, which leaves PyTorch's defaults in place, so
    ``default`` draws nothing more; another builder's model is reset layer by layer instead.
    """
    scheme = resolve(name, init)
    if scheme == "builder":
        return
    if scheme == "default":
        if not builtin:
            _reset(model)
        return
    _SCHEMES[scheme](model)
