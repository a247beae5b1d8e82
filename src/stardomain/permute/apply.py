"""Applying, drawing and combining permutations of a :class:`PermutationSpec`.

Convention: ``perm[g]`` is a LongTensor ``p`` of the group's size, and applying it
*gathers*: new unit ``i`` is old unit ``p[i]`` on every axis the group owns. So
``apply_permutation(state_b, perm, spec=spec)`` is "B with its units put into A's order" when
``perm`` comes from a matching of B onto A.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import Tensor

from stardomain.errors import StardomainError
from stardomain.permute.spec import Axis, PermutationSpec, states_first

__all__ = [
    "apply_permutation",
    "axis_index",
    "check_permutation",
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
    extra = sorted(set(perm) - set(spec.groups))
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
    return out


def identity_permutation(spec: PermutationSpec) -> Perm:
    """Every group in its own order."""
    return {g: torch.arange(n) for g, n in spec.groups.items()}


def random_permutation(spec: PermutationSpec, generator: torch.Generator | int | None = None) -> Perm:
    """A uniformly random permutation per group (``generator`` may be a seed)."""
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    return {g: torch.randperm(n, generator=generator) for g, n in spec.groups.items()}


def compose(outer: Mapping[str, Tensor], inner: Mapping[str, Tensor]) -> Perm:
    """``compose(p, q)`` applies ``q`` first, then ``p``: apply(compose(p, q), s) == apply(p, apply(q, s))."""
    return {g: inner[g][outer[g].to(inner[g].device)] for g in outer}


def invert(perm: Mapping[str, Tensor]) -> Perm:
    """The permutation that undoes ``perm``."""
    return {g: torch.argsort(p) for g, p in perm.items()}


def is_identity(perm: Mapping[str, Tensor]) -> bool:
    """True when no group is reordered."""
    return all(torch.equal(p.cpu(), torch.arange(len(p))) for p in perm.values())


def axis_index(size: int, entries: Iterable[tuple[Axis, Tensor]]) -> Tensor:
    """Gather index for one tensor axis that applies every group slice on it at once."""
    entries = list(entries)
    if len(entries) == 1:
        ax, p = entries[0]
        if ax.start == 0 and ax.block == 1 and ax.length == size:
            return p
    idx = torch.arange(size, device=entries[0][1].device)
    for ax, p in entries:
        if ax.block == 1:
            seg = p + ax.start
        else:
            seg = (ax.start + p[:, None] * ax.block + torch.arange(ax.block, device=p.device)).reshape(-1)
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
    out = dict(state)
    for key, items in spec.by_key().items():
        if key not in state:
            continue
        t = state[key]
        per_axis: dict[int, list[tuple[Axis, Tensor]]] = {}
        for g, ax in items:
            per_axis.setdefault(ax.axis % t.dim(), []).append((ax, perm[g].to(t.device)))
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
