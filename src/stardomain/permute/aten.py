"""ATen ops of a ``torch.export`` graph: the rules that map them back to parameters by name.

``torch.export`` (non-strict) captures models that ``torch.fx.symbolic_trace`` cannot follow
(Hugging Face ``transformers``: shape- and dtype-dependent Python in ``forward``) as a graph of
ATen ops whose parameters and buffers are placeholders named by their state keys. There are no
``call_module`` nodes, so the layers are recognised by their ops: ``aten.linear`` (``nn.Linear``),
``aten.addmm``/``aten.mm`` with a parameter as the second factor (GPT-2's ``Conv1D``, weight
stored (in, out)), ``aten.conv*``, ``aten.embedding``, ``aten.layer_norm``, the batch-norm ops;
``select``/``slice``/``index`` (``[:, 0]``, ``[:, -1]`` pooling, gathering a sequence's last token),
``expand`` (a broadcast CLS token) and ``split``/``chunk``/``unbind`` (a fused qkv projection)
move or cut the units' axis. Each rule hands over to the same layer rules as the fx path
(:meth:`~stardomain.permute.layers.ModuleRules.dense`, ``lookup``, ``per_channel_keys``), so
both captures give the same groups for the same model. A mixin of
:class:`~stardomain.permute.tracer.Tracer`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from stardomain.permute.base import TracerState
from stardomain.permute.unionfind import Layout, Seg

__all__ = ["ATEN_RULES", "IGNORED_PREFIXES", "TUPLE_NAMES", "AtenRules"]

# ops with no tensor result that export inserts (runtime checks, symbolic sizes)
IGNORED_PREFIXES = ("_assert", "sym_", "_print")
# ops returning a tuple or list of tensors
TUPLE_NAMES = {
    "split",
    "split_with_sizes",
    "chunk",
    "unbind",
    "tensor_split",
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit",
    "native_batch_norm",
    "native_layer_norm",
    "native_dropout",
}
# ATen ops with a rule of their own (only for ATen targets: torch.nn.functional orders some arguments differently)
ATEN_RULES = {
    "linear",
    "addmm",
    "mm",
    "matmul",
    "conv1d",
    "conv2d",
    "conv3d",
    "convolution",
    "embedding",
    "layer_norm",
    "batch_norm",
    "select",
    "slice",
    "index",
    "expand",
    "narrow",
}


class AtenRules(TracerState):
    """Rules for ATen ops (mixed into the tracer)."""

    # ------------------------------------------------------------------ helpers
    def layer_name(self, key: str) -> str:
        """The layer a parameter belongs to: ``h.0.attn.c_attn.weight`` -> ``h.0.attn.c_attn``."""
        return key.rsplit(".", 1)[0] if "." in key else key

    def param_key(self, arg: Any) -> str | None:
        """State key of the parameter (or buffer) node ``arg``, None for anything else."""
        return self.param_nodes.get(arg.name) if hasattr(arg, "op") else None

    def stored_shape(self, arg: Any) -> tuple[int, ...]:
        return self.param_shape.get(arg.name) or self.shape.get(arg.name) or ()

    def is_aten(self, node: Any) -> bool:
        return isinstance(node.target, torch._ops.OpOverload)

    # ------------------------------------------------------------------ dispatch
    def visit_aten(self, node: Any, name: str, inputs: list[tuple[Any, Layout]], shape: tuple[int, ...]) -> Layout | None:
        """The rule for one ATen op with a tensor result (``name`` in :data:`ATEN_RULES`)."""
        layouts = [lay for _, lay in inputs]
        args = list(node.args)
        if name == "expand":
            return self.expand(node, args[0], shape)
        if name in ("linear", "addmm", "mm", "matmul"):
            return self.aten_dense(node, name, args, layouts, shape)
        if name in ("conv1d", "conv2d", "conv3d", "convolution"):
            return self.aten_conv(node, name, args, layouts, shape)
        if name == "embedding":
            w, ids = args[0], args[1]
            key = self.param_key(w)
            if key is None:
                return self.unknown_op(node, layouts, shape)
            lay = self.layout.get(ids.name) if hasattr(ids, "op") else None
            return self.lookup(node, self.layer_name(key), key, self.stored_shape(w)[1], [lay] if lay is not None else [], shape)
        if name == "layer_norm":
            return self.aten_layer_norm(node, args, layouts, shape)
        if name == "batch_norm":
            return self.aten_batch_norm(node, args, layouts)
        if name in ("select", "slice", "narrow", "index"):
            return self.take(node, name, args, layouts, shape)
        return self.unknown_op(node, layouts, shape)

    def unknown_op(self, node: Any, layouts: list[Layout], shape: tuple[int, ...]) -> Layout:
        if all(self.is_fixed(lay) for lay in layouts):
            return self.fixed_layout(shape, "computed from fixed tensors only", node.name)
        return self.unsupported(node, f"{self.describe(node)} is not supported", layouts)

    # ------------------------------------------------------------------ layers
    def aten_dense(self, node: Any, name: str, args: list[Any], layouts: list[Layout], shape: tuple[int, ...]) -> Layout | None:
        """``linear(x, w, b)`` (w stored (out, in)); ``addmm(b, x, w)`` / ``mm(x, w)`` / ``matmul(x, w)`` with a
        parameter ``w`` stored (in, out), as GPT-2's ``Conv1D`` does."""
        if name == "linear":
            x, w, b = (args + [None])[:3]
            in_axis, out_axis = 1, 0
        elif name == "addmm":
            b, x, w = args[:3]
            in_axis, out_axis = 0, 1
        else:
            x, w = args[:2]
            b, in_axis, out_axis = None, 0, 1
        key = self.param_key(w)
        if key is None or not hasattr(x, "op") or len(self.stored_shape(w)) != 2:
            if name in ("mm", "matmul"):  # a product of activations (attention scores): the matmul rule
                return self.matmul(node, shape)
            return self.unsupported(node, f"{self.describe(node)} without a 2-d weight parameter", layouts)
        lay = self.layout.get(x.name)
        if lay is None:
            return self.unknown_op(node, layouts, shape)
        if x.name in self.heads and not self.is_fixed(lay):
            return self.unsupported(node, f"{self.describe(node)} reads a tensor of split attention heads", [lay])
        ws = self.stored_shape(w)
        bias = self.param_key(b) if b is not None else None
        if b is not None and bias is None:
            return self.unsupported(node, f"{self.describe(node)} adds a bias that is not a parameter", layouts)
        layer = self.layer_name(key)
        return self.dense(
            node,
            layer,
            lay,
            self.cd(x.name),
            self.shape.get(x.name),
            shape,
            weight=key,
            bias=bias,
            fan_in=ws[in_axis],
            fan_out=ws[out_axis],
            conv=False,
            in_axis=in_axis,
            out_axis=out_axis,
        )

    def aten_conv(self, node: Any, name: str, args: list[Any], layouts: list[Layout], shape: tuple[int, ...]) -> Layout | None:
        x, w, b = (args + [None, None, None])[:3]
        if name == "convolution":
            transposed, groups = bool(args[6]), int(args[8])
        else:
            transposed, groups = False, int(args[6]) if len(args) > 6 else int(node.kwargs.get("groups", 1))
        key = self.param_key(w)
        lay = self.layout.get(x.name) if hasattr(x, "op") else None
        if key is None or lay is None or transposed:
            if lay is not None and self.is_fixed(lay) and key is None:
                return self.fixed_layout(shape, "computed from fixed tensors only", node.name)
            return self.unsupported(node, f"{self.describe(node)} (a transposed conv, or weights that are not a parameter)", layouts)
        ws = self.stored_shape(w)
        bias = self.param_key(b) if b is not None else None
        return self.dense(
            node,
            self.layer_name(key),
            lay,
            self.cd(x.name),
            self.shape.get(x.name),
            shape,
            weight=key,
            bias=bias,
            fan_in=ws[1] * groups,
            fan_out=ws[0],
            conv=True,
            groups=groups,
        )

    def aten_layer_norm(self, node: Any, args: list[Any], layouts: list[Layout], shape: tuple[int, ...]) -> Layout:
        x, normalized = args[0], args[1]
        w, b = (args[2:] + [None, None])[:2]
        lay = self.layout.get(x.name)
        in_shape = self.shape.get(x.name)
        keys = [k for k in (self.param_key(w), self.param_key(b)) if k is not None]
        layer = self.layer_name(keys[0]) if keys else node.name
        c = self.cd(x.name)
        if lay is None or in_shape is None:
            return self.unknown_op(node, layouts, shape)
        if c != len(in_shape) - 1 or list(normalized) != [in_shape[-1]] or x.name in self.heads:
            return self.unsupported(
                node, f"layer {layer!r} is a LayerNorm over {tuple(normalized)}, not exactly the units' axis (the last one)", [lay]
            )
        if len(keys) != sum(a is not None for a in (w, b)):
            return self.unsupported(node, f"layer {layer!r} (LayerNorm) has an affine tensor that is not a parameter", [lay])
        self.cdim[node.name] = c
        return self.per_channel_keys(layer, lay, keys)

    def aten_batch_norm(self, node: Any, args: list[Any], layouts: list[Layout]) -> Layout:
        """``batch_norm(x, weight, bias, running_mean, running_var, ...)`` (ATen's order) on units of axis 1."""
        x = args[0]
        lay = self.layout.get(x.name)
        tensors = [a for a in args[1:5] if a is not None]
        keys = [self.param_key(a) for a in tensors]
        layer = self.layer_name(keys[0]) if keys and keys[0] else node.name
        if lay is None:
            return self.unsupported(node, f"layer {layer!r} (BatchNorm) reads a non-tensor", layouts)
        if self.cd(x.name) != 1 or any(k is None for k in keys):
            return self.unsupported(
                node,
                f"layer {layer!r} (BatchNorm) normalises axis 1 but the units are on axis "
                f"{self.cd(x.name)}, or its statistics are not in the state",
                [lay],
            )
        self.cdim[node.name] = 1
        return self.per_channel_keys(layer, lay, [k for k in keys if k is not None])

    # ------------------------------------------------------------------ moving and cutting axes
    def expand(self, node: Any, src: Any, shape: tuple[int, ...]) -> Layout:
        """Broadcast to a larger shape: the trailing axes keep their meaning. A broadcast parameter (a CLS token
        made one per sample) is still that parameter (see ``bind_param``)."""
        lay = self.layout.get(src.name) if hasattr(src, "op") else None
        in_shape = self.shape.get(src.name) if hasattr(src, "op") else None
        if lay is None or in_shape is None or len(shape) < len(in_shape):
            return self.unknown_op(node, [lay] if lay else [], shape)
        if src.name in self.param_nodes:
            self.param_nodes[node.name] = self.param_nodes[src.name]
            self.param_shape[node.name] = self.stored_shape(src)
            return self.fixed_layout(shape, "broadcast parameter", node.name)
        if self.is_fixed(lay):
            return self.fixed_layout(shape, "computed from fixed tensors only", node.name)
        shift = len(shape) - len(in_shape)
        c = self.cd(src.name)
        if not shift and src.name in self.repeat:
            rep = self.repeat_heads(node, src, lay, in_shape, shape)
            if rep is not None:
                return rep
        if shape[c + shift] != in_shape[c]:
            return self.unsupported(node, f"{self.describe(node)} broadcasts across the units' axis", [lay])
        self.cdim[node.name] = c + shift
        if src.name in self.heads:
            self.heads[node.name] = self.heads[src.name] + shift
        return lay

    def take(self, node: Any, name: str, args: list[Any], layouts: list[Layout], shape: tuple[int, ...]) -> Layout:
        """``select``/``slice``/``narrow``/``index`` on axes other than the units': ``h[:, 0]`` (CLS pooling),
        ``h[:, -1]``, ``logits[arange(n), last]`` keep the units; cutting the units' axis is refused."""
        x = args[0]
        lay = self.layout.get(x.name) if hasattr(x, "op") else None
        in_shape = self.shape.get(x.name) if hasattr(x, "op") else None
        if lay is None or in_shape is None:
            return self.unknown_op(node, layouts, shape)
        if self.is_fixed(lay):
            return self.fixed_layout(shape, "computed from fixed tensors only", node.name)
        nd = len(in_shape)
        c = self.cd(x.name)
        h = self.heads.get(x.name)
        if name == "index":
            idx = list(args[1]) if len(args) > 1 else []
            dims = [d for d, t in enumerate(idx) if t is not None]
            if not dims or max(dims) >= c or (h is not None and max(dims) >= h):
                return self.unsupported(node, f"{self.describe(node)} indexes the units' axis (or the heads)", layouts)
            new_c = len(shape) - (nd - c)  # the axes after the last indexed one keep their order, at the end
        else:
            dim = int(args[1]) % nd if len(args) > 1 else 0
            step = args[4] if len(args) > 4 else 1
            if dim == c and h is not None and name in ("slice", "narrow") and step == 1 and shape[c] < in_shape[c]:
                # a piece of every head (rotary's rotate_half takes the halves): the units stay in place inside
                # their heads, the piece carries each head as one unit
                locked = self.lock(lay, f"{node.name!r} cuts each head into pieces (rotary position embedding)")
                self.cdim[node.name], self.heads[node.name] = c, h
                return tuple(Seg(s.node, 1, shape[c]) for s in locked)
            if dim == c or dim == h:
                full = name in ("slice", "narrow") and tuple(shape) == tuple(in_shape)
                if not full:
                    return self.unsupported(node, f"{self.describe(node)} cuts the units' axis", layouts)
            new_c = c - 1 if name == "select" and dim < c else c
            if h is not None:
                self.heads[node.name] = h - 1 if name == "select" and dim < h else h
        if not 0 <= new_c < len(shape) or shape[new_c] != in_shape[c]:
            return self.unsupported(node, f"{self.describe(node)} moves the units' axis", layouts)
        if name == "index" and h is not None:
            self.heads[node.name] = len(shape) - (nd - h)
        self.cdim[node.name] = new_c
        return lay

    def visit_tuple(self, node: Any, name: str, inputs: list[tuple[Any, Layout]]) -> None:
        """Ops with several results: ``split``/``chunk``/``unbind`` of a tensor (a fused qkv projection cut
        along the units' axis, or a tensor cut along another), ``native_*`` norms (output, statistics)."""
        layouts = [lay for _, lay in inputs]
        x = node.args[0]
        lay = self.layout.get(x.name) if hasattr(x, "op") else None
        in_shape = self.shape.get(x.name) if hasattr(x, "op") else None
        vals = node.meta.get("val")
        outs = [tuple(int(d) for d in v.shape) if isinstance(v, torch.Tensor) else None for v in (vals or [])]
        if lay is None or in_shape is None:
            self.tuples[node.name] = [None] * len(outs)
            return None
        if name.startswith(("_native_batch_norm", "native_batch_norm")):
            out = self.aten_batch_norm(node, list(node.args), layouts)
            self.tuples[node.name] = [(out, 1)] + [None] * (len(outs) - 1)
            return None
        if name == "native_layer_norm":
            out = self.aten_layer_norm(node, list(node.args), layouts, outs[0] or ())
            self.tuples[node.name] = [(out, self.cd(x.name))] + [None] * (len(outs) - 1)
            return None
        if name == "native_dropout":
            self.tuples[node.name] = [(lay, self.cd(x.name)), None]
            return None
        c = self.cd(x.name)
        nd = len(in_shape)
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        if name == "unbind":
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        dim = int(dim) % nd
        if any(o is None for o in outs) or self.is_fixed(lay):
            fixed = self.fixed_layout(None, "computed from fixed tensors only", node.name)
            self.tuples[node.name] = [(fixed, c)] * len(outs)
            return None
        if x.name in self.heads:  # (the pieces would lose track of the heads' axis)
            self.unsupported(node, f"{self.describe(node)} takes apart a tensor of split attention heads", layouts)
            self.tuples[node.name] = [None] * len(outs)
            return None
        if dim != c:
            if name == "unbind":
                self.unsupported(node, f"{self.describe(node)} removes an axis of a tensor with units", layouts)
                self.tuples[node.name] = [None] * len(outs)
                return None
            self.tuples[node.name] = [(lay, c)] * len(outs)
            return None
        if name == "unbind":
            self.unsupported(node, f"{self.describe(node)} cuts split attention heads apart", layouts)
            self.tuples[node.name] = [None] * len(outs)
            return None
        pieces = self.cut(node, x.name, [o[dim] for o in outs if o is not None])
        self.tuples[node.name] = [(p, c) for p in pieces] if pieces is not None else [None] * len(outs)
        return None

    def cut(self, node: Any, src: str, sizes: list[int]) -> list[Layout] | None:
        """The layout of ``src`` cut into consecutive pieces of ``sizes`` indices (GPT-2's fused ``c_attn`` output
        becomes q, k and v). A group straddling a cut is split into equal groups first (as heads are)."""
        while True:
            lay = self.layout.get(src) or ()
            bounds = set(itertools.accumulate(sizes))
            start, straddle = 0, None
            for seg in lay:
                span = seg.size * seg.block
                inner = [b - start for b in bounds if start < b < start + span]
                if inner:
                    straddle = (seg, inner)
                    break
                start += span
            if straddle is None:
                break
            seg, inner = straddle
            part = math.gcd(seg.size * seg.block, *inner)
            if part % seg.block or len({self.uf.find(s.node) for s in lay}) != len(lay):
                self.unsupported(node, f"{self.describe(node)} cuts units of one group at uneven points", [lay])
                return None
            self.refine(seg.node, seg.size // (part // seg.block), label="part")
        pieces: list[Layout] = []
        segs = list(self.layout.get(src) or ())
        for size in sizes:
            piece: list[Seg] = []
            while size > 0 and segs:
                seg = segs.pop(0)
                piece.append(seg)
                size -= seg.size * seg.block
            pieces.append(tuple(piece))
        return pieces
