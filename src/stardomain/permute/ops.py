"""What the spec tracer knows about torch ops: which keep channel order, reshape or reduce.

Pure lookup tables and predicates, kept apart from the graph walk in
:mod:`stardomain.permute.tracer` so adding support for a new op is a one-line change here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

POINTWISE_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink,
    nn.LogSigmoid, nn.Threshold, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Softmax, nn.LogSoftmax, nn.Softmax2d,
    nn.Hardshrink, nn.Softshrink,
)  # fmt: skip
POOL_MODULES: tuple[type, ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample,
)  # fmt: skip

# Channel-wise functions (elementwise or acting per channel), matched by name for
# call_function targets from torch / torch.nn.functional / torch._C._nn and for call_method.
POINTWISE_NAMES = {
    "relu", "relu_", "relu6", "elu", "elu_", "selu", "celu", "gelu", "silu", "mish", "leaky_relu",
    "leaky_relu_", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "softplus", "softsign", "sigmoid",
    "sigmoid_", "tanh", "tanh_", "logsigmoid", "tanhshrink", "threshold", "dropout", "dropout1d",
    "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "clamp", "clamp_", "clip",
    "clamp_min", "clamp_max", "abs", "neg", "exp", "square", "softmax", "log_softmax", "contiguous",
    "clone", "detach", "float", "double", "half", "bfloat16", "to", "type", "type_as", "cpu", "cuda",
    "requires_grad_", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "lp_pool1d", "lp_pool2d", "interpolate", "upsample",
    "hardshrink", "softshrink", "erf", "pow", "sqrt", "rsqrt", "reciprocal", "log", "log1p", "expm1",
}  # fmt: skip
BINARY_NAMES = {"add", "add_", "iadd", "sub", "sub_", "isub", "mul", "mul_", "imul", "div", "div_",
                 "truediv", "itruediv", "__add__", "__radd__", "__mul__", "__rmul__", "__sub__",
                 "__truediv__", "maximum", "minimum"}  # fmt: skip
RESHAPE_NAMES = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "squeeze_", "unsqueeze_"}
REDUCE_NAMES = {"mean", "sum", "amax", "amin", "nansum", "nanmean"}
CAT_NAMES = {"cat", "concat", "concatenate"}
NONTENSOR_METHODS = {"size", "dim", "numel", "ndimension"}


def same_channels(a: tuple[int, ...] | None, b: tuple[int, ...] | None, cdim: int = 1) -> bool:
    """Elementwise op on shapes a and b keeps unit u (on axis ``cdim``) of both aligned (broadcast elsewhere is fine)."""
    if a is None or b is None or len(a) != len(b) or len(a) <= cdim or a[cdim] != b[cdim]:
        return False
    return all(x == y or x == 1 or y == 1 for i, (x, y) in enumerate(zip(a, b)) if i != cdim)


# ATen ops (``torch.export`` graphs) whose name differs from the torch function that the rules know
ATEN_ALIASES = {
    "_unsafe_view": "view", "_reshape_alias": "view", "_softmax": "softmax", "_log_softmax": "log_softmax",
    "_to_copy": "to", "lift_fresh_copy": "clone", "alias": "clone", "dropout_": "dropout",
    "expand_copy": "expand", "view_copy": "view", "transpose_copy": "transpose", "permute_copy": "permute",
}  # fmt: skip


def fn_name(target: Any) -> str | None:
    """Name of a call_function target if it comes from torch or operator, else None.

    An ATen op of a ``torch.export`` graph (``aten.view.default``) answers its packet name (``view``), with the
    private variants mapped to the public name (``ATEN_ALIASES``)."""
    if isinstance(target, torch._ops.OpOverload):
        name = target.overloadpacket.__name__
        return ATEN_ALIASES.get(name, name)
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None)
    if name is None:
        return None
    if mod in ("_operator", "operator"):
        return name
    if mod == "torch" or mod.startswith("torch.nn.functional") or mod.startswith("torch._C"):
        return name
    if target in (torch.cat, torch.relu, torch.flatten):  # builtins sometimes lack __module__
        return name
    return None
