"""Attention written by hand: heads split with ``view``, moved with ``transpose``, mixed with ``@``.

The usual pattern ``q = self.q(x).view(n, s, h, d).transpose(1, 2)`` ... ``softmax(q @ k.transpose(-2, -1))
@ v`` ... ``.transpose(1, 2).reshape(n, s, h * d)``. Splitting the units' axis into heads
splits each group into one group per head (units may move only within their head); ``q @ k^T``
contracts the units of q and k, which ties head ``i`` of q to head ``i`` of k; ``scores @ v``
carries v's head groups on; merging the heads back gives the out-projection's input layout.
A mixin of :class:`~stardomain.permute.tracer.Tracer`; ``self.heads[node]`` is the axis that
holds the heads of a split tensor. Anything that mixes heads (a sum over them, a parameter shared by
all) is refused.

Whole heads. Every split gives each head a *token* (``self.head_tok[node]``, one per head position);
tokens of two tensors whose heads line up (``q @ k^T``, ``scores @ v``, ``sdpa(q, k, v)``, a sum of two
head tensors) are merged, and so are the *families* of tokens one split made. At the end each family is
a set of interchangeable head slots (``spec.heads``), each owning the groups of its tokens' units.
Grouped-query attention repeats a kv head for ``r`` query heads (``unsqueeze`` / ``expand`` / ``reshape``,
or ``sdpa(..., enable_gqa=True)``): the repeated layout carries the kv head's group (and token) ``r`` times,
so the kv head's slot holds its query heads and they move together. Rotary position embeddings multiply
a head's units by per-position factors that differ from unit to unit (and cut the head in halves):
the units inside such a head stay in place (:meth:`lock`: the head's group becomes one unit of
``block`` = head size), while the head itself still moves.
"""

from __future__ import annotations

from typing import Any

