"""Rules for torch functions and tensor methods in the traced graph: concatenation, elementwise ops of
several tensors (residual adds, parameters read in forward), pointwise ops, reshapes and reductions.

A mixin of :class:`~stardomain.permute.tracer.Tracer` (like :mod:`~stardomain.permute.layers` for layers,
:mod:`~stardomain.permute.heads` for attention heads and :mod:`~stardomain.permute.aten` for ATen ops):
:meth:`FunctionRules.visit_function` is where the tracer sends every ``call_function`` and ``call_method`` node.
"""

from __future__ import annotations

import math
from typing import Any

from stardomain.permute.aten import ATEN_RULES
from stardomain.permute.base import TracerState
from stardomain.permute.heads import MATMUL_NAMES, TRANSPOSE_NAMES
from stardomain.permute.ops import (
    BINARY_NAMES,
    CAT_NAMES,
    POINTWISE_NAMES,
    REDUCE_NAMES,
    RESHAPE_NAMES,
    fn_name,
    same_channels,
)
from stardomain.permute.unionfind import Layout, Seg

__all__ = ["RESIDUAL_NAMES", "FunctionRules"]

RESIDUAL_NAMES = {"add", "add_", "iadd", "__add__", "__radd__", "sub", "sub_", "isub", "__sub__"}


