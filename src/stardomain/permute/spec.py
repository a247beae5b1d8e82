"""Permutation specs: which tensor axes each hidden-unit group permutes, and their validation.

A network is invariant under reordering the hidden units of a layer as long as every
tensor axis that indexes those units is reordered the same way. A
:class:`PermutationSpec` lists, per *group* of units, those axes. Groups are merged
(union-find) where the architecture ties orders together (residual ``+``), split into
slices where ``torch.cat`` builds one axis out of several groups (DenseNet), and dropped
("fixed") where units touch the input or the logits, whose order is meaningful.
:func:`~stardomain.permute.trace_spec` (in :mod:`stardomain.permute.trace`) derives a
spec from a model; this module only holds the data and checks it against tensors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, TypeVar

from torch import Tensor

from stardomain.errors import StardomainError

__all__ = ["HEADS_SUFFIX", "Axis", "PermutationSpec", "states_first"]

HEADS_SUFFIX = "/heads"  # every head set's name ends so; its entry in a permutation moves whole heads

F = TypeVar("F", bound=Callable[..., Any])


class Axis(NamedTuple):
    """One permuted slice of one tensor axis.

    Unit ``u`` of the group occupies indices ``start + u*block ... start + (u+1)*block - 1``
    of axis ``axis`` of ``state[key]``; the group has ``length`` units. ``block > 1`` arises
    when a (N, C, H, W) map is flattened channel-major before a Linear layer.
    """

    key: str
    axis: int
    start: int = 0
    length: int | None = None  # None: the group size (filled in by PermutationSpec)
    block: int = 1

    @property
    def span(self) -> int:
        """Number of axis indices covered."""
        return int(self.length or 0) * self.block


def _as_axis(entry: Any, size: int, group: str) -> Axis:
    if isinstance(entry, Axis):
        ax = entry
    elif isinstance(entry, (tuple, list)) and 2 <= len(entry) <= 5:
        ax = Axis(*entry)
    else:
        raise StardomainError(f"permutation spec entry {entry!r} of group {group!r} must be (key, axis[, start, length, block])")
    length = size if ax.length is None else int(ax.length)
    if length != size:
        raise StardomainError(
            f"spec entry {ax.key!r} axis {ax.axis} of group {group!r} has length {length} but the group has "
            f"{size} units; give length equal to the group size"
        )
    if ax.block < 1 or ax.start < 0:
        raise StardomainError(f"spec entry {tuple(ax)!r} of group {group!r}: start must be >= 0 and block >= 1")
    return Axis(str(ax.key), int(ax.axis), int(ax.start), length, int(ax.block))


@dataclass
class PermutationSpec:
    """Hidden-unit groups and the tensor axes each one permutes.

    ``groups`` maps a group name to its number of units; ``axes`` maps it to the
    :class:`Axis` entries (plain ``(key, axis)`` tuples are accepted and mean the whole
    axis). ``buffers`` names state keys that are buffers (BN running stats): they are
    permuted by :func:`~stardomain.permute.apply_permutation` but left out of the
    weight-matching objective. ``params`` (parameter key -> numel) and ``fixed`` (layer ->
    reason its units cannot be permuted) are filled by :func:`trace_spec` for reporting, and
    ``streams``: every group of hidden units the tracer found, permuted or not, with its size,
    kind (``residual`` stream, attention ``heads``, ``hidden`` units of one layer) and the reason
    it is fixed.
    ``ties`` maps every further name of a tied tensor (``fc3.weight = fc2.weight``) to the
    one name the axes use; permuting writes the same new tensor under every name.

    ``heads`` is the second level of attention: head set name (ending in ``/heads``) -> its head
    *slots*, each the list of groups one head owns (its q/k units, its v/out units), in the same order
    for every slot. A permutation may then hold, under the head set's name, a LongTensor ``s`` over
    the slots: slot ``i`` receives the whole of head ``s[i]`` (every tensor slice its groups own), and
    the group of slot ``i`` then reorders those units by its own entry. Corresponding groups of two
    slots own the same tensors and axes (their entries sorted by (key, axis, start) correspond one to
    one). A group of one unit with ``block`` = head size is a head whose units stay fixed inside it
    (rotary q/k): the head still moves. A permutation without a head set's entry keeps the heads in place.
    ``held`` lists, per hidden-unit stream the spec leaves unpermuted (name as in ``streams``), the tensor
    axes it occupies: ``summary()`` counts them against ``covered_share``.
    """

    groups: dict[str, int]
    axes: dict[str, list[Axis]]
    buffers: frozenset[str] = frozenset()
    params: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    ties: dict[str, str] = field(default_factory=dict)  # alias key -> key of the same (tied) tensor
    # unit group (permuted or fixed) -> {"units", "permuted", "residual", "kind", "reason"}, filled by trace_spec
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    # head set name -> slots -> the groups of one head (attention heads that may trade places as wholes)
    heads: dict[str, list[list[str]]] = field(default_factory=dict)
    # unpermuted stream -> the tensor axes it occupies (for covered_share), filled by trace_spec
    held: dict[str, list[Axis]] = field(default_factory=dict)
    # which graph trace_spec walked: "fx" or "export" ("auto" tries fx, then export); "" for a hand-written spec
    capture: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.groups = {str(g): int(n) for g, n in dict(self.groups).items()}
        unknown = sorted(set(self.axes) - set(self.groups))
        if unknown:
            raise StardomainError(f"spec axes name group {unknown[0]!r} that is missing from groups")
        for g, n in self.groups.items():
            if n < 1:
                raise StardomainError(f"group {g!r} has size {n}; groups need at least one unit")
        self.axes = {g: [_as_axis(e, self.groups[g], g) for e in self.axes.get(g, [])] for g in self.groups}
        self.buffers = frozenset(self.buffers)
        seen: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
        for g, entries in self.axes.items():
            for ax in entries:
                seen.setdefault((ax.key, ax.axis), []).append((ax.start, ax.start + ax.span, g))
        for (key, axis), spans in seen.items():
            spans.sort()
            for (_s0, e0, g0), (s1, _, g1) in zip(spans, spans[1:]):
                if s1 < e0:
                    raise StardomainError(
                        f"spec groups {g0!r} and {g1!r} overlap on {key!r} axis {axis}; each index may belong to one group only"
                    )
        self.heads = {str(h): [[str(g) for g in slot] for slot in slots] for h, slots in dict(self.heads).items()}
        self.held = {str(k): [ax if isinstance(ax, Axis) else Axis(*ax) for ax in v] for k, v in dict(self.held).items()}
        self._check_heads()

    def _check_heads(self) -> None:
        """Every head set: slots of the same shape, each group in one slot only, corresponding entries alike."""
        seen: dict[str, str] = {}
        for name, slots in self.heads.items():
            if not name.endswith(HEADS_SUFFIX) or name in self.groups:
                raise StardomainError(f"head set {name!r} must be named '...{HEADS_SUFFIX}' and differ from every group name")
            if len(slots) < 2 or len({len(s) for s in slots}) != 1 or not slots[0]:
                raise StardomainError(f"head set {name!r} needs at least two slots, each with the same number of groups")
            for slot in slots:
                for g in slot:
                    if g not in self.groups:
                        raise StardomainError(f"head set {name!r} names group {g!r} that is missing from groups")
                    if g in seen:
                        raise StardomainError(f"group {g!r} belongs to two head slots ({seen[g]!r} and {name!r})")
                    seen[g] = name
            for c in range(len(slots[0])):
                first = slots[0][c]
                shape = [(a.key, a.axis, a.block) for a in self.sorted_axes(first)]
                for slot in slots[1:]:
                    g = slot[c]
                    if self.groups[g] != self.groups[first] or [(a.key, a.axis, a.block) for a in self.sorted_axes(g)] != shape:
                        raise StardomainError(
                            f"head set {name!r}: group {g!r} does not own the same tensors and axes as {first!r}, "
                            "so whole heads cannot trade places"
                        )

    # ------------------------------------------------------------------ queries
    def sorted_axes(self, group: str) -> list[Axis]:
        """A group's entries in (key, axis, start) order: how the entries of two head slots correspond."""
        return sorted(self.axes[group], key=lambda a: (a.key, a.axis, a.start))

    def head_of(self) -> dict[str, tuple[str, int, int]]:
        """group -> (head set, slot, position in the slot) for every group that belongs to a head slot."""
        return {g: (name, i, c) for name, slots in self.heads.items() for i, slot in enumerate(slots) for c, g in enumerate(slot)}

    def keys(self) -> list[str]:
        """State keys with at least one permuted axis, in first-mention order."""
        out: dict[str, None] = {}
        for entries in self.axes.values():
            for ax in entries:
                out.setdefault(ax.key, None)
        return list(out)

    def by_key(self) -> dict[str, list[tuple[str, Axis]]]:
        """key -> [(group, Axis), ...]: what :func:`apply_permutation` needs per tensor."""
        out: dict[str, list[tuple[str, Axis]]] = {}
        for g, entries in self.axes.items():
            for ax in entries:
                out.setdefault(ax.key, []).append((g, ax))
        return out

    def validate(self, state: Mapping[str, Tensor], what: str = "state", require_buffers: bool = True) -> None:
        """Check every entry against tensor shapes, so a mismatched checkpoint fails clearly.

        With ``require_buffers=False`` a state without the spec's buffers (a parameters-only
        dict) is accepted; a missing parameter is always an error.
        """
        for g, entries in self.axes.items():
            for ax in entries:
                if ax.key not in state and not require_buffers and ax.key in self.buffers:
                    continue
                if ax.key not in state:
                    raise StardomainError(
                        f"{what} has no tensor {ax.key!r} (needed by permutation group {g!r}); "
                        "was the spec traced from the same architecture?"
                    )
                t = state[ax.key]
                if not -t.dim() <= ax.axis < t.dim():
                    raise StardomainError(f"{what}[{ax.key!r}] has {t.dim()} dims; group {g!r} permutes axis {ax.axis}")
                size = t.shape[ax.axis]
                if ax.start + ax.span > size:
                    raise StardomainError(
                        f"{what}[{ax.key!r}] axis {ax.axis} has size {size} but group {g!r} covers indices "
                        f"{ax.start}..{ax.start + ax.span - 1}; the checkpoint does not match the spec"
                    )

    def require_coverage(self, what: str, allow: bool = False) -> None:
        """Refuse to run ``what`` with a spec that permutes nothing, unless the user allowed it.

        Matching under such a spec "converges" at once and reports a meaningless objective;
        the user must ask for it knowingly.
        """
        info = self.summary()
        if allow or (self.groups and (not self.params or info["covered_params"] != 0)):
            return
        why = next(iter(self.fixed.items()), None)
        detail = f"; first fixed layer {why[0]!r}: {why[1]}" if why else ""
        raise StardomainError(
            f"{what}: the permutation spec permutes no parameters (0% covered{detail}); nothing would be aligned. "
            "Run `stardomain spec` to see why, or pass --allow-unpermuted (YAML: allow_unpermuted: true; "
            "Python: allow_unpermuted=True) to go on anyway"
        )

    def summary(self, state: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        """Counts for reports: groups and sizes, parameters covered, fixed layers.

        Coverage counts *parameters* (not buffers) with at least one permuted axis. It uses
        the parameter list recorded by :func:`trace_spec`; for a hand-written spec pass a
        ``state`` (every non-buffer floating tensor then counts as a parameter).
        """
        if self.params:
            params = dict(self.params)
        elif state is not None:
            params = {k: v.numel() for k, v in state.items() if v.is_floating_point() and k not in self.buffers}
        else:
            params = {}
        covered_keys = set(self.keys()) & set(params)
        shares = self._param_shares(covered_keys)
        if all(v == 1.0 for v in shares.values()):
            covered = sum(params[k] for k in covered_keys)
        else:  # a parameter counts by the share of its hidden-unit axes that a permutation reorders
            covered = round(sum(params[k] * shares[k] for k in covered_keys))
        total = sum(params.values())
        kinds: dict[str, list[int]] = {}  # kind -> [permuted units, units]
        for info in self.streams.values():
            if info.get("kind") == "output":  # logits are not hidden units
                continue
            n = int(info.get("units", 0))
            k = kinds.setdefault(str(info.get("kind", "hidden")), [0, 0])
            k[0] += n if info.get("permuted") else 0
            k[1] += n
        units = sum(k[1] for k in kinds.values())
        return {
            "n_groups": len(self.groups),
            "group_sizes": dict(self.groups),
            "n_units": sum(self.groups.values()),
            "n_tensors": len(self.keys()),
            "covered_params": covered,
            "total_params": total,
            "covered_share": covered / total if total else float("nan"),
            "fixed_layers": dict(self.fixed),
            # units (not parameters) permuted, overall and per kind of stream (residual, heads, hidden)
            "unit_share": sum(k[0] for k in kinds.values()) / units if units else float("nan"),
            "stream_share": {kind: p / n for kind, (p, n) in kinds.items() if n},
            "residual_fixed": [g for g, info in self.streams.items() if info.get("residual") and not info.get("permuted")],
            "head_sets": {name: len(slots) for name, slots in self.heads.items()},
            "warnings": self.warnings(),
        }

    def _param_shares(self, keys: set[str]) -> dict[str, float]:
        """key -> share of its hidden-unit axes (index by index) that permutations reorder. Axes of a stream left in
        place (``held``) and the q/k rows of heads whose units stay fixed inside them (``locked``) count against it."""
        locked = {g for g, info in self.streams.items() if info.get("locked")}
        spans: dict[tuple[str, int], list[int]] = {}  # (key, axis) -> [reordered indices, indices left in place]
        for g, entries in self.axes.items():
            for ax in entries:
                if ax.key in keys:
                    spans.setdefault((ax.key, ax.axis), [0, 0])[1 if g in locked else 0] += ax.span
        for entries in self.held.values():
            for ax in entries:
                if ax.key in keys:
                    spans.setdefault((ax.key, ax.axis), [0, 0])[1] += ax.span
        per_key: dict[str, list[float]] = {}
        for (key, _), (moved, kept) in spans.items():
            per_key.setdefault(key, []).append(moved / (moved + kept) if moved + kept else 1.0)
        return {k: (sum(per_key[k]) / len(per_key[k]) if per_key.get(k) else 1.0) for k in keys}

    def warnings(self) -> list[str]:
        """What the spec leaves in place that a user should know before trusting an alignment, each in words."""
        out: list[str] = []
        for g, info in self.streams.items():
            if info.get("residual") and not info.get("permuted"):
                out.append(
                    f"the residual stream {g!r} ({info.get('units')} units) is not permuted: {info.get('reason') or 'fixed'}; "
                    "alignment only moves the units inside the blocks"
                )
        for where, why in self.fixed.items():
            if where.endswith(HEADS_SUFFIX):
                out.append(f"the attention heads of {where.removesuffix(HEADS_SUFFIX)!r} stay in their slots: {why}")
        locked: dict[str, list[str]] = {}
        held: dict[str, list[str]] = {}
        for g, info in self.streams.items():
            if info.get("kind") != "heads":
                continue
            if info.get("locked"):
                locked.setdefault(str(info.get("reason")), []).append(g)
            elif not info.get("permuted"):
                held.setdefault(str(info.get("reason")), []).append(g)
        for why, gs in locked.items():
            out.append(f"{len(gs)} attention head group(s) keep their units in place inside the head ({gs[0]!r}, ...): {why}")
        for why, gs in held.items():
            out.append(f"{len(gs)} attention head group(s) are not permuted at all ({gs[0]!r}, ...): {why}")
        return out


def states_first(new_call: str) -> Callable[[F], F]:
    """Decorator for two-model functions: refuse a call in the old argument order (spec or model first, before
    the 2026-12-04 layout; docs/MIGRATION.md, README's Python API) in one line.

    Every two-model function takes the two states (or one state and a permutation) first and
    the spec and options as keywords. The old order passed the spec (or the model) first; a
    positional :class:`PermutationSpec` or ``nn.Module`` is therefore always a mistake, and
    is answered with one line giving the new order instead of an ``AttributeError`` later.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for i, a in enumerate(args):
                if isinstance(a, PermutationSpec) or _is_module(a):
                    raise StardomainError(
                        f"{fn.__name__} got a {type(a).__name__} as positional argument {i + 1}; the argument "
                        f"order is {new_call} (states first, spec and model as keywords)"
                    )
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _is_module(obj: Any) -> bool:
    from torch import nn

    return isinstance(obj, nn.Module)
