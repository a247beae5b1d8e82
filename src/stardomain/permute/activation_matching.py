"""Activation matching (Git Re-Basin Sec. 3.1; the setting of Jordan et al.'s REPAIR).

Units are matched by the Pearson correlation of their activations on data. A group's
activations are read where the network consumes them: the input of every Conv/Linear
layer whose input axis the group owns (spec entry ``(layer.weight, axis 1)``). That is
the post-ReLU (and post-pooling) signal for plain and residual nets, each concatenated
segment for DenseNet, and it works for hand-written specs too. A group read at several
places (a residual stream) sums the correlation matrices of all of them, then one LAP
per group picks the permutation. Both models run in eval mode (BN running statistics).

Token streams ``(N, T, D)`` (transformers): the units are on the last axis and every token is a
sample. GPT-2's ``Conv1D`` (weight stored (in, out)) is read like a Linear. Groups that no layer
reads (an attention head's query/key units, consumed by the attention product) are read at the
output of the projections that make them, q and k together.

Whole heads (``spec.heads``): at every place a head set's groups are read, the units of all its slots
are read together, so the correlation of A's slot ``i`` with B's head ``j`` is known for every pair.
Per kind of group (q/k, v/out) the best inner assignment of each pair is solved on its block; the
heads are assigned on the sums of those optima, and each slot keeps the inner solution of the head
it receives (as weight matching's head step does).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from stardomain.errors import StardomainError
from stardomain.permute.lap import solve_assignment
from stardomain.permute.spec import Axis, PermutationSpec, states_first
from stardomain.permute.weight_matching import MatchResult

__all__ = ["activation_matching"]


class _Stats:
    """Streaming sums for the cross-correlation of two (samples, n) activation matrices."""

    def __init__(self, n: int, device: torch.device) -> None:
        def zeros(*size: int) -> Tensor:
            return torch.zeros(*size, device=device, dtype=torch.float64)

        self.count = 0
        self.sa, self.sb = zeros(n), zeros(n)
        self.saa, self.sbb = zeros(n), zeros(n)
        self.sab = zeros(n, n)

    def add(self, a: Tensor, b: Tensor) -> None:
        self.count += a.shape[0]
        self.sa += a.sum(0, dtype=torch.float64)
        self.sb += b.sum(0, dtype=torch.float64)
        self.saa += a.square().sum(0, dtype=torch.float64)
        self.sbb += b.square().sum(0, dtype=torch.float64)
        self.sab += (a.T @ b).double()

    def correlation(self) -> Tensor:
        n = max(self.count, 1)
        ma, mb = self.sa / n, self.sb / n
        cov = self.sab / n - ma[:, None] * mb[None, :]
        sa = (self.saa / n - ma.square()).clamp_min(0).sqrt()
        sb = (self.sbb / n - mb.square()).clamp_min(0).sqrt()
        return cov / (sa[:, None] * sb[None, :] + 1e-12)


def _unit_samples(x: Tensor, ax: Axis, units_last: bool = False) -> Tensor:
    """(samples, units) view of one group slice of a layer input.

    A conv's units are on axis 1 of (N, C, ...), every position a sample; a Linear's are on the LAST axis, so
    a token stream (N, T, D) gives N·T samples (``units_last``). Flattened features (Flatten -> Linear) give
    each unit ``block`` consecutive inputs, one sample each."""
    n = int(ax.length or 0)
    if units_last:
        seg = x.narrow(-1, ax.start, ax.span)
        return seg.reshape(-1, n, ax.block).transpose(1, 2).reshape(-1, n)
    seg = x.narrow(1, ax.start, ax.span)
    return seg.movedim(1, -1).reshape(-1, n)


def _is_conv1d(mod: nn.Module) -> bool:
    """GPT-2's ``Conv1D`` (transformers): a Linear whose weight is stored (in, out)."""
    w = getattr(mod, "weight", None)
    return type(mod).__name__ == "Conv1D" and isinstance(w, Tensor) and w.dim() == 2


