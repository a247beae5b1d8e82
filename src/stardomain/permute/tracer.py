"""The graph walk behind :func:`~stardomain.permute.trace_spec`.

:class:`Tracer` propagates a *channel layout* (the list of unit groups along dim 1) through
a ``torch.fx`` graph, node by node, merging groups where the architecture ties them
(union-find) and fixing those it cannot permute, each with the reason, which the spec
reports. Anything it does not understand is refused (strict) or fixed (lenient), never
guessed.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Sequence

import torch
from torch import nn

from stardomain.errors import StardomainError
from stardomain.permute.aten import ATEN_RULES, IGNORED_PREFIXES, TUPLE_NAMES, AtenRules
from stardomain.permute.heads import MATMUL_NAMES, TRANSPOSE_NAMES, HeadRules
from stardomain.permute.layers import ModuleRules
from stardomain.permute.ops import (
    BINARY_NAMES,
    CAT_NAMES,
    NONTENSOR_METHODS,
    POINTWISE_NAMES,
    REDUCE_NAMES,
    RESHAPE_NAMES,
    fn_name,
    same_channels,
)
from stardomain.permute.spec import Axis, PermutationSpec
from stardomain.permute.unionfind import Layout, Seg, UnionFind

RESIDUAL_NAMES = {"add", "add_", "iadd", "__add__", "__radd__", "sub", "sub_", "isub", "__sub__"}


class Tracer(AtenRules, ModuleRules, HeadRules):
    """Propagates channel layouts through an fx graph and records spec entries.

    The graph is a ``torch.fx.symbolic_trace`` of the model (``call_module`` nodes, torch functions), or a
    ``torch.export`` graph of ATen ops whose parameters are placeholders: ``placeholders`` then maps those
    placeholder nodes to the state keys (fully-qualified names) they hold.
    """

    def __init__(self, model: nn.Module, strict: bool, ties: dict[str, str], placeholders: dict[str, str] | None = None) -> None:
        self.model = model
        self.strict = strict
        self.uf = UnionFind()
        self.entries: list[tuple[int, Axis]] = []  # (node, axis with length=None)
        self.layout: dict[str, Layout | None] = {}
        self.shape: dict[str, tuple[int, ...] | None] = {}
        self.module_in: dict[str, Layout] = {}
        self.module_out: dict[str, Layout] = {}
        self.producers: dict[int, str] = {}  # node id -> module that creates it
        self.notes: dict[str, str] = {}
        self.state_keys = set(model.state_dict().keys())
        self.ties = ties  # alias -> first name of the same tensor (weight tying)
        self.slots: dict[tuple[str, int], Layout] = {}  # (tensor, axis) -> layout it is permuted by
        self.cdim: dict[str, int] = {}  # node -> the axis its layout runs along (default 1)
        self.param_nodes: dict[str, str] = {}  # get_attr node -> state key of the tensor it reads
        self.tuples: dict[str, list[tuple[Layout, int] | None]] = {}  # tuple-valued node -> (layout, cdim) per item
        self.heads: dict[str, int] = {}  # node of split attention heads -> the axis holding the heads
        self.placeholders = dict(placeholders or {})  # export graphs: placeholder node -> state key it holds
        self.param_shape: dict[str, tuple[int, ...]] = {}  # parameter node -> shape of the stored tensor
        self.residual: set[int] = set()  # union-find nodes joined by a residual add

    # ------------------------------------------------------------------ helpers
    def cd(self, name: str) -> int:
        """The axis holding the units of node ``name``'s output."""
        return self.cdim.get(name, 1)

    def fixed_layout(self, shape: tuple[int, ...] | None, reason: str, name: str, size: int | None = None) -> Layout:
        c = size if size is not None else (shape[1] if shape is not None and len(shape) >= 2 else 1)
        return (Seg(self.uf.new(name, c, fixed=reason), c, 1),)

    def new_units(self, producer: str, n: int) -> Layout:
        """A fresh group of ``n`` units created by layer ``producer``."""
        nid = self.uf.new(producer, n)
        self.producers[nid] = producer
        return (Seg(nid, n, 1),)

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
        """Record that ``layout`` permutes ``axis`` of tensor ``key``.

        A tensor reached twice (tied weights, a parameter read in two places) must be
        permuted the same way both times: the two layouts are merged into one group, or
        both fixed when their group boundaries differ.
        """
        key = self.ties.get(key, key)
        if (key, axis) in self.slots:
            self.union(self.slots[(key, axis)], layout, f"tensor {key!r} (tied or reused)")
            return
        self.slots[(key, axis)] = layout
        if key not in self.state_keys:
            raise StardomainError(
                f"layer {module!r}: tensor {key!r} is not in the model's state_dict (shared or re-registered "
                "module?); pass a hand-written PermutationSpec"
            )
        start = 0
        for seg in layout:
            self.entries.append((seg.node, Axis(key, axis, start, None, seg.block)))
            start += seg.size * seg.block

    def unsupported(self, node: Any, why: str, inputs: Sequence[Layout]) -> Layout:
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
            lay = self.layout.get(a.name) if hasattr(a, "op") and a.name not in seen else None
            if lay is not None:
                seen.add(a.name)
                out.append((a, lay))
            return a

        torch.fx.node.map_arg((node.args, node.kwargs), visit)
        return out

    def run(self, gm: torch.fx.GraphModule) -> None:
        for node in gm.graph.nodes:
            self.layout[node.name] = self.visit(node)

    def visit(self, node: Any) -> Layout | None:
        shape = self.shape.get(node.name)
        if node.op == "placeholder" and node.name not in self.placeholders:
            return self.fixed_layout(shape, "model input", node.name) if shape is not None else None
        if node.op in ("get_attr", "placeholder"):
            # a parameter read in forward is permuted only where it meets units elementwise (see binary)
            target = self.placeholders.get(node.name, str(node.target))
            key = self.ties.get(target, target)
            if key in self.state_keys:
                self.param_nodes[node.name] = key
                if shape is not None:
                    self.param_shape[node.name] = shape
            return self.fixed_layout(shape, f"mixes with attribute {target!r}", node.name) if shape else None
        if node.op == "output":
            for _, lay in self.tensor_inputs(node):
                self.fix_layout(lay, "feeds the model output")
            return None
        inputs = self.tensor_inputs(node)
        if (
            node.op == "call_function"
            and node.target is operator.getitem
            and node.args
            and getattr(node.args[0], "name", None) in self.tuples
        ):
            items = self.tuples[node.args[0].name]
            idx = node.args[1]
            item = items[idx] if isinstance(idx, int) and -len(items) <= idx < len(items) else None
            if item is None:
                return self.fixed_layout(shape, "attention weights", node.name) if shape else None
            self.cdim[node.name] = item[1]
            return item[0]
        if node.op == "call_module" and inputs:
            return self.visit_module(node, inputs, shape)
        name = fn_name(node.target) if node.op == "call_function" else str(node.target)
        if node.op == "call_function" and name is not None:
            if name.startswith(IGNORED_PREFIXES):  # export's runtime asserts and size queries
                return None
            if name in TUPLE_NAMES and inputs and self.is_aten(node):  # split/chunk/unbind, norms with statistics
                self.visit_tuple(node, name, inputs)
                return None
        if shape is None:
            # non-tensor result (x.size(0), shape arithmetic) or a tuple of tensors
            if node.op == "call_method" and node.target in NONTENSOR_METHODS:
                return None
            if node.op == "call_function" and (node.target is getattr or (node.target is operator.getitem and not inputs)):
                return None
            if not inputs or all(self.is_fixed(lay) for _, lay in inputs):
                return None
            return self.unsupported(node, f"{self.describe(node)} returns a non-tensor or tuple", [lay for _, lay in inputs])
        if not inputs:
            return self.fixed_layout(shape, "constant tensor", node.name)
        self.cdim[node.name] = self.cd(inputs[0][0].name)  # ops keep the axis unless a rule says otherwise
        if inputs[0][0].name in self.heads:
            self.heads[node.name] = self.heads[inputs[0][0].name]
        return self.visit_function(node, name, inputs, shape)

    def describe(self, node: Any) -> str:
        if node.op == "call_module":
            return f"layer {node.target!r} ({type(self.model.get_submodule(node.target)).__name__})"
        if node.op == "call_method":
            return f"method .{node.target}()"
        return f"function {getattr(node.target, '__name__', node.target)}"

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
        for n, lay in active[1:]:
            if self.is_fixed(lay) and self.broadcast_over_units(first, self.shape.get(n.name), c):
                continue  # one value for every unit (a per-token scale: RMSNorm's 1/rms): any order
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

    # ------------------------------------------------------------------ result
    @staticmethod
    def group_name(base: str, members: int, residual: bool) -> str:
        """``layer`` for one layer's units, ``layer/stream`` for units several layers share, ``layer.headI/qk``
        for the query and key units of one attention head."""
        if members == 1:
            return base
        return f"{base}/qk" if ".head" in base and not residual else f"{base}/stream"

    def spec(self) -> PermutationSpec:
        uf = self.uf
        roots: dict[int, list[int]] = {}
        for nid in self.producers:
            roots.setdefault(uf.find(nid), []).append(nid)
        groups: dict[str, int] = {}
        axes: dict[str, list[Axis]] = {}
        root_name: dict[int, str] = {}
        fixed: dict[str, str] = {}
        residual_roots = {uf.find(n) for n in self.residual}
        for r in sorted(roots):
            members = sorted(roots[r])
            if uf.fixed[r] is not None:
                for m in members:
                    fixed[self.producers[m]] = uf.fixed[r]  # type: ignore[assignment]
                continue
            base = self.producers[members[0]]
            name = self.group_name(base, len(members), r in residual_roots)
            root_name[r] = name
            groups[name] = uf.size[r]
            axes[name] = []
        for nid, ax in self.entries:
            r = uf.find(nid)
            if r in root_name:
                axes[root_name[r]].append(ax)
        for where, reason in self.notes.items():
            fixed.setdefault(where, reason)
        streams: dict[str, dict[str, Any]] = {}
        for r in sorted(roots):
            members = sorted(roots[r])
            base = self.producers[members[0]]
            name = root_name.get(r) or self.group_name(base, len(members), r in residual_roots)
            residual = r in residual_roots
            kind = "residual" if residual else "heads" if ".head" in base else "hidden"
            if uf.fixed[r] == "feeds the model output" and not residual:
                kind = "output"  # logits: their order is the classes', never a symmetry
            streams[name] = {
                "units": uf.size[r],
                "permuted": uf.fixed[r] is None,
                "residual": residual,
                "kind": kind,
                "reason": uf.fixed[r],
            }
        params = {k: p.numel() for k, p in self.model.named_parameters()}
        buffers = frozenset(k for k, _ in self.model.named_buffers())
        return PermutationSpec(groups=groups, axes=axes, buffers=buffers, params=params, fixed=fixed, ties=dict(self.ties), streams=streams)