from stardomain.permute.base import TracerState
from stardomain.permute.ops import fn_name
from stardomain.permute.unionfind import Layout, Seg

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
        if len(new) == out[-2]:
            self.new_heads(node.name, tuple(new))
        return tuple(new)

    # ------------------------------------------------------------------ whole heads
    def new_heads(self, name: str, lay: Layout) -> None:
        """One token per head of ``lay`` (one segment per head), all of one new family."""
        if self.is_fixed(lay):
            return
        fam = self.families.new(name, len(lay))
        toks = []
        for seg in lay:
            t = self.toks.new(name, 1)
            self.tok_family.append(fam)
            self.tok_nodes[t] = {seg.node}
            toks.append(t)
        self.head_tok[name] = tuple(toks)

    def tie_heads(self, a: str, b: str) -> None:
        """Heads at the same positions of tensors ``a`` and ``b`` are one head (and their families one family)."""
        ta, tb = self.head_tok.get(a), self.head_tok.get(b)
        if ta is None or tb is None or len(ta) != len(tb):
            return
        for x, y in zip(ta, tb):
            self.toks.union(x, y)
            self.families.union(self.tok_family[x], self.tok_family[y])

    def lock(self, lay: Layout, reason: str) -> Layout:
        """Keep the units inside every head of ``lay`` in place: each head's group becomes one unit of ``block`` =
        head size (every entry and layout that held it is rewritten); the head as a whole may still move."""
        uf = self.uf
        for seg in lay:
            root = uf.find(seg.node)
            d = uf.size[root]
            self.locks.setdefault(seg.node, (reason, d * seg.block if d > 1 else seg.block))
            if d == 1:
                continue
            members = {m for m in range(len(uf.parent)) if uf.find(m) == root}
            for m in members:
                uf.size[m] = 1
            self.entries = [(o, ax._replace(block=ax.block * d)) if o in members else (o, ax) for o, ax in self.entries]

            def fold(lay2: Layout | None, members: set[int] = members, d: int = d) -> Layout | None:
                if lay2 is None or not any(s.node in members for s in lay2):
                    return lay2
                return tuple(Seg(s.node, 1, s.block * d) if s.node in members and s.size == d else s for s in lay2)

            for table in (self.layout, self.module_in, self.module_out):
                for k in list(table):
                    table[k] = fold(table[k])  # type: ignore[assignment]
            for slot in list(self.slots):
                self.slots[slot] = fold(self.slots[slot])  # type: ignore[assignment]
            for k, items in self.tuples.items():
                self.tuples[k] = [None if it is None else (fold(it[0]), it[1]) for it in items]  # type: ignore[misc]
        return tuple(Seg(s.node, 1, s.size * s.block) if self.uf.size[self.uf.find(s.node)] == 1 and s.size > 1 else s for s in lay)

    def cat_heads(self, node: Any, parts: list[Layout], shape: tuple[int, ...]) -> Layout:
        """``cat([-x2, x1], -1)`` of pieces of the same heads (rotary's rotate_half): the heads, their units kept in place."""
        first = parts[0]
        if any(len(p) != len(first) for p in parts) or any(
            self.uf.find(s.node) != self.uf.find(t.node) for p in parts[1:] for s, t in zip(p, first)
        ):
            return self.unsupported(node, f"{self.describe(node)} joins pieces of different attention heads", parts)
        first = self.lock(first, f"{node.name!r} joins pieces of each head (rotary position embedding)")
        return tuple(Seg(s.node, 1, sum(p[i].size * p[i].block for p in parts)) for i, s in enumerate(first))

    def repeat_heads(self, node: Any, src: Any, lay: Layout, in_shape: tuple[int, ...], shape: tuple[int, ...]) -> Layout | None:
        """Grouped-query attention's ``kv[:, :, None].expand(n, kv, r, t, d)``: every kv head ``r`` times (its group and
        token repeated), so each query head is tied to its kv head. None if ``node`` is no such expand."""
        axis = self.repeat.get(src.name)
        if axis is None or len(shape) != len(in_shape):
            return None
        if any(a != b for i, (a, b) in enumerate(zip(in_shape, shape)) if i != axis) or in_shape[axis] != 1:
            return None
        r = shape[axis]
        if len(lay) != in_shape[self.heads.get(src.name, -1)]:
            return None
        self.repeat[node.name] = axis
        self.heads[node.name] = self.heads[src.name]
        self.cdim[node.name] = self.cd(src.name)
        if src.name in self.head_tok:
            self.head_tok[node.name] = tuple(t for t in self.head_tok[src.name] for _ in range(r))
        return tuple(s for s in lay for _ in range(r))

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
        self.head_tok.pop(node.name, None)
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
            self.tie_heads(a.name, b.name)  # (the scores keep a's head tokens: scores @ v ties them to v's)
            self.heads.pop(node.name, None)
            return self.fixed_layout(shape, "attention scores (units summed out)", node.name)
        if fa and cb == nb - 1:
            self.cdim[node.name] = len(shape) - 1
            if b.name in self.heads:
                self.heads[node.name] = self.heads[b.name] - nb + len(shape)
            self.tie_heads(a.name, b.name)
            if b.name in self.head_tok:
                self.head_tok[node.name] = self.head_tok[b.name]
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
        if len(lq) != len(lk) and node.kwargs.get("enable_gqa") and lk and len(lq) % len(lk) == 0 and len(lk) == len(lv):
            r = len(lq) // len(lk)  # grouped-query attention inside sdpa: kv head j serves query heads j*r ... j*r+r-1
            lk, lv = tuple(s for s in lk for _ in range(r)), tuple(s for s in lv for _ in range(r))
            for t in (k, v):
                if t.name in self.head_tok:
                    self.head_tok[f"{node.name}[{t.name}]"] = tuple(x for x in self.head_tok[t.name] for _ in range(r))
                    self.tie_heads(q.name, f"{node.name}[{t.name}]")
        self.union(lq, lk, node.name)
        self.tie_heads(q.name, k.name)
        self.tie_heads(q.name, v.name)
        self.cdim[node.name] = nd - 1
        if v.name in self.heads:
            self.heads[node.name] = self.heads[v.name]
        if q.name in self.head_tok:
            self.head_tok[node.name] = self.head_tok[q.name]
        return lv

    def width(self, name: str, shape: tuple[int, ...]) -> int:
        """Indices the layout of node ``name`` spans: the units' axis, times the heads of a split tensor."""
        c = self.cd(name)
        return shape[c] * (shape[self.heads[name]] if name in self.heads else 1) if len(shape) > c else 0
