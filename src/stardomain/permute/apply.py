"""Applying, drawing and combining permutations of a :class:`PermutationSpec`.

Convention: ``perm[g]`` is a LongTensor ``p`` of the group's size, and applying it
*gathers*: new unit ``i`` is old unit ``p[i]`` on every axis the group owns. So
``apply_permutation(state_b, perm, spec=spec)`` is "B with its units put into A's order" when
``perm`` comes from a matching of B onto A.

Attention heads (``spec.heads``): ``perm[head set]`` (``s``) moves whole heads, slot ``i`` receiving head
``s[i]``; the group of slot ``i`` then gathers *those* units by ``perm[group]``. So new unit ``u`` of slot
``i`` is old unit ``perm[group_i][u]`` of head ``s[i]``. Composing and inverting such permutations mixes
the groups of different slots: :func:`compose` and :func:`invert` take ``spec=`` for them.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import Tensor

from stardomain.errors import StardomainError
from stardomain.permute.spec import HEADS_SUFFIX, Axis, PermutationSpec, states_first

__all__ = [
    "apply_permutation",
    "axis_index",
    "check_permutation",
    "head_sources",
    "compose",
    "identity_permutation",
    "invert",
    "is_identity",
    "l2_distance",
    "random_permutation",
]

Perm = dict[str, Tensor]


def _as_long(p: object, group: str) -> Tensor:
    t = p if isinstance(p, Tensor) else torch.as_tensor(p)
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise StardomainError(f"permutation of group {group!r} must hold integer indices, got dtype {t.dtype}")
    return t.long()


def check_permutation(spec: PermutationSpec, perm: Mapping[str, object]) -> Perm:
    """Validate ``perm`` against ``spec`` (every group, right size, a true permutation)."""
    extra = sorted(set(perm) - set(spec.groups) - set(spec.heads))
    if extra:
        raise StardomainError(f"permutation names group {extra[0]!r} that the spec does not have")
    out: Perm = {}
    for g, n in spec.groups.items():
        if g not in perm:
            raise StardomainError(f"permutation lacks group {g!r}; pass one index tensor per spec group")
        p = _as_long(perm[g], g)
        if p.shape != (n,) or not torch.equal(torch.sort(p.cpu()).values, torch.arange(n)):
            raise StardomainError(f"permutation of group {g!r} is not a permutation of 0..{n - 1}")
        out[g] = p
    for name, slots in spec.heads.items():  # optional: a permutation without it keeps the heads in place
        if name not in perm:
            continue
        p = _as_long(perm[name], name)
        if p.shape != (len(slots),) or not torch.equal(torch.sort(p.cpu()).values, torch.arange(len(slots))):
            raise StardomainError(f"head permutation {name!r} is not a permutation of its {len(slots)} head slots")
        out[name] = p
    return out


def identity_permutation(spec: PermutationSpec) -> Perm:
    """Every group in its own order, every head in its slot."""
    out = {g: torch.arange(n) for g, n in spec.groups.items()}
    out.update({name: torch.arange(len(slots)) for name, slots in spec.heads.items()})
    return out


def random_permutation(spec: PermutationSpec, generator: torch.Generator | int | None = None, *, heads: bool = False) -> Perm:
    """A uniformly random permutation per group (``generator`` may be a seed).

    With ``heads=True`` whole attention heads trade slots too (drawn after the groups, so the group
    entries are the same either way); :func:`invert` and :func:`compose` then need ``spec=``.
    """
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    out = {g: torch.randperm(n, generator=generator) for g, n in spec.groups.items()}
    if heads:
        out.update({name: torch.randperm(len(slots), generator=generator) for name, slots in spec.heads.items()})
    return out


def _moves_heads(perm: Mapping[str, Tensor]) -> bool:
    return any(g.endswith(HEADS_SUFFIX) and not torch.equal(p.cpu(), torch.arange(len(p))) for g, p in perm.items())


def _head_spec(spec: PermutationSpec | None, what: str, *perms: Mapping[str, Tensor]) -> PermutationSpec | None:
    if spec is not None and spec.heads:
        return spec
    if spec is None and any(_moves_heads(p) for p in perms):
        raise StardomainError(f"{what}: the permutation moves whole attention heads; pass spec= (the groups of a slot depend on it)")
    return None


def compose(outer: Mapping[str, Tensor], inner: Mapping[str, Tensor], *, spec: PermutationSpec | None = None) -> Perm:
    """``compose(p, q)`` applies ``q`` first, then ``p``: apply(compose(p, q), s) == apply(p, apply(q, s)).

    Where ``p`` moves whole heads (``spec.heads``), pass ``spec``: slot ``i`` of the result holds head
    ``q_heads[p_heads[i]]``, reordered by ``q[group of slot p_heads[i]][p[group of slot i]]``."""
    out = {g: inner[g][outer[g].to(inner[g].device)] if g in inner else outer[g] for g in outer}  # (no head entry: in place)
    out.update({g: p for g, p in inner.items() if g not in outer})
    spec = _head_spec(spec, "compose", outer)
    if spec is None:
        return out
    for name, slots in spec.heads.items():
        if name not in outer:
            continue
        s = outer[name].cpu()
        for i, slot in enumerate(slots):
            for c, g in enumerate(slot):
                src = slots[int(s[i])][c]
                out[g] = inner[src][outer[g].to(inner[src].device)]
    return out


def invert(perm: Mapping[str, Tensor], *, spec: PermutationSpec | None = None) -> Perm:
    """The permutation that undoes ``perm`` (``spec`` needed where ``perm`` moves whole heads)."""
    out = {g: torch.argsort(p) for g, p in perm.items()}
    spec = _head_spec(spec, "invert", perm)
    if spec is None:
        return out
    for name, slots in spec.heads.items():
        if name not in perm:
            continue
        back = out[name]  # slot i of the inverse receives head back[i]; its units undo what slot back[i] did
        for i, slot in enumerate(slots):
            for c, g in enumerate(slot):
                out[g] = torch.argsort(perm[slots[int(back[i])][c]])
    return out


def head_sources(spec: PermutationSpec, perm: Mapping[str, Tensor]) -> dict[tuple[str, Axis], int]:
    """``(group, entry) -> start of the entry its units come from`` for every entry of a head slot that receives
    another head under ``perm`` (entries of heads that stay are left out)."""
    out: dict[tuple[str, Axis], int] = {}
    for name, slots in spec.heads.items():
        if name not in perm:
            continue
        s = perm[name].cpu().tolist()
        for i, slot in enumerate(slots):
            if s[i] == i:
                continue
            for c, g in enumerate(slot):
                for ax, src in zip(spec.sorted_axes(g), spec.sorted_axes(slots[s[i]][c])):
                    out[(g, ax)] = src.start
    return out


def is_identity(perm: Mapping[str, Tensor]) -> bool:
    """True when no group is reordered."""
    return all(torch.equal(p.cpu(), torch.arange(len(p))) for p in perm.values())


def axis_index(size: int, entries: Iterable[tuple[Axis, Tensor] | tuple[Axis, Tensor, int]]) -> Tensor:
    """Gather index for one tensor axis that applies every group slice on it at once.

    An entry ``(axis, p, source)`` fills the slice of ``axis`` from the slice starting at ``source`` (a whole
    head moving to another slot); ``(axis, p)`` from its own slice."""
    entries = list(entries)
    if len(entries) == 1:
        ax, p = entries[0][0], entries[0][1]
        if ax.start == 0 and ax.block == 1 and ax.length == size and (len(entries[0]) == 2 or entries[0][2] == 0):
            return p
    idx = torch.arange(size, device=entries[0][1].device)
    for item in entries:
        ax, p = item[0], item[1]
        src = item[2] if len(item) > 2 else ax.start
        if ax.block == 1:
            seg = p + src
        else:
            seg = (src + p[:, None] * ax.block + torch.arange(ax.block, device=p.device)).reshape(-1)
        idx[ax.start : ax.start + ax.span] = seg
    return idx


@states_first("apply_permutation(state, perm, spec=spec)")
def apply_permutation(state: Mapping[str, Tensor], perm: Mapping[str, object], *, spec: PermutationSpec) -> dict[str, Tensor]:
    """A new state dict with every spec'd axis of ``state`` reordered by ``perm``.

    The input is never modified; tensors the spec does not mention are passed through
    as the same objects (shared, untouched), permuted tensors are fresh copies. A state
    without the spec's buffers (parameters only) is fine; their entries are skipped.
    """
    spec.validate(state, require_buffers=False)
    perm = check_permutation(spec, perm)
    sources = head_sources(spec, perm) if spec.heads else {}
    out = dict(state)
    for key, items in spec.by_key().items():
        if key not in state:
            continue
        t = state[key]
        per_axis: dict[int, list[tuple[Axis, Tensor] | tuple[Axis, Tensor, int]]] = {}
        for g, ax in items:
            p = perm[g].to(t.device)
            per_axis.setdefault(ax.axis % t.dim(), []).append((ax, p, sources[(g, ax)]) if (g, ax) in sources else (ax, p))
        for axis, entries in per_axis.items():
            t = t.index_select(axis, axis_index(t.shape[axis], entries))
        out[key] = t
    for alias, key in spec.ties.items():  # a tied tensor stays one tensor under all its names
        if alias in out and key in out:
            out[alias] = out[key]
    return out


def _default_keys(state: Mapping[str, Tensor]) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point() and not k.endswith((".running_mean", ".running_var"))]


def l2_distance(state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor], keys: Iterable[str] | None = None) -> float:
    """Euclidean distance between two weight vectors, accumulated in float64.

    ``keys`` should be the parameter names (``[k for k, _ in model.named_parameters()]``).
    Without it every floating-point entry counts except BatchNorm running statistics
    (``*.running_mean``/``*.running_var``), i.e. parameters for the registry models.
    """
    keys = list(keys) if keys is not None else _default_keys(state_a)
    total = 0.0
    for k in keys:
        if k not in state_b:
            raise StardomainError(f"state_b lacks {k!r}; both states must come from the same architecture")
        a, b = state_a[k], state_b[k]
        if a.shape != b.shape:
            raise StardomainError(f"{k!r} has shape {tuple(a.shape)} in state_a but {tuple(b.shape)} in state_b")
        total += float((a.double() - b.double().to(a.device)).square().sum())
    return math.sqrt(total)
