"""What the rule mixins of the spec tracer may use: the tracer's state and helpers, declared once.

:class:`~stardomain.permute.layers.ModuleRules`, :class:`~stardomain.permute.heads.HeadRules`,
:class:`~stardomain.permute.aten.AtenRules` and :class:`~stardomain.permute.functions.FunctionRules`
are mixed into :class:`~stardomain.permute.tracer.Tracer`; declaring here the attributes and
methods they share lets a type checker follow them (at run time the tracer's own definitions
answer, this class adds nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from torch import nn

from stardomain.permute.spec import Axis
from stardomain.permute.unionfind import Layout, UnionFind

__all__ = ["TracerState"]


class TracerState:
    """Attributes (and, for type checkers, methods) of the tracer that its rule mixins read and write."""

    model: nn.Module
    strict: bool
    uf: UnionFind
    entries: list[tuple[int, Axis]]
    layout: dict[str, Layout | None]
    shape: dict[str, tuple[int, ...] | None]
    module_in: dict[str, Layout]
    module_out: dict[str, Layout]
    producers: dict[int, str]
    notes: dict[str, str]
    state_keys: set[str]
    ties: dict[str, str]
    slots: dict[tuple[str, int], Layout]
    cdim: dict[str, int]
    param_nodes: dict[str, str]
    tuples: dict[str, list[tuple[Layout, int] | None]]
    heads: dict[str, int]
    param_shape: dict[str, tuple[int, ...]]
    placeholders: dict[str, str]
    residual: set[int]
    head_tok: dict[str, tuple[int, ...]]
    toks: UnionFind
    tok_family: list[int]
    families: UnionFind
    tok_nodes: dict[int, set[int]]
    locks: dict[int, tuple[str, int]]
    repeat: dict[str, int]

    if TYPE_CHECKING:  # defined by Tracer and the mixins

        def cd(self, name: str) -> int: ...

        def fixed_layout(self, shape: tuple[int, ...] | None, reason: str, name: str, size: int | None = None) -> Layout: ...

        def new_units(self, producer: str, n: int) -> Layout: ...

        def fix_layout(self, layout: Layout | None, reason: str) -> None: ...

        def is_fixed(self, layout: Layout) -> bool: ...

        def union(self, a: Layout, b: Layout, where: str) -> Layout: ...

        def add_entries(self, key: str, axis: int, layout: Layout, module: str) -> None: ...

        def unsupported(self, node: Any, why: str, inputs: Sequence[Layout]) -> Layout: ...

        def check_width(self, layout: Layout, expected: int, module: str, what: str) -> None: ...

        def describe(self, node: Any) -> str: ...

        @staticmethod
        def total(layout: Layout) -> int: ...

        def is_aten(self, node: Any) -> bool: ...

        def visit_aten(self, node: Any, name: str, inputs: list[tuple[Any, Layout]], shape: tuple[int, ...]) -> Layout | None: ...

        def transpose(self, node: Any, lay: Layout, shape: tuple[int, ...]) -> Layout | None: ...

        def sdpa(self, node: Any, shape: tuple[int, ...]) -> Layout | None: ...

        def pass_shape(self, node: Any, lay: Layout, in_shape: Any, shape: tuple[int, ...]) -> Layout: ...

        def reshape(self, node: Any, lay: Layout, in_shape: Any, out: tuple[int, ...]) -> Layout: ...

        def refine(self, nid: int, parts: int, label: str = "g") -> Layout: ...

        def split_heads(self, node: Any, lay: Layout, in_shape: tuple[int, ...], out: tuple[int, ...]) -> Layout: ...

        def merge_heads(self, node: Any, lay: Layout, in_shape: tuple[int, ...], out: tuple[int, ...]) -> Layout: ...

        def matmul(self, node: Any, shape: tuple[int, ...]) -> Layout | None: ...

        def new_heads(self, name: str, lay: Layout) -> None: ...

        def tie_heads(self, a: str, b: str) -> None: ...

        def lock(self, lay: Layout, reason: str) -> Layout: ...

        def cat_heads(self, node: Any, parts: list[Layout], shape: tuple[int, ...]) -> Layout: ...

        def repeat_heads(self, node: Any, src: Any, lay: Layout, in_shape: tuple[int, ...], shape: tuple[int, ...]) -> Layout | None: ...

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
        ) -> Layout: ...

        def lookup(self, node: Any, target: str, weight: str, dim: int, ids: list[Layout], shape: tuple[int, ...] | None) -> Layout: ...

        def per_channel_keys(self, target: str, lay: Layout, keys: Iterable[str]) -> Layout: ...
