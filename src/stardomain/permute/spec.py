"""Permutation specs: which tensor axes each hidden-unit group permutes, traced with torch.fx.

A network is invariant under reordering the hidden units of a layer as long as every
tensor axis that indexes those units is reordered the same way. A
:class:`PermutationSpec` lists, per *group* of units, those axes. Groups are merged
(union-find) where the architecture ties orders together (residual ``+``), split into
slices where ``torch.cat`` builds one axis out of several groups (DenseNet), and dropped
("fixed") where units touch the input or the logits, whose order is meaningful.

:func:`trace_spec` derives a spec automatically by propagating a *channel layout* (the
list of groups along dim 1) through the ``torch.fx`` graph. Anything it does not
understand raises :class:`~stardomain.errors.StardomainError` rather than risk a spec that
silently changes the network's function; it then double-checks its answer numerically.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from stardomain.errors import StardomainError

__all__ = ["Axis", "PermutationSpec", "trace_spec"]


class Axis(NamedTuple):
    """One permuted slice of one tensor axis.

    Unit ``u`` of the group occupies indices ``start + u*block ... start + (u+1)*block - 1``
    of axis ``axis`` of ``state[key]``; the group has ``length`` units. ``block > 1`` arises
    when a (N, C, H, W) map is flattened channel-major before a Linear layer.
    """

    key: str
    axis: int
    start: int = 0
    length: int | None = None  # None: the group size (filled in by PermutationSpec)
    block: int = 1

    @property
    def span(self) -> int:
        """Number of axis indices covered."""
        return int(self.length or 0) * self.block


def _as_axis(entry: Any, size: int, group: str) -> Axis:
    if isinstance(entry, Axis):
        ax = entry
    elif isinstance(entry, (tuple, list)) and 2 <= len(entry) <= 5:
        ax = Axis(*entry)
    else:
        raise StardomainError(
            f"permutation spec entry {entry!r} of group {group!r} must be (key, axis[, start, length, block])"
        )
    length = size if ax.length is None else int(ax.length)
    if length != size:
        raise StardomainError(
            f"spec entry {ax.key!r} axis {ax.axis} of group {group!r} has length {length} but the group has "
            f"{size} units; give length equal to the group size"
        )
    if ax.block < 1 or ax.start < 0:
        raise StardomainError(f"spec entry {tuple(ax)!r} of group {group!r}: start must be >= 0 and block >= 1")
    return Axis(str(ax.key), int(ax.axis), int(ax.start), length, int(ax.block))


@dataclass
class PermutationSpec:
    """Hidden-unit groups and the tensor axes each one permutes.

    ``groups`` maps a group name to its number of units; ``axes`` maps it to the
    :class:`Axis` entries (plain ``(key, axis)`` tuples are accepted and mean the whole
    axis). ``buffers`` names state keys that are buffers (BN running stats): they are
    permuted by :func:`~stardomain.permute.apply_permutation` but left out of the
    weight-matching objective. ``params`` (parameter key -> numel) and ``fixed`` (layer ->
    reason its units cannot be permuted) are filled by :func:`trace_spec` for reporting.
    """

    groups: dict[str, int]
    axes: dict[str, list[Axis]]
    buffers: frozenset[str] = frozenset()
    params: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.groups = {str(g): int(n) for g, n in dict(self.groups).items()}
        unknown = sorted(set(self.axes) - set(self.groups))
        if unknown:
            raise StardomainError(f"spec axes name group {unknown[0]!r} that is missing from groups")
        for g, n in self.groups.items():
            if n < 1:
                raise StardomainError(f"group {g!r} has size {n}; groups need at least one unit")
        self.axes = {g: [_as_axis(e, self.groups[g], g) for e in self.axes.get(g, [])] for g in self.groups}
        self.buffers = frozenset(self.buffers)
        seen: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
        for g, entries in self.axes.items():
            for ax in entries:
                seen.setdefault((ax.key, ax.axis), []).append((ax.start, ax.start + ax.span, g))
        for (key, axis), spans in seen.items():
            spans.sort()
            for (s0, e0, g0), (s1, _, g1) in zip(spans, spans[1:]):
                if s1 < e0:
                    raise StardomainError(
                        f"spec groups {g0!r} and {g1!r} overlap on {key!r} axis {axis}; each index may belong "
                        "to one group only"
                    )

    # ------------------------------------------------------------------ queries
    def keys(self) -> list[str]:
        """State keys with at least one permuted axis, in first-mention order."""
        out: dict[str, None] = {}
        for entries in self.axes.values():
            for ax in entries:
                out.setdefault(ax.key, None)
        return list(out)

    def by_key(self) -> dict[str, list[tuple[str, Axis]]]:
        """key -> [(group, Axis), ...]: what :func:`apply_permutation` needs per tensor."""
        out: dict[str, list[tuple[str, Axis]]] = {}
        for g, entries in self.axes.items():
            for ax in entries:
                out.setdefault(ax.key, []).append((g, ax))
        return out

    def validate(self, state: Mapping[str, Tensor], what: str = "state", require_buffers: bool = True) -> None:
        """Check every entry against tensor shapes, so a mismatched checkpoint fails clearly.

        With ``require_buffers=False`` a state without the spec's buffers (a parameters-only
        dict) is accepted; a missing parameter is always an error.
        """
        for g, entries in self.axes.items():
            for ax in entries:
                if ax.key not in state and not require_buffers and ax.key in self.buffers:
                    continue
                if ax.key not in state:
                    raise StardomainError(
                        f"{what} has no tensor {ax.key!r} (needed by permutation group {g!r}); "
                        "was the spec traced from the same architecture?"
                    )
                t = state[ax.key]
                if not -t.dim() <= ax.axis < t.dim():
                    raise StardomainError(f"{what}[{ax.key!r}] has {t.dim()} dims; group {g!r} permutes axis {ax.axis}")
                size = t.shape[ax.axis]
                if ax.start + ax.span > size:
                    raise StardomainError(
                        f"{what}[{ax.key!r}] axis {ax.axis} has size {size} but group {g!r} covers indices "
                        f"{ax.start}..{ax.start + ax.span - 1}; the checkpoint does not match the spec"
                    )

    def summary(self, state: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        """Counts for reports: groups and sizes, parameters covered, fixed layers.

        Coverage counts *parameters* (not buffers) with at least one permuted axis. It uses
        the parameter list recorded by :func:`trace_spec`; for a hand-written spec pass a
        ``state`` (every non-buffer floating tensor then counts as a parameter).
        """
        if self.params:
            params = dict(self.params)
        elif state is not None:
            params = {k: v.numel() for k, v in state.items() if v.is_floating_point() and k not in self.buffers}
        else:
            params = {}
        covered_keys = set(self.keys()) & set(params)
        covered = sum(params[k] for k in covered_keys)
        total = sum(params.values())
        return {
            "n_groups": len(self.groups),
            "group_sizes": dict(self.groups),
            "n_units": sum(self.groups.values()),
            "n_tensors": len(self.keys()),
            "covered_params": covered,
            "total_params": total,
            "covered_share": covered / total if total else float("nan"),
            "fixed_layers": dict(self.fixed),
        }


# =====================================================================================
# tracing
# =====================================================================================


class _Seg(NamedTuple):
    node: int  # union-find id
    size: int  # units
    block: int  # indices per unit along the axis


Layout = tuple[_Seg, ...]


class _UnionFind:
    """Groups-in-the-making; a root that is fixed can never be permuted."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.name: list[str] = []
        self.fixed: list[str | None] = []
        self.size: list[int] = []

    def new(self, name: str, size: int, fixed: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.name.append(name)
        self.fixed.append(fixed)
        self.size.append(size)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri == rj:
            return
        lo, hi = min(ri, rj), max(ri, rj)  # the older node stays root: stable names
        self.parent[hi] = lo
        if self.fixed[lo] is None:
            self.fixed[lo] = self.fixed[hi]

    def fix(self, i: int, reason: str) -> None:
        r = self.find(i)
        if self.fixed[r] is None:
            self.fixed[r] = reason

    def is_fixed(self, i: int) -> bool:
        return self.fixed[self.find(i)] is not None


_POINTWISE_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink,
    nn.LogSigmoid, nn.Threshold, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Softmax, nn.LogSoftmax, nn.Softmax2d,
    nn.Hardshrink, nn.Softshrink,
)  # fmt: skip
_POOL_MODULES: tuple[type, ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample,
)  # fmt: skip

