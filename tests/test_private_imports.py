"""No private name crosses a module boundary inside stardomain (issue 34, "typed seams").

The rule, for every module under ``src/stardomain``: a name with one leading underscore (``_name``, not ``__dunder__``)
is used only by the module that defines it. So no

- ``from stardomain.x.y import _name`` (relative imports included, ``from .y import _name``), and
- ``import stardomain.x.y as m`` / ``from stardomain.x import y`` followed by ``m._name`` / ``y._name``.

There is no exception, a package's own ``__init__`` included: what another module needs is public (no underscore) in
the module where it belongs. The private package ``stardomain._util`` is the shared toolbox: its modules are
imported by path (``from stardomain._util.fileio import atomic_write``), their names public. Tests may reach into a
module's privates to test it; this rule is about the package's own seams.
"""

from __future__ import annotations

import ast
from pathlib import Path

from paths import REPO

SRC = REPO / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` reads from (relative levels resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every cross-module use of a private stardomain name in ``source`` (the code of ``module``), one line each."""
    tree = ast.parse(source)
    found: list[str] = []
    aliases: dict[str, str] = {}  # local name -> the stardomain module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            origin = _resolve(node, module, is_package)
            if origin.split(".")[0] != "stardomain" or origin == module:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"{module}:{node.lineno}: from {origin} import {alias.name}")
                aliases[alias.asname or alias.name] = f"{origin}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "stardomain":
                    aliases[alias.asname or "stardomain"] = alias.name if alias.asname else "stardomain"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                found.append(f"{module}:{node.lineno}: {value.id}.{'.'.join(reversed(chain))} ({aliases[value.id]})")
    return found


def test_no_private_name_crosses_a_module_boundary():
    modules = sorted(SRC.joinpath("stardomain").rglob("*.py"))
    assert len(modules) > 100  # the walk found the package
    offenders = [use for path in modules for use in private_uses(path.read_text(), _module_name(path), path.name == "__init__.py")]
    assert not offenders, "private names used outside their module (make them public where they belong):\n" + "\n".join(offenders)


def test_the_check_sees_each_kind_of_use():
    """The test above would pass vacuously on a checker that never fires: it fires on each form, and only there."""
    code = """
from stardomain.data.raw import _hidden, public
from .sibling import _relative
from stardomain.checkpoints import plain
import stardomain.models.hf as hf
import stardomain
x = plain._STATE, hf._helper(), stardomain.models._private, plain.public, _own
class C:
    def m(self):
        return self._fine
"""
    found = private_uses(code, "stardomain.data.cifar")
    assert sorted(f.split(": ", 1)[1] for f in found) == [
        "from stardomain.data.raw import _hidden",
        "from stardomain.data.sibling import _relative",
        "hf._helper (stardomain.models.hf)",
        "plain._STATE (stardomain.checkpoints.plain)",
        "stardomain.models._private (stardomain)",
    ]
    assert private_uses("from stardomain.data.raw import _hidden\n", "stardomain.data.raw") == []  # its own module
    in_package = private_uses("from .raw import _x\n", "stardomain.data", is_package=True)  # an __init__ re-exporting
    assert in_package == ["stardomain.data:1: from stardomain.data.raw import _x"]
