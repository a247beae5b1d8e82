"""How each kind of layer moves hidden units: the ``call_module`` rules of the spec tracer.

A mixin of :class:`~stardomain.permute.tracer.Tracer`: each rule records which axes of the
layer's tensors the incoming layout permutes and returns the outgoing layout, or refuses
(strict) / fixes (lenient) with a reason naming the layer. ``cdim`` is the axis that holds
the units (1 for ``(N, C, ...)`` maps, the last one for ``(N, T, D)`` token streams).
"""

from __future__ import annotations

from typing import Any, Iterable

from torch import Tensor, nn

from stardomain.permute.base import TracerState
from stardomain.permute.ops import POINTWISE_MODULES, POOL_MODULES
from stardomain.permute.spec import Axis
from stardomain.permute.unionfind import Layout, Seg


class ModuleRules(TracerState):
    """``visit_module`` and the per-layer rules (mixed into the tracer)."""

    def visit_module(self, node: Any, inputs: list[tuple[Any, Layout]], shape: tuple[int, ...] | None) -> Layout | None:
        target = str(node.target)
        mod = self.model.get_submodule(target)
        if isinstance(mod, nn.MultiheadAttention):
            return self.attention(node, target, mod, inputs)
        if isinstance(mod, nn.Embedding):
            return self.embedding(node, target, mod, inputs, shape)
        lay = inputs[0][1]
        first = inputs[0][0].name
        in_shape = self.shape.get(first)
        cdim = self.cd(first)
        if len(inputs) != 1:
            return self.unsupported(node, f"layer {target!r} with several tensor inputs", [lay for _, lay in inputs])
        if shape is None:
            return self.unsupported(node, f"layer {target!r} returns a non-tensor or tuple", [lay])
        if first in self.heads and not self.is_fixed(lay):
            return self.unsupported(node, f"layer {target!r} reads a tensor of split attention heads", [lay])
        last = len(in_shape or ()) - 1

        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            if isinstance(mod, nn.Linear):
                fan_in, fan_out, groups, is_conv = mod.in_features, mod.out_features, 1, False
            else:
                fan_in, fan_out, groups, is_conv = mod.in_channels, mod.out_channels, mod.groups, True
            return self.dense(
                node,
                target,
                lay,
                cdim,
                in_shape,
                shape,
                weight=f"{target}.weight",
                bias=f"{target}.bias" if mod.bias is not None else None,
                fan_in=fan_in,
                fan_out=fan_out,
                conv=is_conv,
                groups=groups,
            )

        self.cdim[node.name] = cdim
        if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            if cdim != 1:
                return self.unsupported(node, f"layer {target!r} normalises axis 1 but the units are on axis {cdim}", [lay])
            self.check_width(lay, mod.num_features, target, "features")
            return self.per_channel(target, mod, lay, ("weight", "bias", "running_mean", "running_var"))

        if isinstance(mod, nn.GroupNorm):
            return self.group_norm(node, target, mod, lay, cdim)

        if isinstance(mod, nn.LayerNorm):
            if in_shape is None or cdim != last or tuple(mod.normalized_shape) != (in_shape[last],):
                return self.unsupported(
                    node,
                    f"layer {target!r} is a LayerNorm over {tuple(mod.normalized_shape)}, not exactly the units' axis (the last one)",
                    [lay],
                )
            return self.per_channel(target, mod, lay, ("weight", "bias"))

        if isinstance(mod, nn.PReLU):
            if mod.num_parameters == 1:
                return lay
            if cdim != 1:
                return self.unsupported(node, f"layer {target!r} (PReLU) scales axis 1 but the units are on axis {cdim}", [lay])
            self.check_width(lay, mod.num_parameters, target, "channels")
            return self.per_channel(target, mod, lay, ("weight",))

        if isinstance(mod, POINTWISE_MODULES):  # (a softmax across the units is permutation-equivariant too)
            return lay
        if isinstance(mod, POOL_MODULES):
            if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) and mod.return_indices:
                return self.unsupported(node, f"layer {target!r} returns pooling indices", [lay])
            return self.pass_shape(node, lay, in_shape, shape)
        if isinstance(mod, nn.Flatten):
            return self.reshape(node, lay, in_shape, shape)
        return self.unsupported(node, f"layer {target!r} of unsupported type {type(mod).__name__}", [lay])

    def dense(
        self,
        node: Any,
        target: str,
        lay: Layout,
        cdim: int,
        in_shape: tuple[int, ...] | None,
        shape: tuple[int, ...],
        *,
        weight: str,
        bias: str | None,
        fan_in: int,
        fan_out: int,
        conv: bool,
        groups: int = 1,
        in_axis: int = 1,
        out_axis: int = 0,
    ) -> Layout:
        """A Linear or Conv layer: the input units permute axis ``in_axis`` of ``weight``, fresh output units
        axis ``out_axis`` (and the bias). ``nn.Linear`` stores (out, in); GPT-2's ``Conv1D`` stores (in, out),
        ``in_axis=0, out_axis=1``. ``target`` names the layer (a reused layer ties its inputs)."""
        last = len(in_shape or ()) - 1
        if self.is_fixed(lay):
            lay = self.fixed_layout(None, "model input", node.name, size=fan_in)
            cdim = 1 if conv else last
        if conv and groups != 1:
            return self.unsupported(node, f"layer {target!r} is a grouped/depthwise Conv (groups={groups})", [lay])
        if conv and cdim != 1:
            return self.unsupported(node, f"layer {target!r} is a Conv reading a tensor whose units are on axis {cdim}", [lay])
        if not conv and (in_shape is None or len(in_shape) < 2 or cdim != last):
            return self.unsupported(node, f"layer {target!r} is a Linear applied along an axis that does not hold the units", [lay])
        if conv and any(s.block != 1 for s in lay):
            return self.unsupported(node, f"layer {target!r} receives a flattened/reshaped feature map", [lay])
        self.check_width(lay, fan_in, target, "input channels" if conv else "input features")
        self.cdim[node.name] = 1 if conv else len(shape) - 1
        if target in self.module_out:  # module called twice: same units, tie the inputs
            self.union(self.module_in[target], lay, target)
            return self.module_out[target]
        self.add_entries(weight, in_axis, lay, target)
        out = self.new_units(target, fan_out)
        self.add_entries(weight, out_axis, out, target)
        if bias is not None:
            self.add_entries(bias, 0, out, target)
        self.module_in[target], self.module_out[target] = lay, out
        return out

    def embedding(
        self, node: Any, target: str, mod: nn.Embedding, inputs: list[tuple[Any, Layout]], shape: tuple[int, ...] | None
    ) -> Layout | None:
        """Token ids in, vectors out: the embedding's columns are the units of the stream it starts (the
        residual stream of a transformer), on the output's last axis; its rows (the vocabulary) stay put."""
        return self.lookup(node, target, f"{target}.weight", mod.embedding_dim, [lay for _, lay in inputs], shape)

    def lookup(self, node: Any, target: str, weight: str, dim: int, ids: list[Layout], shape: tuple[int, ...] | None) -> Layout:
        """An embedding table ``weight`` (rows: vocabulary, columns: ``dim`` units) read at token ids."""
        if shape is None or len(ids) != 1 or not self.is_fixed(ids[0]):
            return self.unsupported(node, f"layer {target!r} (Embedding) reads something other than token ids", ids)
        self.cdim[node.name] = len(shape) - 1
        memo = f"{target}[lookup]"  # (a table tied to a Linear's weight is also read by that layer)
        if memo in self.module_out:  # one table looked up twice: the same units
            return self.module_out[memo]
        out = self.new_units(target, dim)
        self.add_entries(weight, 1, out, target)
        self.module_out[memo] = out
        return out

    def per_channel(self, target: str, mod: nn.Module, lay: Layout, names: Iterable[str]) -> Layout:
        """Per-channel parameters/buffers (norm layers, PReLU) follow the incoming layout."""
        keys = [f"{target}.{n}" for n in names if isinstance(getattr(mod, n, None), Tensor)]
        return self.per_channel_keys(target, lay, keys)

    def per_channel_keys(self, target: str, lay: Layout, keys: Iterable[str]) -> Layout:
        """Axis 0 of every tensor in ``keys`` follows the incoming layout (a layer reached twice ties its inputs)."""
        if target in self.module_in:
            return self.union(self.module_in[target], lay, target)
        for key in keys:
            self.add_entries(key, 0, lay, target)
        self.module_in[target] = lay
        return lay

    def group_norm(self, node: Any, target: str, mod: nn.GroupNorm, lay: Layout, cdim: int) -> Layout | None:
        """GroupNorm: units may move only within their normalisation group.

        Statistics are taken over each group of ``C / G`` consecutive channels, so the
        channel group is split into G groups of its own (one per normalisation group) and
        each is permuted separately. (Moving whole groups as blocks is also a symmetry; the
        spec keeps the finer within-group freedom.)
        """
        if cdim != 1:
            return self.unsupported(node, f"layer {target!r} (GroupNorm) normalises axis 1 but the units are on axis {cdim}", [lay])
        self.check_width(lay, mod.num_channels, target, "channels")
        g = mod.num_groups
        if 1 < g < mod.num_channels and not self.is_fixed(lay):  # (G = C: statistics per channel, any order)
            if target in self.module_in:
                return self.union(self.module_in[target], lay, target)
            if len(lay) != 1 or lay[0].block != 1:
                return self.unsupported(
                    node, f"layer {target!r} is a GroupNorm ({g} groups) over channels built from several groups", [lay]
                )
            lay = self.refine(lay[0].node, g)
        return self.per_channel(target, mod, lay, ("weight", "bias"))

    def refine(self, nid: int, parts: int, label: str = "g") -> Layout:
        """Split the group of node ``nid`` (and every node merged with it) into ``parts`` equal groups.

        Used where units may move only within consecutive slices (GroupNorm groups, attention
        heads): every entry and every layout that held the group now holds the slices, named
        ``{layer}.{label}{i}``.
        """
        uf = self.uf
        root = uf.find(nid)
        members = [m for m in range(len(uf.parent)) if uf.find(m) == root]
        size = uf.size[root]
        part = size // parts
        sub: dict[int, list[int]] = {}
        for m in members:
            base = self.producers.get(m, uf.name[m])
            sub[m] = [uf.new(f"{base}.{label}{i}", part, fixed=uf.fixed[root]) for i in range(parts)]
            if m in self.producers:
                del self.producers[m]
                for i, s_id in enumerate(sub[m]):
                    self.producers[s_id] = f"{base}.{label}{i}"
        for m in members[1:]:
            for a, b in zip(sub[members[0]], sub[m]):
                uf.union(a, b)
        entries = []
        for owner, ax in self.entries:
            if owner in sub:
                entries += [(s_id, ax._replace(start=ax.start + i * part * ax.block)) for i, s_id in enumerate(sub[owner])]
            else:
                entries.append((owner, ax))
        self.entries = entries

        def split(lay: Layout | None) -> Layout | None:
            if lay is None or not any(sg.node in sub for sg in lay):
                return lay
            return tuple(x for sg in lay for x in ([Seg(s_id, part, sg.block) for s_id in sub[sg.node]] if sg.node in sub else [sg]))

        for table in (self.layout, self.module_in, self.module_out):
            for k in list(table):
                table[k] = split(table[k])  # type: ignore[assignment]
        for slot in list(self.slots):
            self.slots[slot] = split(self.slots[slot])  # type: ignore[assignment]
        for k, items in self.tuples.items():
            self.tuples[k] = [None if it is None else (split(it[0]), it[1]) for it in items]  # type: ignore[misc]
        return split(((Seg(nid, size, 1)),))  # type: ignore[return-value]

    def attention(self, node: Any, target: str, mod: nn.MultiheadAttention, inputs: list[tuple[Any, Layout]]) -> Any:
        """Self-attention (``mha(x, x, x)``): residual stream in, per-head groups inside, new units out.

        Within head ``h`` the query and key units share one permutation (their dot product
        is unchanged) and the value units share one with the output projection's inputs;
        every head is its own pair of groups. The output projection creates fresh units.
        """
        active = [(n, lay) for n, lay in inputs if not self.is_fixed(lay)]
        src = {
            getattr(a, "name", None) for a in list(node.args[:3]) + [node.kwargs.get(k) for k in ("query", "key", "value")] if a is not None
        }
        if len(active) != 1 or len(src) != 1:
            return self.unsupported(
                node, f"layer {target!r} (MultiheadAttention) is not self-attention on one tensor", [lay for _, lay in inputs]
            )
        if not mod._qkv_same_embed_dim or mod.bias_k is not None or mod.add_zero_attn:
            return self.unsupported(
                node, f"layer {target!r} (MultiheadAttention) uses kdim/vdim, bias_k/bias_v or add_zero_attn", [active[0][1]]
            )
        x, lay = active[0]
        in_shape = self.shape.get(x.name)
        if in_shape is None or self.cd(x.name) != len(in_shape) - 1:
            return self.unsupported(node, f"layer {target!r} (MultiheadAttention) reads units that are not on the last axis", [lay])
        d, h = mod.embed_dim, mod.num_heads
        hd = d // h
        self.check_width(lay, d, target, "embedding features")
        if target in self.module_out:
            self.union(self.module_in[target], lay, target)
            out = self.module_out[target]
        else:
            w, b = f"{target}.in_proj_weight", f"{target}.in_proj_bias"
            self.add_entries(w, 1, lay, target)
            has_bias = mod.in_proj_bias is not None
            fam = self.families.new(target, h)  # the heads may trade places as wholes (q/k and v/out together)
            for head in range(h):
                qk = self.new_units(f"{target}.head{head}.qk", hd)[0].node
                v = self.new_units(f"{target}.head{head}.v", hd)[0].node
                tok = self.toks.new(target, 1)
                self.tok_family.append(fam)
                self.tok_nodes[tok] = {qk, v}
                for nid, starts in ((qk, (head * hd, d + head * hd)), (v, (2 * d + head * hd,))):
                    for start in starts:
                        self.entries.append((nid, Axis(w, 0, start, None, 1)))
                        if has_bias:
                            self.entries.append((nid, Axis(b, 0, start, None, 1)))
                self.entries.append((v, Axis(f"{target}.out_proj.weight", 1, head * hd, None, 1)))
            out = self.new_units(f"{target}.out_proj", d)
            self.add_entries(f"{target}.out_proj.weight", 0, out, target)
            if mod.out_proj.bias is not None:
                self.add_entries(f"{target}.out_proj.bias", 0, out, target)
            self.module_in[target], self.module_out[target] = lay, out
        self.tuples[node.name] = [(out, len(in_shape) - 1), None]  # (attn_output, attn_weights)
        return None
