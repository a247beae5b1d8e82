"""No function in src/stardomain has a body over MAX_BODY_LINES lines (issue 34).

A function's length is its body's: from the first statement of the body (the docstring included) to its
last line. Decorators and the signature do not count, so a click command's options, however many, cost
nothing. Every function is measured, methods and nested functions included, each on its own (a nested
function's lines count in its own length and, being lines of it, in the enclosing function's too).
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "stardomain"
MAX_BODY_LINES = 80


def body_length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the body's first statement (a docstring counts) to the function's last line."""
    end = node.end_lineno if node.end_lineno is not None else node.body[-1].lineno
    return end - node.body[0].lineno + 1


def long_functions(source: str, filename: str, limit: int = MAX_BODY_LINES) -> list[str]:
    """``file:line qualified.name length`` for every function of ``source`` whose body is over ``limit`` lines."""
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                length = body_length(child)
                if length > limit:
                    found.append(f"{filename}:{child.lineno} {name} {length}")
                visit(child, f"{name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)  # functions under if/try/with blocks are functions too

    visit(ast.parse(source, filename=filename), "")
    return found


def test_no_function_body_is_over_the_limit() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50, f"found only {len(files)} modules under {SRC}: the walk is looking in the wrong place"
    offenders = [hit for path in files for hit in long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert not offenders, (
        f"{len(offenders)} function(s) with a body over {MAX_BODY_LINES} lines; split them into named steps:\n" + "\n".join(offenders)
    )


# --- the checker itself, on synthetic sources --------------------------------------------------------


def _function(name: str, body_lines: int, indent: str = "", decorators: int = 0, params: int = 0) -> str:
    """A function with ``decorators`` one-line decorators, ``params`` parameters (one per line) and a body of
    exactly ``body_lines`` lines (a docstring line, then assignments, then a return)."""
    assert body_lines >= 2
    deco = [f"@click.option('--opt{i}', default={i}, help='option {i}')" for i in range(decorators)]
    sig = [f"def {name}("] + [f"    p{i}: int = {i}," for i in range(params)] + ["):"]
    body = ['    """Docstring."""'] + [f"    x{i} = {i}" for i in range(body_lines - 2)] + ["    return None"]
    return textwrap.indent("\n".join(deco + sig + body), indent) + "\n"


def test_a_body_of_81_lines_fires_and_80_does_not() -> None:
    src = "\n" + _function("long", 81) + "\n" + _function("fits", 80)
    assert long_functions(src, "m.py") == ["m.py:2 long 81"]
    assert long_functions(_function("fits", MAX_BODY_LINES), "m.py") == []
    assert long_functions(_function("over", MAX_BODY_LINES + 1), "m.py") == [f"m.py:1 over {MAX_BODY_LINES + 1}"]


def test_a_long_click_signature_does_not_count() -> None:
    src = "import click\n\n\n@click.command()\n" + _function("cmd", 40, decorators=120, params=120)
    tree = ast.parse(src)
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    assert fn.end_lineno - fn.lineno > 2 * MAX_BODY_LINES  # the whole def is long ...
    assert body_length(fn) == 40  # ... its body is not
    assert long_functions(src, "cli.py") == []


def test_the_docstring_counts_and_a_multi_line_last_statement_counts_whole() -> None:
    doc = "def f():\n" + '    """' + "\n" * 79 + '    """\n' + "    return (\n        1\n    )\n"
    fn = ast.parse(doc).body[0]
    assert isinstance(fn, ast.FunctionDef) and body_length(fn) == 83
    assert long_functions(doc, "d.py") == ["d.py:1 f 83"]


def test_nested_functions_and_methods_are_each_measured() -> None:
    inner = _function("inner", 81, indent="    ")
    src = "def outer():\n" + inner + "    return inner\n\n\nclass K:\n" + _function("method", 90, indent="    ")
    src += "\n\nif True:\n" + _function("guarded", 85, indent="    ")
    src += "\n\nasync def coro():\n" + _function("short", 5, indent="    ") + "    return 1\n"
    hits = long_functions(src, "n.py")
    assert [h.split()[1] for h in hits] == ["outer", "outer.<locals>.inner", "K.method", "guarded"]
    assert hits[1] == "n.py:2 outer.<locals>.inner 81"
    assert hits[0] == "n.py:1 outer 84"  # inner's two signature lines, 81 body lines, then the return: outer's body
    # a short nested function inside a short outer one: nothing
    assert long_functions("def a():\n" + _function("b", 10, indent="    ") + "    return b\n", "s.py") == []