# Channel-wise functions (elementwise or acting per channel), matched by name for
# call_function targets from torch / torch.nn.functional / torch._C._nn and for call_method.
_POINTWISE_NAMES = {
    "relu", "relu_", "relu6", "elu", "elu_", "selu", "celu", "gelu", "silu", "mish", "leaky_relu",
    "leaky_relu_", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "softplus", "softsign", "sigmoid",
    "sigmoid_", "tanh", "tanh_", "logsigmoid", "tanhshrink", "threshold", "dropout", "dropout1d",
    "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "clamp", "clamp_", "clip",
    "clamp_min", "clamp_max", "abs", "neg", "exp", "square", "softmax", "log_softmax", "contiguous",
    "clone", "detach", "float", "double", "half", "bfloat16", "to", "type", "type_as", "cpu", "cuda",
    "requires_grad_", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "lp_pool1d", "lp_pool2d", "interpolate", "upsample",
    "hardshrink", "softshrink",
}  # fmt: skip
_BINARY_NAMES = {"add", "add_", "iadd", "sub", "sub_", "isub", "mul", "mul_", "imul", "div", "div_",
                 "truediv", "itruediv", "__add__", "__radd__", "__mul__", "__rmul__", "__sub__",
                 "__truediv__", "maximum", "minimum"}  # fmt: skip
