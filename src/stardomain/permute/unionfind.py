"""Groups in the making: the union-find and channel-layout types of the spec tracer.

A *layout* is the list of unit groups along a tensor's units axis, each a segment of a
union-find node; merging nodes ties groups together (residual ``+``, tied weights), fixing a
root means its units can never be permuted (they touch the input or the logits).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Layout", "Seg", "UnionFind"]


class Seg(NamedTuple):
    node: int  # union-find id
    size: int  # units
    block: int  # indices per unit along the axis


Layout = tuple[Seg, ...]


class UnionFind:
    """Groups-in-the-making; a root that is fixed can never be permuted."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.name: list[str] = []
        self.fixed: list[str | None] = []
        self.size: list[int] = []

    def new(self, name: str, size: int, fixed: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.name.append(name)
        self.fixed.append(fixed)
        self.size.append(size)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri == rj:
            return
        lo, hi = min(ri, rj), max(ri, rj)  # the older node stays root: stable names
        self.parent[hi] = lo
        if self.fixed[lo] is None:
            self.fixed[lo] = self.fixed[hi]

    def fix(self, i: int, reason: str) -> None:
        r = self.find(i)
        if self.fixed[r] is None:
            self.fixed[r] = reason

    def is_fixed(self, i: int) -> bool:
        return self.fixed[self.find(i)] is not None
