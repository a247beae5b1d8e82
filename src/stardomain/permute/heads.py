"""Attention written by hand: heads split with ``view``, moved with ``transpose``, mixed with ``@``.

The usual pattern ``q = self.q(x).view(n, s, h, d).transpose(1, 2)`` ... ``softmax(q @ k.transpose(-2, -1))
@ v`` ... ``.transpose(1, 2).reshape(n, s, h * d)``. Splitting the units' axis into heads
splits each group into one group per head (units may move only within their head); ``q @ k^T``
contracts the units of q and k, which ties head ``i`` of q to head ``i`` of k; ``scores @ v``
carries v's head groups on; merging the heads back gives the out-projection's input layout.
A mixin of :class:`~stardomain.permute.tracer.Tracer`; ``self.heads[node]`` is the axis that
holds the heads of a split tensor. Heads are not permuted as blocks (every head keeps its slot),
so anything that mixes heads (a sum over them, a parameter shared by all) is refused.
"""

from __future__ import annotations

from typing import Any

from stardomain.permute.base import TracerState
from stardomain.permute.ops import fn_name
from stardomain.permute.unionfind import Layout

MATMUL_NAMES = {"matmul", "__matmul__", "bmm"}
TRANSPOSE_NAMES = {"transpose", "permute", "swapaxes"}


class HeadRules(TracerState):
    """Rules for split heads, transposes and matrix products (mixed into the tracer)."""

    def split_heads(self, node: Any, lay: Layout, in_shape: tuple[int, ...], out: tuple[int, ...]) -> Layout:
        """``(..., h*d) -> (..., h, d)``: one group per head and per original group."""
        d = out[-1]
        if any(s.block != 1 or s.size % d for s in lay) or len({self.uf.find(s.node) for s in lay}) != len(lay):
            return self.unsupported(node, f"{self.describe(node)} splits units into heads of {d} across group boundaries", [lay])
        new: list[Any] = []
        for seg in lay:
            new.extend([seg] if seg.size == d else self.refine(seg.node, seg.size // d, label="head"))
        self.cdim[node.name], self.heads[node.name] = len(out) - 1, len(out) - 2
        return tuple(new)

    def merge_heads(self, node: Any, lay: Layout, in_shape: tuple[int, ...], out: tuple[int, ...]) -> Layout:
        """``(..., h, d) -> (..., h*d)``: the head groups side by side, in head order."""
        if (
            self.heads.get(node.name) != len(in_shape) - 2
            or self.cd(node.name) != len(in_shape) - 1
            or out[-1] != in_shape[-1] * in_shape[-2]
            or tuple(out[:-1]) != tuple(in_shape[:-2])
        ):
            return self.unsupported(node, f"{self.describe(node)} reshapes split heads {tuple(in_shape)} -> {tuple(out)}", [lay])
        self.heads.pop(node.name)
        self.cdim[node.name] = len(out) - 1
        return lay

    def transpose(self, node: Any, lay: Layout, shape: tuple[int, ...]) -> Layout | None:
        """transpose/permute: the units (and heads) move with their axes."""
        nd = len(shape)
        args = [a for a in node.args[1:]] or list(node.kwargs.values())
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            args = list(args[0])
        if not all(isinstance(a, int) for a in args):
            return self.unsupported(node, f"{self.describe(node)} with non-constant axes", [lay])
        name = node.target if isinstance(node.target, str) else fn_name(node.target)
        if name in ("transpose", "swapaxes"):
            if len(args) != 2:
                return self.unsupported(node, f"{self.describe(node)} needs two axes", [lay])
            order = list(range(nd))
            i, j = args[0] % nd, args[1] % nd
            order[i], order[j] = order[j], order[i]
        else:
            order = [a % nd for a in args]
            if sorted(order) != list(range(nd)):
                return self.unsupported(node, f"{self.describe(node)} is not a permutation of the axes", [lay])
        self.cdim[node.name] = order.index(self.cd(node.name))
        if node.name in self.heads:
            self.heads[node.name] = order.index(self.heads[node.name])
        return lay

    def matmul(self, node: Any, shape: tuple[int, ...]) -> Layout | None:
        """``a @ b``: units of a (last axis) contracted with units of b (second to last) tie the two."""
        if len(node.args) != 2 or not all(hasattr(a, "op") for a in node.args):
            return self.unsupported(node, f"{self.describe(node)} with constant operands", [])
        (a, b), layouts = node.args, [self.layout.get(n.name) for n in node.args]
        la, lb = layouts
        if la is None or lb is None:
            return self.unsupported(node, f"{self.describe(node)} of non-tensors", [x for x in layouts if x])
        na, nb = len(self.shape[a.name] or ()), len(self.shape[b.name] or ())
        ca, cb = self.cd(a.name), self.cd(b.name)
        fa, fb = self.is_fixed(la), self.is_fixed(lb)
        if fa and fb:
            return self.fixed_layout(shape, "computed from fixed tensors only", node.name)
        if not fa and not fb and ca == na - 1 and cb == nb - 2 and self.heads.get(a.name, -1) - na == self.heads.get(b.name, -1) - nb:
            self.union(la, lb, node.name)  # q_i . k_i: the same permutation on both sides leaves every product
            self.heads.pop(node.name, None)
            return self.fixed_layout(shape, "attention scores (units summed out)", node.name)
        if fa and cb == nb - 1:
            self.cdim[node.name] = len(shape) - 1
            if b.name in self.heads:
                self.heads[node.name] = self.heads[b.name] - nb + len(shape)
            return lb
        return self.unsupported(node, f"{self.describe(node)} mixes units of its operands in an unsupported way", [la, lb])

    def sdpa(self, node: Any, shape: tuple[int, ...]) -> Layout | None:
        """``F.scaled_dot_product_attention(q, k, v)``: q and k tied per head, v carried through."""
        q, k, v = (node.args + (None, None, None))[:3]
        if not all(hasattr(t, "op") for t in (q, k, v)):
            return self.unsupported(node, f"{self.describe(node)} without q, k, v tensors", [])
        lq, lk, lv = (self.layout.get(t.name) for t in (q, k, v))
        nd = len(shape)
        if lq is None or lk is None or lv is None or not all(self.cd(t.name) == nd - 1 for t in (q, k, v)):
            return self.unsupported(
                node, f"{self.describe(node)} on tensors whose units are not on the last axis", [x for x in (lq, lk, lv) if x]
            )
        self.union(lq, lk, node.name)
        self.cdim[node.name] = nd - 1
        if v.name in self.heads:
            self.heads[node.name] = self.heads[v.name]
        return lv

    def width(self, name: str, shape: tuple[int, ...]) -> int:
        """Indices the layout of node ``name`` spans: the units' axis, times the heads of a split tensor."""
        c = self.cd(name)
        return shape[c] * (shape[self.heads[name]] if name in self.heads else 1) if len(shape) > c else 0