_RESHAPE_NAMES = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "squeeze_", "unsqueeze_"}
_REDUCE_NAMES = {"mean", "sum", "amax", "amin", "nansum", "nanmean"}
_CAT_NAMES = {"cat", "concat", "concatenate"}
_NONTENSOR_METHODS = {"size", "dim", "numel", "ndimension"}


def _same_channels(a: tuple[int, ...] | None, b: tuple[int, ...] | None) -> bool:
    """Elementwise op on shapes a and b keeps channel c of both aligned (broadcast elsewhere is fine)."""
    if a is None or b is None or len(a) != len(b) or len(a) < 2 or a[1] != b[1]:
        return False
    return all(x == y or x == 1 or y == 1 for i, (x, y) in enumerate(zip(a, b)) if i != 1)


def _fn_name(target: Any) -> str | None:
    """Name of a call_function target if it comes from torch or operator, else None."""
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


class _Tracer:
    """Propagates channel layouts through an fx graph and records spec entries."""

    def __init__(self, model: nn.Module, strict: bool) -> None:
        self.model = model
        self.strict = strict
        self.uf = _UnionFind()
        self.entries: list[tuple[int, Axis]] = []  # (node, axis with length=None)
        self.layout: dict[str, Layout | None] = {}
        self.shape: dict[str, tuple[int, ...] | None] = {}
        self.module_in: dict[str, Layout] = {}
        self.module_out: dict[str, Layout] = {}
        self.producers: dict[int, str] = {}  # node id -> module that creates it
        self.notes: dict[str, str] = {}
        self.state_keys = set(model.state_dict().keys())

    # ------------------------------------------------------------------ helpers
    def fixed_layout(self, shape: tuple[int, ...] | None, reason: str, name: str) -> Layout:
        c = shape[1] if shape is not None and len(shape) >= 2 else 1
        return (_Seg(self.uf.new(name, c, fixed=reason), c, 1),)

    def fix_layout(self, layout: Layout | None, reason: str) -> None:
        for s in layout or ():
            self.uf.fix(s.node, reason)

    def is_fixed(self, layout: Layout) -> bool:
        return all(self.uf.is_fixed(s.node) for s in layout)

    def union(self, a: Layout, b: Layout, where: str) -> Layout:
        """Tie two layouts of one tensor shape together (residual add, shared module)."""
        if [(s.size, s.block) for s in a] == [(s.size, s.block) for s in b]:
            for sa, sb in zip(a, b):
                self.uf.union(sa.node, sb.node)
            return a
        # segment boundaries disagree: the only safe answer is not to permute any of them
        reason = f"{where}: combines tensors whose channel groups are split differently"
        self.fix_layout(a, reason)
        self.fix_layout(b, reason)
        self.notes[where] = reason
        return a

    def add_entries(self, key: str, axis: int, layout: Layout, module: str) -> None:
        if key not in self.state_keys:
            raise StardomainError(
                f"layer {module!r}: tensor {key!r} is not in the model's state_dict (shared or re-registered "
                "module?); pass a hand-written PermutationSpec"
            )
        start = 0
        for seg in layout:
            self.entries.append((seg.node, Axis(key, axis, start, None, seg.block)))
            start += seg.size * seg.block

    def unsupported(self, node: Any, why: str, inputs: Sequence[Layout]) -> Layout | None:
        """Strict: raise. Lenient: freeze the units flowing in, so nothing wrong can happen.

        An op fed only by fixed tensors (say, on the raw input) cannot go wrong either way:
        its output is simply fixed.
        """
        if all(self.is_fixed(lay) for lay in inputs):
            return self.fixed_layout(self.shape.get(node.name), f"computed by {node.name!r} from fixed tensors", node.name)
        if self.strict:
            raise StardomainError(
                f"cannot derive a permutation spec: node {node.name!r} ({why}). Pass a hand-written "
                "PermutationSpec, or trace_spec(..., strict=False) to keep those units unpermuted"
            )
        reason = f"feeds unsupported {why} at node {node.name!r}"
        for lay in inputs:
            self.fix_layout(lay, reason)
        self.notes[node.name] = reason
        return self.fixed_layout(self.shape.get(node.name), reason, node.name)

    @staticmethod
    def total(layout: Layout) -> int:
        return sum(s.size * s.block for s in layout)

    def check_width(self, layout: Layout, expected: int, module: str, what: str) -> None:
        if self.total(layout) != expected:
            raise StardomainError(
                f"layer {module!r} expects {expected} {what} but the traced layout has {self.total(layout)}; "
                "the model's forward could not be followed, pass a hand-written PermutationSpec"
            )

    # ------------------------------------------------------------------ node kinds
    def tensor_inputs(self, node: Any) -> list[tuple[Any, Layout]]:
        out: list[tuple[Any, Layout]] = []
        seen: set[str] = set()

        def visit(a: Any) -> Any:
            if hasattr(a, "op") and a.name not in seen and self.layout.get(a.name) is not None:
                seen.add(a.name)
                out.append((a, self.layout[a.name]))
            return a

        torch.fx.node.map_arg((node.args, node.kwargs), visit)
        return out

    def run(self, gm: torch.fx.GraphModule) -> None:
        for node in gm.graph.nodes:
            self.layout[node.name] = self.visit(node)

    def visit(self, node: Any) -> Layout | None:
        shape = self.shape.get(node.name)
        if node.op == "placeholder":
            return self.fixed_layout(shape, "model input", node.name) if shape is not None else None
        if node.op == "get_attr":
            # a tensor used directly in forward is never permuted; whatever mixes with it stays fixed
            return self.fixed_layout(shape, f"mixes with attribute {node.target!r}", node.name) if shape else None
        if node.op == "output":
            for _, lay in self.tensor_inputs(node):
                self.fix_layout(lay, "feeds the model output")
            return None
        inputs = self.tensor_inputs(node)
        if shape is None:
            # non-tensor result (x.size(0), shape arithmetic) or a tuple of tensors
            if node.op == "call_method" and node.target in _NONTENSOR_METHODS:
                return None
            if node.op == "call_function" and (node.target is getattr or (node.target is operator.getitem and not inputs)):
                return None
            if not inputs or all(self.is_fixed(lay) for _, lay in inputs):
                return None
            return self.unsupported(node, f"{self.describe(node)} returns a non-tensor or tuple", [l for _, l in inputs])
        if not inputs:
            return self.fixed_layout(shape, "constant tensor", node.name)
        if node.op == "call_module":
            return self.visit_module(node, inputs, shape)
        name = _fn_name(node.target) if node.op == "call_function" else str(node.target)
        return self.visit_function(node, name, inputs, shape)

    def describe(self, node: Any) -> str:
        if node.op == "call_module":
            return f"layer {node.target!r} ({type(self.model.get_submodule(node.target)).__name__})"
        if node.op == "call_method":
            return f"method .{node.target}()"
        return f"function {getattr(node.target, '__name__', node.target)}"

    def visit_module(self, node: Any, inputs: list[tuple[Any, Layout]], shape: tuple[int, ...]) -> Layout:
        target = str(node.target)
        mod = self.model.get_submodule(target)
        lay = inputs[0][1]
        in_shape = self.shape.get(inputs[0][0].name)
        if len(inputs) != 1:
            return self.unsupported(node, f"layer {target!r} with several tensor inputs", [l for _, l in inputs])

        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            is_conv = not isinstance(mod, nn.Linear)
            if is_conv and mod.groups != 1:
                return self.unsupported(
                    node, f"layer {target!r} is a grouped/depthwise Conv (groups={mod.groups})", [lay]
                )
            if not is_conv and (in_shape is None or len(in_shape) != 2):
                return self.unsupported(node, f"layer {target!r} is a Linear applied to a {len(in_shape or ())}-d input", [lay])
            if is_conv and any(s.block != 1 for s in lay):
                return self.unsupported(node, f"layer {target!r} receives a flattened/reshaped feature map", [lay])
            fan_in = mod.in_channels if is_conv else mod.in_features
            self.check_width(lay, fan_in, target, "input channels" if is_conv else "input features")
            if target in self.module_out:  # module called twice: same units, tie the inputs
                self.union(self.module_in[target], lay, target)
                return self.module_out[target]
            self.add_entries(f"{target}.weight", 1, lay, target)
            n_out = mod.out_channels if is_conv else mod.out_features
            nid = self.uf.new(target, n_out)
            self.producers[nid] = target
            out: Layout = (_Seg(nid, n_out, 1),)
            self.add_entries(f"{target}.weight", 0, out, target)
            if mod.bias is not None:
                self.add_entries(f"{target}.bias", 0, out, target)
            self.module_in[target], self.module_out[target] = lay, out
            return out

        if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            self.check_width(lay, mod.num_features, target, "features")
            return self.per_channel(target, mod, lay, ("weight", "bias", "running_mean", "running_var"))

        if isinstance(mod, nn.GroupNorm):
            if mod.num_groups not in (1, mod.num_channels):
                return self.unsupported(
                    node, f"layer {target!r} is a GroupNorm with {mod.num_groups} groups (statistics mix a fixed "
                    "subset of channels)", [lay],
                )
            self.check_width(lay, mod.num_channels, target, "channels")
            return self.per_channel(target, mod, lay, ("weight", "bias"))

        if isinstance(mod, nn.LayerNorm):
            if in_shape is None or len(in_shape) != 2 or tuple(mod.normalized_shape) != (in_shape[1],):
                return self.unsupported(
                    node, f"layer {target!r} is a LayerNorm over more than the channel axis of a 2-d input", [lay]
                )
            return self.per_channel(target, mod, lay, ("weight", "bias"))

        if isinstance(mod, nn.PReLU):
            if mod.num_parameters == 1:
                return lay
            self.check_width(lay, mod.num_parameters, target, "channels")
            return self.per_channel(target, mod, lay, ("weight",))

        if isinstance(mod, _POINTWISE_MODULES):
            return lay
        if isinstance(mod, _POOL_MODULES):
            if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) and mod.return_indices:
                return self.unsupported(node, f"layer {target!r} returns pooling indices", [lay])
            return self.pass_shape(node, lay, in_shape, shape)
        if isinstance(mod, nn.Flatten):
            return self.reshape(node, lay, in_shape, shape)
        return self.unsupported(node, f"layer {target!r} of unsupported type {type(mod).__name__}", [lay])

    def per_channel(self, target: str, mod: nn.Module, lay: Layout, names: Iterable[str]) -> Layout:
        """Per-channel parameters/buffers (norm layers, PReLU) follow the incoming layout."""
        if target in self.module_in:
            return self.union(self.module_in[target], lay, target)
        for n in names:
            t = getattr(mod, n, None)
            if isinstance(t, Tensor):
                self.add_entries(f"{target}.{n}", 0, lay, target)
        self.module_in[target] = lay
        return lay

    def pass_shape(self, node: Any, lay: Layout, in_shape: Any, shape: tuple[int, ...]) -> Layout:
        if in_shape is not None and len(shape) >= 2 and len(in_shape) >= 2 and shape[1] == in_shape[1]:
            return lay
        return self.unsupported(node, f"{self.describe(node)} changes the channel axis", [lay])

    def reshape(self, node: Any, lay: Layout, in_shape: Any, out: tuple[int, ...]) -> Layout:
        """view/reshape/flatten/squeeze: keep channels on dim 1, or expand them into blocks."""
        if in_shape is None or len(in_shape) < 2 or len(out) < 2 or out[0] != in_shape[0]:
            return self.unsupported(node, f"{self.describe(node)} moves the channel axis", [lay])
        rest_in = math.prod(in_shape[2:])
        if out[1] == in_shape[1] and math.prod(out[2:]) == rest_in:
            return lay
        if len(out) == 2 and out[1] == in_shape[1] * rest_in:
            # channel-major flatten: every unit becomes a block of rest_in consecutive features
            return tuple(_Seg(s.node, s.size, s.block * rest_in) for s in lay)
        return self.unsupported(node, f"{self.describe(node)} reshapes {tuple(in_shape)} -> {tuple(out)}", [lay])

    def visit_function(
        self, node: Any, name: str | None, inputs: list[tuple[Any, Layout]], shape: tuple[int, ...]
    ) -> Layout | None:
        layouts = [lay for _, lay in inputs]
        first_node, lay = inputs[0]
        in_shape = self.shape.get(first_node.name)
        if name is None:
            return self.unknown(node, layouts, shape)

        if name in _CAT_NAMES:
            tensors = node.args[0] if node.args else node.kwargs.get("tensors")
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
                return self.unknown(node, layouts, shape)
            parts = [self.layout.get(t.name) if hasattr(t, "op") else None for t in tensors]
            if any(p is None for p in parts):
                return self.unknown(node, layouts, shape)
            ndim = len(shape)
            dim = dim % ndim if ndim else 0
            if dim == 1:  # channel concat: the new axis is a list of segments
                return tuple(s for p in parts for s in p)  # type: ignore[union-attr]
            out = parts[0]
            for p in parts[1:]:
                out = self.union(out, p, node.name)  # type: ignore[arg-type]
            return out

        if name in _BINARY_NAMES:
            return self.binary(node, inputs, shape)

        if name in _POINTWISE_NAMES:
            if len(layouts) > 1:
                # e.g. clamp(x, min=tensor): only allowed when the other tensors are scalars
                return self.binary(node, inputs, shape)
            return self.pass_shape(node, lay, in_shape, shape)

        if name in _RESHAPE_NAMES and len(inputs) == 1:
            return self.reshape(node, lay, in_shape, shape)

        if name in _REDUCE_NAMES and len(inputs) == 1:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dims is None:  # full reduction is permutation invariant
                return self.fixed_layout(shape, "permutation-invariant reduction", node.name)
            dims = [dims] if isinstance(dims, int) else list(dims)
            nd = len(in_shape or ())
            if not all(isinstance(d, int) for d in dims) or not nd:
                return self.unknown(node, layouts, shape)
            dims = [d % nd for d in dims]
            if 0 in dims:
                return self.unsupported(node, f"{self.describe(node)} reduces over the batch axis", layouts)
            if 1 in dims:  # sums over units are invariant: a fresh, fixed tensor
                return self.fixed_layout(shape, "permutation-invariant reduction", node.name)
            return self.pass_shape(node, lay, in_shape, shape)

        return self.unknown(node, layouts, shape)

    def binary(self, node: Any, inputs: list[tuple[Any, Layout]], shape: tuple[int, ...]) -> Layout:
        """Elementwise op of several tensors: same-shape activations are tied together."""
        active: list[tuple[Any, Layout]] = []
        for n, lay in inputs:
            s = self.shape.get(n.name)
            if s is not None and math.prod(s) == 1:
                continue  # a scalar tensor broadcasts to every unit alike
            active.append((n, lay))
        if not active:
            return self.fixed_layout(shape, "scalar", node.name)
        out = active[0][1]
        first = self.shape.get(active[0][0].name)
        for n, lay in active[1:]:
            if not _same_channels(first, self.shape.get(n.name)):
                if self.is_fixed(lay) and self.is_fixed(out):
                    continue
                return self.unsupported(node, f"{self.describe(node)} broadcasts tensors across the channel axis",
                                        [l for _, l in active])
            out = self.union(out, lay, node.name)
        if len(shape) < 2 or shape[1] != self.total(out):
            return self.unsupported(node, f"{self.describe(node)} changes the channel axis", [l for _, l in active])
        return out

    def unknown(self, node: Any, layouts: list[Layout], shape: tuple[int, ...]) -> Layout | None:
        if all(self.is_fixed(lay) for lay in layouts):  # nothing permutable flows in
            return self.fixed_layout(shape, "computed from fixed tensors only", node.name)
        return self.unsupported(node, f"{self.describe(node)} is not supported", layouts)

    # ------------------------------------------------------------------ result
    def spec(self) -> PermutationSpec:
        uf = self.uf
        roots: dict[int, list[int]] = {}
        for nid in self.producers:
            roots.setdefault(uf.find(nid), []).append(nid)
        groups: dict[str, int] = {}
        axes: dict[str, list[Axis]] = {}
        root_name: dict[int, str] = {}
        fixed: dict[str, str] = {}
        for r in sorted(roots):
            members = sorted(roots[r])
            if uf.fixed[r] is not None:
                for m in members:
                    fixed[self.producers[m]] = uf.fixed[r]  # type: ignore[assignment]
                continue
            base = self.producers[members[0]]
            name = f"{base}/stream" if len(members) > 1 else base
            root_name[r] = name
            groups[name] = uf.size[r]
            axes[name] = []
        for nid, ax in self.entries:
            r = uf.find(nid)
            if r in root_name:
                axes[root_name[r]].append(ax)
        for where, reason in self.notes.items():
            fixed.setdefault(where, reason)
        params = {k: p.numel() for k, p in self.model.named_parameters()}
        buffers = frozenset(k for k, _ in self.model.named_buffers())
        return PermutationSpec(groups=groups, axes=axes, buffers=buffers, params=params, fixed=fixed)


