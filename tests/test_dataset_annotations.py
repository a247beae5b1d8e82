"""Every dataset parameter is typed with a protocol of :mod:`stardomain.data.protocol` (issue 34, typed seams).

A parameter (or a protocol's attribute) named ``dataset`` or ``ds`` annotated ``Any`` -- or not annotated at
all -- hides what the code reads from a dataset from mypy; ``SplitData`` (a dataset, in memory or streamed),
``Splits`` (whole splits as tensors), ``AnyData`` (either) or ``Data`` (either, with its name and shape) state it,
so ``mypy src/stardomain`` checks every use.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "stardomain"
NAMES = ("dataset", "ds")

# "path:qualified.name:parameter" (or "path:Class.attribute"), relative to src/stardomain.
# being rewritten, issue 34: these files are restructured by other hands; their dataset parameters get a protocol then.
ALLOWED: set[str] = set()


def _is_any(node: ast.expr | None) -> bool:
    """Whether an annotation is ``Any`` (or has ``Any`` as one member of a union / Optional), or missing."""
    if node is None:
        return True
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a string annotation: parse it
        return _is_any(ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.Name):
        return node.id == "Any"
    if isinstance(node, ast.Attribute):
        return node.attr == "Any"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_any(node.left) or _is_any(node.right)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ("Optional", "Union"):
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        return any(_is_any(i) for i in items)
    return False


def _untyped(tree: ast.Module) -> list[str]:
    """``qualified.name:parameter`` of every dataset parameter typed Any, and ``Class.attribute`` of every such attribute."""
    found: list[str] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = child.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []), *([a.kwarg] if a.kwarg else [])]
                where = ".".join([*scope, child.name])
                found.extend(f"{where}:{p.arg}" for p in params if p.arg in NAMES and _is_any(p.annotation))
                visit(child, [*scope, child.name])
            elif isinstance(child, ast.ClassDef):
                for stmt in child.body:
                    if (
                        isinstance(stmt, ast.AnnAssign)
                        and isinstance(stmt.target, ast.Name)
                        and stmt.target.id in NAMES
                        and _is_any(stmt.annotation)
                    ):
                        found.append(".".join([*scope, child.name, stmt.target.id]))
                visit(child, [*scope, child.name])
            else:
                visit(child, scope)

    visit(tree, [])
    return found


def _all_untyped() -> set[str]:
    out = set()
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        out.update(f"{rel}:{name}" for name in _untyped(ast.parse(path.read_text(), filename=str(path))))
    return out


def test_no_dataset_parameter_is_typed_any():
    untyped = _all_untyped() - ALLOWED
    assert not untyped, (
        "dataset parameters typed Any (or untyped): annotate them with a protocol of stardomain.data.protocol "
        f"(SplitData, Splits, AnyData or Data): {sorted(untyped)}"
    )


def test_the_allowed_list_holds_only_what_is_still_untyped():
    """An entry whose parameter got its protocol goes from the list (so the list only shrinks)."""
    assert not ALLOWED - _all_untyped(), f"typed now, remove from ALLOWED: {sorted(ALLOWED - _all_untyped())}"


def test_the_check_sees_any():
    tree = ast.parse(
        "from typing import Any, Optional\n"
        "def f(dataset: Any, ds: 'Any | None' = None, other: Any = 0): ...\n"
        "def g(ds): ...\n"
        "def h(dataset: Optional[Any]): ...\n"
        "def ok(dataset: SplitData, ds: Data | None = None): ...\n"
        "class P:\n    dataset: Any\n    def m(self, *, ds: typing.Any): ...\n"
    )
    assert _untyped(tree) == ["f:dataset", "f:ds", "g:ds", "h:dataset", "P.dataset", "P.m:ds"]