class FunctionRules(TracerState):
    """``visit_function`` and the rules for functions and methods (mixed into the tracer)."""

    def pass_shape(self, node: Any, lay: Layout, in_shape: Any, shape: tuple[int, ...]) -> Layout:
        c = self.cd(node.name)
        if in_shape is not None and len(shape) == len(in_shape) > c and shape[c] == in_shape[c]:
            return lay
        return self.unsupported(node, f"{self.describe(node)} changes the units' axis", [lay])

    def reshape(self, node: Any, lay: Layout, in_shape: Any, out: tuple[int, ...]) -> Layout:
        """view/reshape/flatten/squeeze: keep the units' axis, or expand channels into blocks.

        Units on axis 1 may be flattened channel-major (each unit a block of features); units
        on the last axis stay there while the leading axes are merged or split (tokens).
        """
        c = self.cd(node.name)
        if in_shape is not None and tuple(in_shape) == tuple(out):  # a view of the same shape
            return lay
        if in_shape is None or len(in_shape) < 2 or len(out) < 2:
            return self.unsupported(node, f"{self.describe(node)} moves the units' axis", [lay])
        if node.name in self.heads:
            h = self.heads[node.name]
            src = node.args[0].name if node.args and hasattr(node.args[0], "op") else ""
            last = c == len(in_shape) - 1
            if (
                last
                and len(out) == len(in_shape) + 1
                and out[h + 1] == 1
                and out[: h + 1] == in_shape[: h + 1]
                and out[h + 2 :] == in_shape[h + 1 :]
            ):
                self.repeat[node.name] = h + 1  # kv[:, :, None]: a kv head about to be repeated (grouped-query attention)
                self.cdim[node.name] = len(out) - 1
                return lay
            if (
                last
                and self.repeat.get(src) == h + 1
                and len(out) == len(in_shape) - 1
                and out[h] == in_shape[h] * in_shape[h + 1]
                and out[:h] == in_shape[:h]
                and out[h + 1 :] == in_shape[h + 2 :]
            ):
                self.cdim[node.name] = len(out) - 1  # (kv, r) -> kv*r query heads: the layout is already repeated
                return lay
            return self.merge_heads(node, lay, in_shape, out)
        if (
            c == len(in_shape) - 1
            and len(out) == len(in_shape) + 1
            and tuple(out[:-2]) == tuple(in_shape[:-1])
            and out[-2] * out[-1] == in_shape[-1]
            and out[-2] > 1
        ):
            return self.split_heads(node, lay, in_shape, out)
        if (
            c == len(in_shape) - 1
            and out[-1] == in_shape[-1]
            and math.prod(out) == math.prod(in_shape)
            and (c > 1 or len(out) > len(in_shape))
        ):
            # units on the last axis stay there while the leading axes (batch, tokens) merge or split:
            # (N, T, D) -> (N*T, D) before a matmul, and back
            self.cdim[node.name] = len(out) - 1
            return lay
        if c == len(in_shape) - 1 and c > 1:
            if out[-1] == in_shape[-1] and math.prod(out) == math.prod(in_shape):
                self.cdim[node.name] = len(out) - 1
                return lay
            return self.unsupported(
                node, f"{self.describe(node)} reshapes {tuple(in_shape)} -> {tuple(out)} across the units' (last) axis", [lay]
            )
        if out[0] != in_shape[0] or c != 1:
            return self.unsupported(node, f"{self.describe(node)} moves the units' axis", [lay])
        rest_in = math.prod(in_shape[2:])
        if out[1] == in_shape[1] and math.prod(out[2:]) == rest_in:
            return lay
        if len(out) == 2 and out[1] == in_shape[1] * rest_in:
            # channel-major flatten: every unit becomes a block of rest_in consecutive features
            return tuple(Seg(s.node, s.size, s.block * rest_in) for s in lay)
        return self.unsupported(node, f"{self.describe(node)} reshapes {tuple(in_shape)} -> {tuple(out)}", [lay])

    def visit_function(self, node: Any, name: str | None, inputs: list[tuple[Any, Layout]], shape: tuple[int, ...]) -> Layout | None:
        layouts = [lay for _, lay in inputs]
        first_node, lay = inputs[0]
        in_shape = self.shape.get(first_node.name)
        if name is None:
            return self.unknown(node, layouts, shape)
        if name in ATEN_RULES and (self.is_aten(node) or name == "expand"):
            return self.visit_aten(node, name, inputs, shape)

        if name in CAT_NAMES:
            tensors = node.args[0] if node.args else node.kwargs.get("tensors")
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
                return self.unknown(node, layouts, shape)
            parts = [self.layout.get(t.name) if hasattr(t, "op") else None for t in tensors]
            if any(p is None for p in parts):
                return self.unknown(node, layouts, shape)
            ndim = len(shape)
            dim = dim % ndim if ndim else 0
            params = [t for t in tensors if t.name in self.param_nodes]
            acts = [(t, p) for t, p in zip(tensors, parts) if t.name not in self.param_nodes and p is not None]
            if params and acts and dim != self.cd(acts[0][0].name):
                # a learned token (ViT's CLS) joins the sequence: it carries the stream's units
                return self.cat_tokens(node, acts, params, dim, layouts, shape)
            if dim == self.cd(node.name) and node.name in self.heads:  # pieces of the same heads (rotary)
                return self.cat_heads(node, parts, shape)  # type: ignore[arg-type]
            if dim == self.cd(node.name):  # channel concat: the new axis is a list of segments
                return tuple(s for p in parts for s in p)  # type: ignore[union-attr]
            out = parts[0]
            for p in parts[1:]:
                out = self.union(out, p, node.name)  # type: ignore[arg-type]
            return out

        if name in BINARY_NAMES:
            return self.binary(node, inputs, shape)
        if name in MATMUL_NAMES:
            return self.matmul(node, shape)
        if name == "scaled_dot_product_attention":
            return self.sdpa(node, shape)
        if name in TRANSPOSE_NAMES and len(inputs) == 1:
            return self.transpose(node, lay, shape)

        if name in POINTWISE_NAMES:
            if len(layouts) > 1:
                # e.g. clamp(x, min=tensor): only allowed when the other tensors are scalars
                return self.binary(node, inputs, shape)
            return self.pass_shape(node, lay, in_shape, shape)

        if name in RESHAPE_NAMES and len(inputs) == 1:
            return self.reshape(node, lay, in_shape, shape)

        if name in REDUCE_NAMES and len(inputs) == 1:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dims is None:  # full reduction is permutation invariant
                return self.fixed_layout(shape, "permutation-invariant reduction", node.name)
            dims = [dims] if isinstance(dims, int) else list(dims)
            nd = len(in_shape or ())
            if not all(isinstance(d, int) for d in dims) or not nd:
                return self.unknown(node, layouts, shape)
            dims = [d % nd for d in dims]
            c = self.cd(node.name)
            if 0 in dims:
                return self.unsupported(node, f"{self.describe(node)} reduces over the batch axis", layouts)
            if c in dims:  # sums over units are invariant: a fresh, fixed tensor
                return self.fixed_layout(shape, "permutation-invariant reduction", node.name)
            if node.name in self.heads:
                return self.unsupported(node, f"{self.describe(node)} reduces a tensor of split heads", layouts)
            keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
            if len(shape) != nd and not keep:  # reduced axes before the units' axis are gone
                self.cdim[node.name] = c - sum(1 for d in dims if d < c)
            if in_shape is None or shape[self.cd(node.name)] != in_shape[c]:
                return self.unsupported(node, f"{self.describe(node)} changes the units' axis", layouts)
            return lay

        return self.unknown(node, layouts, shape)

    def binary(self, node: Any, inputs: list[tuple[Any, Layout]], shape: tuple[int, ...]) -> Layout:
        """Elementwise op of several tensors: same-shape activations are tied together.

        A parameter read directly (``x * self.scale``, ``x + self.pos_embed``) is permuted
        along the axis that meets the units under broadcasting.
        """
        active: list[tuple[Any, Layout]] = []
        params: list[Any] = []
        for n, lay in inputs:
            s = self.shape.get(n.name)
            if s is not None and math.prod(s) == 1:
                continue  # a scalar tensor broadcasts to every unit alike
            if n.name in self.param_nodes:
                params.append(n)
            else:
                active.append((n, lay))
        if not active:
            return self.fixed_layout(shape, "computed from parameters only", node.name)
        active.sort(key=lambda item: self.is_fixed(item[1]))  # a permutable operand sets the units' axis
        out = active[0][1]
        first = self.shape.get(active[0][0].name)
        c = self.cd(active[0][0].name)
        h = self.heads.get(active[0][0].name)
        if h is not None:
            self.heads[node.name] = h
            if active[0][0].name in self.head_tok:
                self.head_tok[node.name] = self.head_tok[active[0][0].name]
        for n, lay in active[1:]:
            if self.is_fixed(lay) and self.broadcast_over_units(first, self.shape.get(n.name), c):
                continue  # one value for every unit (a per-token scale: RMSNorm's 1/rms): any order
            if (
                h is not None
                and self.is_fixed(lay)
                and not self.is_fixed(out)
                and self.broadcast_over_heads(first, self.shape.get(n.name), h)
            ):
                # the same per-unit factor in every head (rotary cos/sin): units stay inside their heads, heads may move
                out = self.lock(
                    out,
                    f"rotary position embedding ({self.describe(node)} at {node.name!r} scales each head's units by "
                    "per-position factors that differ from unit to unit): q/k units inside a head stay fixed, whole heads still move",
                )
                continue
            if not self.is_fixed(lay) and h is not None and self.heads.get(n.name) == h:
                self.tie_heads(active[0][0].name, n.name)
            if not same_channels(first, self.shape.get(n.name), c) or (
                not self.is_fixed(lay) and (self.cd(n.name) != c or self.heads.get(n.name) != h)
            ):
                if self.is_fixed(lay) and self.is_fixed(out):
                    continue
                return self.unsupported(
                    node, f"{self.describe(node)} broadcasts tensors across the units' axis", [lay for _, lay in active]
                )
            if (
                (fn_name(node.target) in RESIDUAL_NAMES or node.target in RESIDUAL_NAMES)
                and not (self.is_fixed(out) and self.is_fixed(lay))
                and {self.uf.find(s.node) for s in out} != {self.uf.find(s.node) for s in lay}
            ):
                self.residual.update(s.node for s in (*out, *lay))  # two streams summed: a residual connection
            out = self.union(out, lay, node.name)
        if len(shape) <= c or shape[c] * (shape[h] if h is not None else 1) != self.total(out):
            return self.unsupported(node, f"{self.describe(node)} changes the units' axis", [lay for _, lay in active])
        self.cdim[node.name] = c
        if h is not None and params and not self.is_fixed(out):
            return self.unsupported(node, f"{self.describe(node)} applies a parameter shared by all heads", [out])
        for p in params:
            if not self.is_fixed(out) and not self.bind_param(p, out, first, c):
                key = self.param_nodes[p.name]
                return self.unsupported(
                    node,
                    f"parameter {key!r} of shape {tuple(self.shape.get(p.name) or ())} does not line up with the "
                    f"units (axis {c} of a {tuple(first or ())} tensor; a per-channel parameter of a feature map is "
                    "shaped (C, 1, 1))",
                    [out],
                )
        return out

    @staticmethod
    def broadcast_over_heads(act: tuple[int, ...] | None, other: tuple[int, ...] | None, h: int) -> bool:
        """``other`` broadcasts against ``act`` with size 1 (or no axis) on the heads' axis ``h``: one factor for all heads."""
        if act is None or other is None or len(other) > len(act):
            return False
        shift = len(act) - len(other)
        if h >= shift and other[h - shift] != 1:
            return False
        return all(o in (1, act[i + shift]) for i, o in enumerate(other))

    @staticmethod
    def broadcast_over_units(act: tuple[int, ...] | None, other: tuple[int, ...] | None, c: int) -> bool:
        """``other`` broadcasts against ``act`` with size 1 (or no axis) where ``act`` has its units (axis ``c``)."""
        if act is None or other is None or len(other) > len(act):
            return False
        shift = len(act) - len(other)
        if c >= shift and other[c - shift] != 1:
            return False
        return all(o in (1, act[i + shift]) for i, o in enumerate(other))

    def cat_tokens(
        self, node: Any, acts: list[tuple[Any, Layout]], params: list[Any], dim: int, layouts: list[Layout], shape: tuple[int, ...]
    ) -> Layout:
        """``cat([cls_token.expand(n, -1, -1), x], dim=1)``: parameters joined along a non-unit axis take the
        units' order of the activations (their own unit axis is permuted with the stream)."""
        first, out = acts[0]
        c = self.cd(first.name)
        for n, lay in acts[1:]:
            if self.cd(n.name) != c:
                return self.unsupported(node, f"{self.describe(node)} joins tensors whose units are on different axes", layouts)
            out = self.union(out, lay, node.name)
        self.cdim[node.name] = c
        if first.name in self.heads:
            return self.unsupported(node, f"{self.describe(node)} joins a parameter to split attention heads", layouts)
        for p in params:
            if not self.is_fixed(out) and not self.bind_param(p, out, self.shape.get(p.name), c):
                return self.unsupported(
                    node, f"parameter {self.param_nodes[p.name]!r} joined by {self.describe(node)} does not line up with the units", [out]
                )
        return out

    def bind_param(self, p: Any, out: Layout, act: tuple[int, ...] | None, c: int) -> bool:
        """Permute parameter node ``p`` along the axis that broadcasting lines up with axis ``c`` of ``act``.

        ``p`` may be a broadcast view of the stored tensor (``cls_token.expand(n, -1, -1)``): the stored
        tensor's axes line up with the trailing axes of the view."""
        ps = self.param_shape.get(p.name, self.shape.get(p.name))
        view = self.shape.get(p.name)
        if ps is None or act is None or view is None or len(ps) > len(act) or len(view) > len(act):
            return False
        axis = c - (len(act) - len(ps))
        if axis < 0 or ps[axis] != act[c]:
            return False
        if any(view[i] not in (1, act[i + len(act) - len(view)]) for i in range(len(view)) if i != c - (len(act) - len(view))):
            return False
        key = self.param_nodes[p.name]
        self.add_entries(key, axis, out, key)
        return True

    def unknown(self, node: Any, layouts: list[Layout], shape: tuple[int, ...]) -> Layout | None:
        if all(self.is_fixed(lay) for lay in layouts):  # nothing permutable flows in
            return self.fixed_layout(shape, "computed from fixed tensors only", node.name)
        return self.unsupported(node, f"{self.describe(node)} is not supported", layouts)