def _example_input(model: nn.Module, example_input: Any) -> tuple[Any, ...]:
    if example_input is not None:
        return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    arch = getattr(model, "arch", None)
    if isinstance(arch, dict) and "in_shape" in arch:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
        gen = torch.Generator().manual_seed(0)
        return (torch.randn(2, *arch["in_shape"], generator=gen).to(device),)
    raise StardomainError(
        "trace_spec needs example_input (a batch the model accepts), or a model built by stardomain.models.create"
    )


def _shapes(gm: torch.fx.GraphModule, args: tuple[Any, ...]) -> dict[str, tuple[int, ...] | None]:
    """Run the graph once (eval mode, no grad) and record every node's tensor shape."""
    shapes: dict[str, tuple[int, ...] | None] = {}

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            shapes[n.name] = tuple(result.shape) if isinstance(result, Tensor) else None
            return result

    _Recorder(gm).run(*args)
    return shapes


def trace_spec(
    model: nn.Module,
    example_input: Any = None,
    strict: bool = True,
    check: bool = True,
) -> PermutationSpec:
    """Derive the permutation spec of ``model`` with ``torch.fx.symbolic_trace``.

    ``example_input`` (a tensor or tuple of tensors) is needed to learn feature-map shapes;
    it defaults to a random batch of ``model.arch["in_shape"]``. With ``strict`` (default)
    any layer or op whose effect on channel order is unknown raises
    :class:`StardomainError`; with ``strict=False`` the units flowing into it are left
    unpermuted and listed in ``spec.fixed``. With ``check`` the spec is verified by
    comparing the outputs of a perturbed copy of the model before and after a random
    permutation (eval mode), so a tracing mistake cannot pass silently.
    """
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; all mean "not traceable"
        raise StardomainError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "remove data-dependent control flow from forward or pass a hand-written PermutationSpec"
        ) from exc
    args = _example_input(model, example_input)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            shapes = _shapes(gm, args)
    except StardomainError:
        raise
    except Exception as exc:
        raise StardomainError(
            f"running {type(model).__name__} on the example input failed ({type(exc).__name__}: {exc}); "
            "pass an example_input of the right shape"
        ) from exc
    finally:
        for m, flag in modes.items():
            m.training = flag
    tracer = _Tracer(model, strict)
    tracer.shape = shapes
    tracer.run(gm)
    spec = tracer.spec()
    if check:
        _verify(model, spec, args)
    return spec


