"""The graph walk behind :func:`~stardomain.permute.trace_spec`.

:class:`Tracer` propagates a *channel layout* (the list of unit groups along dim 1) through
a ``torch.fx`` graph, node by node, merging groups where the architecture ties them
(union-find) and fixing those it cannot permute, each with the reason, which the spec
reports. Anything it does not understand is refused (strict) or fixed (lenient), never
guessed.
"""

from __future__ import annotations

import operator
import os
from typing import Any, Sequence

import torch
from torch import nn

from stardomain.errors import StardomainError
from stardomain.permute.aten import IGNORED_PREFIXES, TUPLE_NAMES, AtenRules
from stardomain.permute.functions import FunctionRules
from stardomain.permute.heads import HeadRules
from stardomain.permute.layers import ModuleRules
from stardomain.permute.ops import NONTENSOR_METHODS, fn_name
from stardomain.permute.spec import HEADS_SUFFIX, Axis, PermutationSpec
from stardomain.permute.unionfind import Layout, Seg, UnionFind


class Tracer(FunctionRules, AtenRules, ModuleRules, HeadRules):
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
        # whole heads (see permute/heads.py): per head-split node one token per head; tokens and their families merge
        self.head_tok: dict[str, tuple[int, ...]] = {}
        self.toks = UnionFind()
        self.tok_family: list[int] = []  # token -> its family (the heads one split made)
        self.families = UnionFind()
        self.tok_nodes: dict[int, set[int]] = {}  # token -> union-find nodes of its head's units
        self.locks: dict[int, tuple[str, int]] = {}  # node -> (why its units stay in place inside the head, head size)
        self.repeat: dict[str, int] = {}  # node -> axis of a kv head repeat in the making (grouped-query attention)

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
        reason = (
            f"{where!r} combines tensors whose units are grouped differently (e.g. split into heads on one side only), "
            "so neither can be reordered; a hand-written PermutationSpec can say how they line up"
        )
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
        if inputs[0][0].name in self.head_tok:
            self.head_tok[node.name] = self.head_tok[inputs[0][0].name]
        return self.visit_function(node, name, inputs, shape)

    def describe(self, node: Any) -> str:
        if node.op == "call_module":
            return f"layer {node.target!r} ({type(self.model.get_submodule(node.target)).__name__})"
        if node.op == "call_method":
            return f"method .{node.target}()"
        return f"function {getattr(node.target, '__name__', node.target)}"

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
        locked: dict[int, tuple[str, int]] = {}
        for nid, lock in self.locks.items():
            locked.setdefault(uf.find(nid), lock)
        held: dict[str, list[Axis]] = {}
        stream_of: dict[int, str] = {}
        for r in sorted(roots):
            members = sorted(roots[r])
            stream_of[r] = root_name.get(r) or self.group_name(self.producers[members[0]], len(members), r in residual_roots)
        for nid, ax in self.entries:
            r = uf.find(nid)
            if r in stream_of and r not in root_name and streams[stream_of[r]]["kind"] != "output":
                held.setdefault(stream_of[r], []).append(ax._replace(length=uf.size[r]))
        for r, (why, size) in locked.items():
            if r in stream_of:
                streams[stream_of[r]].update(units=size, permuted=False, locked=True, reason=why)
        heads = self.head_sets(root_name, axes, fixed)
        for slots in heads.values():
            for slot in slots:
                for g in slot:
                    streams[g]["moves_whole"] = True
        params = {k: p.numel() for k, p in self.model.named_parameters()}
        buffers = frozenset(k for k, _ in self.model.named_buffers())
        return PermutationSpec(
            groups=groups,
            axes=axes,
            buffers=buffers,
            params=params,
            fixed=fixed,
            ties=dict(self.ties),
            streams=streams,
            heads=heads,
            held=held,
        )

    def head_sets(self, root_name: dict[int, str], axes: dict[str, list[Axis]], fixed: dict[str, str]) -> dict[str, list[list[str]]]:
        """Every family of head tokens -> its slots (the groups each head owns), or the reason its heads stay put
        (written to ``fixed`` under ``{attention}/heads``)."""
        uf = self.uf
        families: dict[int, list[int]] = {}
        for t, fam in enumerate(self.tok_family):
            families.setdefault(self.families.find(fam), []).append(t)
        out: dict[str, list[list[str]]] = {}
        for _, toks in sorted(families.items()):
            slots: dict[int, set[int]] = {}
            for t in toks:
                slots.setdefault(self.toks.find(t), set()).update(uf.find(n) for n in self.tok_nodes[t])
            names = [self.producers.get(n, uf.name[n]) for t in toks for n in sorted(self.tok_nodes[t])]
            prefix = os.path.commonprefix(names)
            label = (prefix.rsplit(".", 1)[0] if "." in prefix else prefix.rstrip(".")) or names[0]
            name = label + HEADS_SUFFIX
            while name in out or name in axes:
                name = f"{label}#{len(out)}{HEADS_SUFFIX}"
            if len(slots) < 2:
                continue
            owner: dict[int, int] = {}
            reason = None
            for tok, units in slots.items():
                for u in units:
                    if owner.setdefault(u, tok) != tok:
                        reason = "one group of units spans several heads (a parameter or an op shared across heads)"
            bad = [u for units in slots.values() for u in units if u not in root_name]
            if bad:
                reason = reason or f"units of a head are not permuted: {uf.fixed[bad[0]]}"
            if reason is None:

                def signature(g: str) -> tuple[object, ...]:
                    return tuple((a.key, a.axis, a.block) for a in sorted(axes[g], key=lambda a: (a.key, a.axis, a.start)))

                ordered = [sorted((root_name[u] for u in units), key=signature) for units in slots.values()]
                ref = [(signature(g), len(axes[g])) for g in ordered[0]]
                if any([(signature(g), len(axes[g])) for g in slot] != ref for slot in ordered[1:]):
                    reason = "the heads do not own alike slices of the same tensors"
                else:
                    ordered.sort(key=lambda slot: min(a.start for a in axes[slot[0]]))
                    out[name] = ordered
                    continue
            fixed[name] = reason
        return out
