"""The package has no import circle: every module's stardomain imports (module- and function-level) form a DAG.

A function-level import hides a circle from Python but not from a reader: the layers of the code
(data -> models -> permute -> barrier -> starlight -> experiment -> cli) must only look down.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "stardomain"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(name: str, modules: set[str]) -> str | None:
    """The package module an imported name lives in (``stardomain.permute.align`` may be a function of the package)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import
                    base = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    prefix = f"{base}.{node.module}" if node.module else base
                else:
                    prefix = node.module or ""
                targets = [f"{prefix}.{a.name}" for a in node.names] + [prefix]
            for t in targets:
                dep = resolve(t, modules)
                # a package importing its own submodules is how packages re-export; a module importing its package's
                # __init__ is the usual edge; both directions between one module and its own package are fine
                if dep is None or dep == mod or mod.startswith(dep + ".") or dep.startswith(mod + "."):
                    continue
                graph[mod].add(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_known_edges():
    graph = import_graph()
    assert "stardomain.errors" in graph["stardomain.checkpoints.store"]
    assert "stardomain._util.fileio" in graph["stardomain.checkpoints.store"]
    assert "stardomain._util.progress" in graph["stardomain.training.loop"]
    # a function-level import counts too
    assert "stardomain.report.plots" in graph["stardomain.report.markdown"]


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


# The layers of the package, bottom first: a module may import its own layer and those below, never above
# (function-level imports included). docs/DESIGN.md draws the same table.
LAYERS = [
    {"errors", "defaults", "_util", "analysis"},  # what is not the science, and statistics over plain numbers
    {"data", "models"},
    {"checkpoints"},
    {"training"},
    {"permute"},
    {"barrier"},
    {"starlight"},
    {"bma"},
    {"report"},
    {"experiment"},
    {"cli"},
]
# the one sanctioned upward edge: report.md asks the study registry for each registered study's own section
UPWARD_ALLOWED = {("stardomain.report.markdown", "stardomain.experiment.study")}


def test_every_package_imports_only_its_own_layer_and_below():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    graph = import_graph()
    tops = {m.split(".")[1] for m in graph if m.count(".") >= 1}
    assert tops <= set(rank), f"packages missing from LAYERS: {sorted(tops - set(rank))}"
    upward = sorted(
        f"{a} -> {b}"
        for a, bs in graph.items()
        for b in bs
        if a.count(".") >= 1 and b.count(".") >= 1 and rank[b.split(".")[1]] > rank[a.split(".")[1]] and (a, b) not in UPWARD_ALLOWED
    )
    assert upward == [], "imports against the pipeline's layers:\n" + "\n".join(upward)
