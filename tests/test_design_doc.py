"""docs/DESIGN.md names only what the code has, so the design cannot drift from the code silently.

Every ``stardomain.…`` dotted name in backticks must import (a module) or resolve (an attribute of one), every
package path in backticks (``experiment/units.py``, ``src/stardomain/...``, ``tests/...``) must exist, the layer
table must be the one tests/test_imports.py enforces, and the example study must register and parse its settings.
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "stardomain"
DOC = ROOT / "docs" / "DESIGN.md"
SUBPACKAGES = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").is_file())


def spans() -> list[str]:
    return re.findall(r"`([^`\n]+)`", DOC.read_text(encoding="utf-8"))


def dotted_names() -> list[str]:
    names = {m for span in spans() for m in re.findall(r"(?<![\w.-])stardomain(?:\.[A-Za-z_]\w*)+", span)}
    names |= {span for span in spans() if re.fullmatch(r"sd\.[A-Za-z_]\w*", span)}  # the curated API, import stardomain as sd
    return sorted(names)


def package_paths() -> list[str]:
    top = "|".join(map(re.escape, SUBPACKAGES))
    pattern = rf"(?<![\w./-])(?:src/stardomain/[\w./-]*|tests/[\w./-]*|(?:{top})/[\w./-]*)"
    return sorted({m.rstrip(".") for span in spans() for m in re.findall(pattern, span) if m.endswith((".py", "/"))})


def resolve(name: str) -> Any:
    """The module or attribute a dotted name means: the longest importable prefix, then attributes."""
    parts = name.split(".")
    if parts[0] == "sd":
        parts[0] = "stardomain"
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and module.startswith(e.name) and e.name.startswith("stardomain"):
                continue  # not a module: an attribute of a shorter prefix
            raise
        for attr in parts[i:]:
            obj = getattr(obj, attr)  # AttributeError: the doc names what the code does not have
        return obj
    raise ModuleNotFoundError(name)


def test_the_doc_names_stardomain_names_and_paths():
    assert len(dotted_names()) >= 20 and len(package_paths()) >= 5  # the extraction still finds what it checks


@pytest.mark.parametrize("name", dotted_names())
def test_every_dotted_name_resolves(name: str):
    try:
        resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"docs/DESIGN.md names `{name}`, which the code does not have ({e}); redraw the doc from the code")


@pytest.mark.parametrize("path", package_paths())
def test_every_package_path_exists(path: str):
    where = ROOT / path if path.startswith(("src/", "tests/")) else PKG / path
    assert where.exists(), f"docs/DESIGN.md names `{path}`, which does not exist ({where})"


def test_the_layer_table_is_the_enforced_one():
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_imports import LAYERS
    finally:
        sys.path.remove(str(ROOT / "tests"))
    rows = re.findall(r"^\| (\d+) \| (.*?) \|", DOC.read_text(encoding="utf-8"), re.M)
    table = [{n for n in re.findall(r"`([\w]+)`", packages)} for _, packages in rows]
    assert table == LAYERS, "docs/DESIGN.md's layer table differs from tests/test_imports.py's LAYERS"


def test_the_example_study_registers_and_parses_its_settings():
    from stardomain.experiment.config_blocks import Studies
    from stardomain.experiment.study import Study, registered_studies, unregister_study

    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S) if "register_study(" in b]
    assert blocks, "docs/DESIGN.md shows no example study (a python block calling register_study)"
    before = {s.key for s in registered_studies()}
    module = types.ModuleType("design_doc_study")
    sys.modules[module.__name__] = module
    try:
        exec(compile(blocks[0], str(DOC), "exec"), module.__dict__)
        new = [s for s in registered_studies() if s.key not in before]
        assert len(new) == 1 and isinstance(new[0], Study)
        study = new[0]
        assert study.settings is not None
        parsed = Studies.from_mapping({study.yaml_name(): {}}).get(study.yaml_name())
        assert isinstance(parsed, study.settings)
        study.check(None, parsed)  # its defaults pass its own check
    finally:
        for key in {s.key for s in registered_studies()} - before:
            unregister_study(key)
        sys.modules.pop(module.__name__, None)