def _points(model: nn.Module, spec: PermutationSpec) -> dict[tuple[str, str], list[tuple[str, Axis]]]:
    """``(layer, "in" | "out")`` -> group slices read there.

    A group is read at the input of every Conv/Linear (or ``Conv1D``) layer whose input axis it owns (spec
    entry ``(layer.weight, 1)``, ``Conv1D``: axis 0). A group no layer reads (the query/key units of an
    attention head, consumed by the attention product) is read where it is made: the output of the layer
    whose output axis it owns (``(layer.weight, 0)``, ``Conv1D``: axis 1)."""
    modules = dict(model.named_modules())
    points: dict[tuple[str, str], list[tuple[str, Axis]]] = {}
    made: dict[str, list[tuple[tuple[str, str], Axis]]] = {}
    for g, axes in spec.axes.items():
        for ax in axes:
            if not ax.key.endswith(".weight"):
                continue
            name = ax.key[: -len(".weight")]
            mod = modules.get(name)
            if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                in_axis, out_axis = 1, 0
            elif mod is not None and _is_conv1d(mod):
                in_axis, out_axis = 0, 1
            else:
                continue
            if ax.axis == in_axis:
                points.setdefault((name, "in"), []).append((g, ax))
            elif ax.axis == out_axis and (isinstance(mod, nn.Linear) or _is_conv1d(mod)):
                made.setdefault(g, []).append(((name, "out"), ax))
    readable = {g for items in points.values() for g, _ in items}
    for g, items in made.items():
        if g not in readable:
            for where, ax in items:
                points.setdefault(where, []).append((g, ax))
    return points


