"""Your own code in stardomain: plugin modules and ``pkg.module:attr`` import paths.

One rule keeps a checkpoint from running code: stardomain imports a module only when you
name it — ``--plugin pkg.module`` on the CLI, ``plugins: [pkg.module]`` in a YAML config, an
import path you type (``-m pkg.module:build``, ``model: {name: pkg.module:build}``,
``dataset: pkg.module:make``), or :func:`load_plugins` from Python. A checkpoint's metadata
may *name* a factory, but resolving it (:func:`resolve`) only looks among modules already
imported and otherwise answers with the flag to pass.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any, Iterable, TypeGuard

from stardomain.errors import StardomainError

__all__ = ["factory_name", "import_path_module", "is_import_path", "load_plugins", "resolve"]

_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_hf_name(name: object) -> TypeGuard[str]:
    """True for ``hf:<model>`` names: a Hugging Face model stardomain builds itself (:mod:`stardomain.models.hf`),
    never a module to import. The one test of the prefix, for the registry, checkpoints and import paths alike."""
    return isinstance(name, str) and name.strip().lower().startswith("hf:")


def is_import_path(name: object) -> TypeGuard[str]:
    """True for strings of the form ``pkg.module:attr`` (``attr`` may be dotted); ``hf:<model>`` names a Hugging Face
    model stardomain builds itself (:mod:`stardomain.models.hf`), not a module to import."""
    return isinstance(name, str) and bool(_PATH.match(name.strip())) and not is_hf_name(name)


def import_path_module(path: str) -> str:
    """The module part of ``pkg.module:attr``."""
    return path.strip().split(":", 1)[0]


def factory_name(obj: Any) -> str:
    """``module:qualname`` of a function or class, the form checkpoints record."""
    return f"{obj.__module__}:{obj.__qualname__}"


def load_plugins(names: Iterable[str]) -> list[str]:
    """Import each module (or the module of each import path) the user named; returns their names.

    Importing is what lets a plugin register its models and datasets. A module that cannot
    be imported is one line naming it and the import error.
    """
    done: list[str] = []
    for raw in names:
        name = str(raw).strip()
        module = import_path_module(name) if ":" in name else name
        if not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$", module):
            raise StardomainError(f"plugin {raw!r} is not a module name (pkg.module) or import path (pkg.module:attr)")
        try:
            importlib.import_module(module)
        except Exception as exc:  # an import runs arbitrary code: any failure is the plugin's
            detail = str(exc).splitlines()[0] if str(exc) else ""
            raise StardomainError(
                f"cannot import plugin module {module!r} ({type(exc).__name__}: {detail}); is it on PYTHONPATH?"
            ) from None
        done.append(module)
    return done


def resolve(path: str, what: str) -> Any:
    """The object at import path ``pkg.module:attr``, from a module that is already imported.

    Never imports: a name that came from a checkpoint must not run code. ``what`` (e.g.
    "model factory") makes the error say what was looked up.
    """
    if not is_import_path(path):
        raise StardomainError(f"{what} {path!r} is not an import path of the form pkg.module:attr")
    module_name, attr = path.strip().split(":", 1)
    module = sys.modules.get(module_name)
    if module is None:
        raise StardomainError(
            f"{what} {path!r} comes from module {module_name!r}, which is not imported; pass --plugin {module_name} "
            f"(YAML: plugins: [{module_name}]; Python: import {module_name} first)"
        )
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise StardomainError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise StardomainError(f"{what} {path!r} is a {type(obj).__name__}, not a callable")
    return obj
