"""Click options generated from the star's settings (:mod:`stardomain.starlight.config`), so the CLI's names, defaults,
help and choices cannot drift from the YAML block and StarlightConfig (issue 34: one schema per concept)."""

from __future__ import annotations

import functools
import typing
from dataclasses import Field
from typing import Any, Callable

import click

from stardomain.errors import StardomainError
from stardomain.experiment.config_blocks import StarConfig
from stardomain.starlight.config import CLI, StarlightConfig, default_of, setting_problem, settings

Decorator = Callable[[Any], Any]


def flag(f: Field[Any]) -> str:
    """The option a setting becomes: ``pairs_per_step`` -> ``--pairs-per-step``."""
    return "--" + f.name.replace("_", "-")


def _click_type(annotation: Any) -> Any:
    """``int | None`` -> int, ``tuple[float, float]`` -> (float, float); the rest as it is."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is tuple:
        return tuple(args)
    if args and typing.get_origin(annotation) is not None:
        return args[0]
    return annotation


def setting_option(cls: type, name: str) -> Decorator:
    """The click option of setting ``name`` of ``cls``: its flag, type, choices, default and help come from the field."""
    f = next(f for f in settings(cls, CLI) if f.name == name)
    cli, default = f.metadata["cli"], default_of(f)
    choices = cli.get("choices", f.metadata["choices"])
    kind = click.Choice(list(choices)) if choices is not None else _click_type(typing.get_type_hints(cls)[name])
    return click.option(flag(f), type=kind, default=default, show_default=default is not None, help=f.metadata["help"])


def check_setting(cls: type, name: str, value: Any) -> None:
    """Refuse ``value`` for setting ``name`` of ``cls`` by its declared range, worded for its option."""
    f = next(f for f in settings(cls, CLI) if f.name == name)
    problem = setting_problem(f, value)
    if problem is not None:
        raise StardomainError(f"{flag(f)} {problem}")


def star_cli_settings() -> list[Field[Any]]:
    """StarlightConfig's settings the CLI shows, in the CLI's order (a field's ``cli.after`` puts it behind another)."""
    out: list[Field[Any]] = []
    for f in settings(StarlightConfig, CLI):
        after = f.metadata["cli"].get("after")
        out.insert([g.name for g in out].index(after) + 1 if after else len(out), f)
    return out


def star_options(fn: Any) -> Any:
    """Add the options of every StarlightConfig setting the CLI shows, and hand them to ``fn`` as one ``knobs`` dict
    (StarlightConfig's keyword arguments); :func:`~stardomain.cli.common.checked_first` above still sees each one."""
    names = [f.name for f in star_cli_settings()]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        knobs = {name: kwargs.pop(name) for name in names}
        return fn(*args, knobs=knobs, **kwargs)

    for name in reversed(names):  # click lists options in the order their decorators are written: first on top
        wrapper = setting_option(StarlightConfig, name)(wrapper)
    return wrapper


repeats_option = setting_option(StarConfig, "repeats")
