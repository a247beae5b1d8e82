"""Your own code in stardomain: plugin modules and ``pkg.module:attr`` import paths.

One rule keeps a checkpoint from running code: stardomain imports a module only when you
name it — ``--plugin pkg.module`` on the CLI, ``plugins: [pkg.module]`` in a YAML config, an
import path you type (``-m pkg.module:build``, ``model: {name: pkg.module:build}``,
``dataset: pkg.module:make``), or :func:`load_plugins` from Python. A checkpoint's metadata
may *name* a factory, but resolving a name read from a file (:func:`resolve` inside
:func:`recorded_names`) never imports and reaches only a closed set: registered models and
datasets, the built-in ``hf:`` families, and code the user named in this process (a module
passed to :func:`load_plugins`, an import path typed into the Python API). Anything else
(``builtins:print``, ``os:sched_setaffinity``, any attribute of an already imported module) is
refused in one line naming ``--plugin``; what is called is first checked against the arguments
it will get (:func:`check_call`).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import re
import sys
from typing import Any, Iterable, Iterator, TypeGuard

from stardomain.errors import StardomainError

__all__ = [
    "check_call",
    "factory_name",
    "import_path_module",
    "is_import_path",
    "load_plugins",
    "named_by_user",
    "recorded_names",
    "resolve",
]

# The closed set of code a name read from a file may reach (checkpoint metadata, a dataset record): registered
# builders and datasets, the built-in hf: families, and what the user named in this process: the modules of
# load_plugins (--plugin, YAML plugins:, import paths typed on the command line or in a YAML) and the import
# paths typed into the Python API (models.create("pkg.mod:build"), load_dataset("pkg.mod:make")).
_NAMED_MODULES: set[str] = set()
_NAMED_PATHS: set[str] = set()
# set while names read from a file are resolved (:func:`recorded_names`): what the file is, for the error
_RECORDED: contextvars.ContextVar[str | None] = contextvars.ContextVar("stardomain_recorded_names", default=None)

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
        _NAMED_MODULES.add(module)
        done.append(module)
    return done


def named_by_user(path: str) -> bool:
    """Whether the user named the code at import path ``pkg.module:attr`` in this process: its module (or a package
    above it) through :func:`load_plugins`, or the path itself typed into the Python API."""
    if not is_import_path(path):
        return False
    module = import_path_module(path)
    return path.strip() in _NAMED_PATHS or any(module == m or module.startswith(m + ".") for m in _NAMED_MODULES)


@contextlib.contextmanager
def recorded_names(source: str) -> Iterator[None]:
    """Resolve names read from a file (``source``, e.g. ``"checkpoint x.safetensors"``) inside this block: there
    :func:`resolve` reaches only code the user named (:func:`named_by_user`); anything else is refused in one line
    saying how to name it. A file never makes stardomain call a function nobody passed."""
    token = _RECORDED.set(_RECORDED.get() or source)  # the outermost file is the one to name
    try:
        yield
    finally:
        _RECORDED.reset(token)


def check_call(obj: Any, what: str, *args: Any, **kwargs: Any) -> None:
    """Refuse, in one line, to call ``obj`` (the user's code) unless its signature accepts ``(*args, **kwargs)``:
    checked with :func:`inspect.signature` before the call, never by calling it."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        raise StardomainError(f"{what} has no signature stardomain can check before calling it; wrap it in a Python function") from None
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        shown = ", ".join([*(type(a).__name__ for a in args), *(f"{k}=..." for k in kwargs)])
        raise StardomainError(f"{what} takes {sig}, which cannot be called as ({shown}): {e}") from None


def resolve(path: str, what: str) -> Any:
    """The object at import path ``pkg.module:attr``, from a module that is already imported.

    Never imports: a name that came from a checkpoint must not run code. ``what`` (e.g.
    "model factory") makes the error say what was looked up. Inside :func:`recorded_names` (a name read from a
    file) only code the user named is reached; outside it the caller typed ``path``, which names it from now on.
    """
    if not is_import_path(path):
        raise StardomainError(f"{what} {path!r} is not an import path of the form pkg.module:attr")
    module_name, attr = path.strip().split(":", 1)
    source = _RECORDED.get()
    if source is not None and not named_by_user(path):
        raise StardomainError(
            f"{source} names {what} {path.strip()!r}, code you have not named: a file only names registered models, "
            f"datasets and the hf: families; if you trust {module_name}, pass --plugin {module_name} "
            f"(YAML: plugins: [{module_name}]; Python: plugins=[{module_name!r}])"
        )
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
    if source is None:
        _NAMED_PATHS.add(path.strip())  # typed by the caller: a file naming it later names what the user named
    return obj