def _verify(model: nn.Module, spec: PermutationSpec, args: tuple[Any, ...]) -> None:
    """Outputs of a perturbed model must not change under a random permutation of the spec."""
    from torch.func import functional_call

    from stardomain.permute.apply import apply_permutation, random_permutation

    if not spec.groups:
        return
    gen = torch.Generator().manual_seed(1234)
    state = {}
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            scale = torch.rand(v.shape, generator=gen).to(v) * 0.5 + 0.75  # keeps variances positive
            shift = 0.0 if k.endswith("running_var") else 0.1 * torch.randn(v.shape, generator=gen).to(v)
            state[k] = v * scale + shift
        else:
            state[k] = v
    perm = random_permutation(spec, gen)
    permuted = apply_permutation(spec, perm, state)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            y0 = functional_call(model, state, args)
            y1 = functional_call(model, permuted, args)
    finally:
        for m, flag in modes.items():
            m.training = flag
    outs0 = [t for t in torch.utils._pytree.tree_leaves(y0) if isinstance(t, Tensor)]
    outs1 = [t for t in torch.utils._pytree.tree_leaves(y1) if isinstance(t, Tensor)]
    for a, b in zip(outs0, outs1):
        scale = float(a[a.isfinite()].abs().max()) if a.isfinite().any() else 0.0
        if not torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-4 * max(scale, 1e-6), equal_nan=True):
            raise StardomainError(
                f"the traced permutation spec of {type(model).__name__} changes the network's outputs "
                f"(max diff {float((a - b).abs().max()):.3g}); this model needs a hand-written PermutationSpec"
            )
