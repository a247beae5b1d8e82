"""`stardomain --help` lists every registered command (issue 35: the hand-written pipeline list had left out `info`).

The list is generated from the group's commands, in the pipeline's order, so a new command shows up without
anyone editing a list; these tests hold that against the real group.
"""

from __future__ import annotations

import re

import click
from cli_helpers import run_cli

from stardomain.cli import cli
from stardomain.cli.app import PIPELINE_ORDER


def listed(help_text: str) -> list[str]:
    """The command names of the help's 'Pipeline' section, in order (a row starts with two spaces and a name)."""
    section = help_text.split("\nPipeline", 1)[1].split("\n\n", 1)[0]
    return [m.group(1) for m in re.finditer(r"^  (\S+)  ", section, re.M)]


def test_help_lists_every_registered_command_in_pipeline_order(capsys):
    r = run_cli(capsys, "--help")
    assert r.code == 0, r.err
    names = listed(r.out)
    assert sorted(names) == sorted(cli.commands), f"listed {names}, registered {sorted(cli.commands)}"
    assert "info" in names
    assert names == [n for n in PIPELINE_ORDER if n in cli.commands], names
    assert set(PIPELINE_ORDER) <= set(cli.commands), "PIPELINE_ORDER names a command that is not registered"
    for name in names:  # each row carries the command's own one-line description
        assert re.search(rf"^  {name} +\S", r.out, re.M), name


def test_a_command_registered_later_is_listed_too(capsys):
    """What a plugin would do: a command the order does not name is listed after the pipeline, with its help."""

    @cli.command("frobnicate")
    def frobnicate() -> None:
        """Frobnicate the zoo. More text that the list leaves out."""

    try:
        r = run_cli(capsys, "--help")
        assert r.code == 0, r.err
        assert listed(r.out)[-1] == "frobnicate"
        assert "Frobnicate the zoo." in r.out and "More text" not in r.out
    finally:
        cli.commands.pop("frobnicate")
    assert isinstance(cli, click.Group) and "frobnicate" not in cli.commands