class _Recorder:
    """Forward hooks that pair each read of A's pass with the same read of B's and stream them into :class:`_Stats`.

    A's pass stores its activations; B's pass, on the same batch, pops them in the same order."""

    def __init__(self, model: nn.Module, points: dict[tuple[str, str], list[tuple[str, Axis]]]) -> None:
        self.points = points
        self.modules = dict(model.named_modules())
        self.stats: dict[tuple[str, str, str, int], _Stats] = {}
        self.captured: dict[tuple[str, str], list[Tensor]] = {}
        self.side = "a"
        # place -> (head set, kind, entry, the slots' axes there): every slot's units read together
        self.head_reads: dict[tuple[str, str], list[tuple[str, int, int, list[Axis]]]] = {}
        self.head_stats: dict[tuple[str, str, str, int, int], _Stats] = {}

    def record(self, where: tuple[str, str], value: Tensor) -> None:
        if self.side == "a":  # a copy: later in-place ops (x += ...) must not change it
            self.captured.setdefault(where, []).append(value.detach().clone())
            return
        a_val = self.captured[where].pop(0)
        mod = self.modules[where[0]]
        units_last = isinstance(mod, nn.Linear) or _is_conv1d(mod)
        for g, ax in self.points[where]:
            a, b = _unit_samples(a_val, ax, units_last).float(), _unit_samples(value, ax, units_last).float()
            key = (where[0], where[1], g, ax.start)
            if key not in self.stats:
                self.stats[key] = _Stats(int(ax.length or 0), a.device)
            self.stats[key].add(a, b)
        for name, c, k, axes in self.head_reads.get(where, ()):
            a = torch.cat([_unit_samples(a_val, ax, units_last).float() for ax in axes], dim=1)
            b = torch.cat([_unit_samples(value, ax, units_last).float() for ax in axes], dim=1)
            hkey = (where[0], where[1], name, c, k)
            if hkey not in self.head_stats:
                self.head_stats[hkey] = _Stats(a.shape[1], a.device)
            self.head_stats[hkey].add(a, b)

    def pre_hook(self, where: tuple[str, str]) -> Any:
        def pre(_mod: nn.Module, args: tuple[Any, ...]) -> None:
            self.record(where, args[0])

        return pre

    def post_hook(self, where: tuple[str, str]) -> Any:
        def post(_mod: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
            self.record(where, out)

        return post


def _readable_points(model: nn.Module, spec: PermutationSpec) -> dict[tuple[str, str], list[tuple[str, Axis]]]:
    """:func:`_points`, refusing a spec with a group whose activations cannot be read."""
    points = _points(model, spec)
    readable = {g for items in points.values() for g, _ in items}
    missing = [g for g in spec.groups if g not in readable]
    if missing:
        raise StardomainError(
            f"group {missing[0]!r} feeds no Conv/Linear layer in the spec, so its activations cannot be read; "
            "use weight matching for this model"
        )
    return points


def _collect(
    model: nn.Module,
    spec: PermutationSpec,
    points: dict[tuple[str, str], list[tuple[str, Axis]]],
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    x: Tensor,
    batch_size: int,
) -> tuple[dict[tuple[str, str, str, int], _Stats], dict[tuple[str, str, str, int, int], _Stats]]:
    """Run both states over ``x`` in eval mode and return the correlation sums of every read (and of every head
    set's slots read together)."""
    device = next(iter(state_a.values())).device
    rec = _Recorder(model, points)
    handles = [
        rec.modules[name].register_forward_pre_hook(rec.pre_hook((name, side)))
        if side == "in"
        else rec.modules[name].register_forward_hook(rec.post_hook((name, side)))
        for name, side in points
    ]
    rec.head_reads = _head_reads(spec, points)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        # a tied tensor goes in once, under its first name (functional_call refuses two values)
        sa = {k: v for k, v in state_a.items() if k not in spec.ties}
        sb = {k: v.to(device) for k, v in state_b.items() if k not in spec.ties}
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            rec.captured.clear()
            rec.side = "a"
            functional_call(model, sa, (xb,))
            rec.side = "b"
            functional_call(model, sb, (xb,))
    finally:
        for h in handles:
            h.remove()
        for m, flag in modes.items():
            m.training = flag
        rec.captured.clear()
    return rec.stats, rec.head_stats


def _head_reads(
    spec: PermutationSpec, points: dict[tuple[str, str], list[tuple[str, Axis]]]
) -> dict[tuple[str, str], list[tuple[str, int, int, list[Axis]]]]:
    """Where every slot of a head set is read: (head set, kind, entry, the slots' axes in slot order) per place."""
    out: dict[tuple[str, str], list[tuple[str, int, int, list[Axis]]]] = {}
    for where, items in points.items():
        at: dict[str, list[Axis]] = {}
        for g, ax in items:
            at.setdefault(g, []).append(ax)
        for name, slots in spec.heads.items():
            for c in range(len(slots[0])):
                per_slot = [sorted(at.get(slot[c], []), key=lambda a: (a.key, a.axis, a.start)) for slot in slots]
                if not per_slot[0] or any(len(p) != len(per_slot[0]) for p in per_slot):
                    continue
                for k in range(len(per_slot[0])):
                    out.setdefault(where, []).append((name, c, k, [p[k] for p in per_slot]))
    return out


def _assign_heads(
    spec: PermutationSpec, head_stats: dict[tuple[str, str, str, int, int], _Stats]
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Per head set: every (slot, head) pair's inner optimum on its correlation block, the heads assigned on their
    sums, each slot's inner solution for the head it gets: (permutations, mean matched correlation per group)."""
    corr: dict[tuple[str, int], Tensor] = {}
    reads: dict[tuple[str, int], int] = {}
    for (_, _, name, c, _), st in head_stats.items():
        m = st.correlation()
        corr[(name, c)] = m if (name, c) not in corr else corr[(name, c)] + m
        reads[(name, c)] = reads.get((name, c), 0) + 1
    perm: dict[str, Tensor] = {}
    per_group: dict[str, float] = {}
    for name, slots in spec.heads.items():
        n_heads = len(slots)
        total = np.zeros((n_heads, n_heads))
        inner: dict[tuple[int, int, int], tuple[np.ndarray, float]] = {}
        for c in range(len(slots[0])):
            if (name, c) not in corr:
                raise StardomainError(f"the heads of {name!r} are not read at one place; use weight matching for this model")
            mean = (corr[(name, c)] / reads[(name, c)]).cpu().numpy()
            n = spec.groups[slots[0][c]]
            for i in range(n_heads):
                for j in range(n_heads):
                    block = mean[i * n : (i + 1) * n, j * n : (j + 1) * n]
                    cols = solve_assignment(np.ascontiguousarray(block), "scipy")[0]
                    value = float(block[np.arange(n), cols].sum())
                    inner[(c, i, j)] = (cols, value)
                    total[i, j] += value
        sigma = solve_assignment(total, "scipy")[0]
        perm[name] = torch.from_numpy(sigma).long()
        for c in range(len(slots[0])):
            for i, slot in enumerate(slots):
                cols, value = inner[(c, i, int(sigma[i]))]
                perm[slot[c]] = torch.from_numpy(cols).long()
                per_group[slot[c]] = value / len(cols)
    return perm, per_group


def _assign(spec: PermutationSpec, stats: dict[tuple[str, str, str, int], _Stats]) -> tuple[dict[str, Tensor], float, dict[str, float]]:
    """One LAP per group on its mean correlation matrix: (permutations, mean matched correlation, per group)."""
    corr: dict[str, Tensor] = {}
    reads: dict[str, int] = {}
    for (_, _, g, _), st in stats.items():
        c = st.correlation()
        corr[g] = c if g not in corr else corr[g] + c
        reads[g] = reads.get(g, 0) + 1
    perm: dict[str, Tensor] = {}
    matched, units = 0.0, 0
    per_group: dict[str, float] = {}
    for g in spec.groups:
        c = corr[g] / reads[g]
        sigma = torch.from_numpy(solve_assignment(c.detach().cpu().numpy(), "scipy")[0]).long()  # float64 correlations
        perm[g] = sigma
        value = float(c[torch.arange(len(sigma)), sigma.to(c.device)].sum())
        per_group[g] = value / len(sigma)
        matched += value
        units += len(sigma)
    objective = matched / units if units else float("nan")
    return perm, objective, per_group


@states_first("activation_matching(state_a, state_b, spec=spec, model=model, x=x)")
@torch.no_grad()
def activation_matching(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    spec: PermutationSpec,
    model: nn.Module,
    x: Tensor,
    batch_size: int = 256,
) -> MatchResult:
    """Match B's units to A's by activation correlation on inputs ``x``.

    ``model`` only provides the architecture (its own weights and mode are left as they
    were); both states run through it with ``torch.func.functional_call``. Returns a
    :class:`MatchResult` whose ``objective`` is the mean matched correlation over all
    units (each group's correlation averaged over the places it is read).
    """
    t0 = time.perf_counter()
    if batch_size < 1:
        raise StardomainError(f"batch_size must be >= 1, got {batch_size}")
    if len(x) == 0:
        raise StardomainError("activation matching needs at least one input sample")
    spec.validate(state_a, "state_a")
    spec.validate(state_b, "state_b")
    points = _readable_points(model, spec)
    stats, head_stats = _collect(model, spec, points, state_a, state_b, x, batch_size)
    perm, objective, per_group = _assign(spec, stats)
    if spec.heads:  # whole heads: their groups' entries are replaced by the two-level solution
        head_perm, head_groups = _assign_heads(spec, head_stats)
        perm.update(head_perm)
        per_group.update(head_groups)
        units = sum(spec.groups.values())
        objective = sum(per_group[g] * n for g, n in spec.groups.items()) / units if units else float("nan")
    return MatchResult(
        perm=perm,
        objective=objective,
        sweeps=1,
        history=[objective],
        converged=True,
        method="activation",
        seconds=time.perf_counter() - t0,
        stats={f"corr/{g}": v for g, v in per_group.items()},
    )
