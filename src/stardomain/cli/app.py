"""The ``stardomain`` command group (global options, version) and the entry point that turns user errors into one line."""

from __future__ import annotations

import errno
import sys

import click

from stardomain.errors import StardomainError


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from stardomain._util.console import version_message

        click.echo(version_message())
        ctx.exit()


# the pipeline's order in `stardomain --help`; a registered command not named here is listed after these (none is left out)
PIPELINE_ORDER = ("spec", "train", "eval", "align", "barrier", "star", "bma", "run", "demo", "info")


class PipelineGroup(click.Group):
    """The ``stardomain`` group. ``--help`` lists every registered command, in the pipeline's order, each with its own
    ``short_help`` (else the first sentence of its help): the list is generated, so a new command cannot be left out."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        rank = {name: i for i, name in enumerate(PIPELINE_ORDER)}
        return sorted(self.commands, key=lambda name: rank.get(name, len(rank)))  # stable: the rest in registration order

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.format_commands(ctx, formatter)  # the pipeline first, where the help text leads to it, then the options
        click.Command.format_options(self, ctx, formatter)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        shown = [(name, cmd) for name, cmd in commands if cmd is not None and not cmd.hidden]
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        with formatter.section("Pipeline (each stage is a command; `run` does them all from one YAML file)"):
            formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in shown])


@click.group(cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the stardomain, torch and Python versions and exit.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr, for every command (results still print).")
@click.option("--log-json", is_flag=True, help="Progress and log events as JSON lines on stderr (for log collectors).")
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE first (repeatable): it may register models and datasets, or define the factory a "
    "checkpoint names. Nothing is imported because a checkpoint says so.",
)
@click.pass_context
def cli(ctx: click.Context, quiet: bool, log_json: bool, plugins: tuple[str, ...]) -> None:
    """stardomain: test the star domain conjecture on real networks.

    Progress goes to stderr: a bar on a terminal, plain lines (every epoch and at least
    every 30 s) when stderr is a file, as under SLURM or nohup.
    """
    from stardomain._util.plugins import load_plugins

    load_plugins(plugins)
    ctx.obj = {"quiet": quiet, "log_json": log_json, "plugins": list(plugins)}


_KEPT: list[str] = []  # what an interrupted command keeps (set by the resumable ones through `resumable`)


def resumable(kept: str) -> None:
    """Say what this command keeps when interrupted (Ctrl-C): ``main`` prints it with the command that resumes."""
    _KEPT[:] = [kept]


def interrupted_lines(argv: list[str]) -> list[str]:
    """Ctrl-C in two lines: what was kept and the exact command that resumes (or runs again)."""
    import shlex

    command = "stardomain " + shlex.join(argv)
    if _KEPT:
        return [f"interrupted: kept {_KEPT[0]}", f"resume with the same command: {command}"]
    return ["interrupted before its results were written (nothing to resume)", f"run it again with: {command}"]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error_line(e: OSError) -> str:
    """What failed, on which path, and what to do: a full disk, a permission, a file-size limit."""
    paths = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None) or "a file"
    what = e.strerror or str(e) or type(e).__name__
    resume = " (what finished before is kept: re-run to resume)"
    hint = {
        errno.ENOSPC: "free some space or choose another --out folder" + resume,
        errno.EDQUOT: "free some space or choose another --out folder" + resume,
        errno.EFBIG: "the file is over this shell's file-size limit (ulimit -f); raise it" + resume,
        errno.EACCES: "check the permissions of that path",
        errno.EPERM: "check the permissions of that path",
        errno.EROFS: "that file system is read-only; choose another folder",
    }.get(e.errno or 0, "check that path")
    return _one_line(f"{paths}: {what}; {hint}")


def _is_allocation_failure(e: BaseException) -> bool:
    """torch's out-of-memory errors (CPU allocator, CUDA) as opposed to every other RuntimeError."""
    text = str(e)
    return type(e).__name__ == "OutOfMemoryError" or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    )


def _usage_line(e: click.UsageError) -> str:
    """click's three-line usage error as one line, with the hint to the command's help."""
    ctx = e.ctx
    hint = f"; try '{ctx.command_path} {ctx.help_option_names[0]}' for help" if ctx is not None and ctx.help_option_names else ""
    return _one_line(f"{e.format_message().rstrip('.')}{hint}")


def main() -> None:
    """Entry point: user errors — and what a user meets, a full disk or too little memory — become one line and exit 2."""
    _KEPT.clear()
    try:
        cli.main(prog_name="stardomain", standalone_mode=False)
    except StardomainError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort as e:
        if not isinstance(e.__context__ or e.__cause__, (KeyboardInterrupt, EOFError)):  # an Abort a command raised itself
            click.echo("aborted", err=True)
            sys.exit(130)
        for line in interrupted_lines(sys.argv[1:]):
            click.echo(line, err=True)
        sys.exit(130)
    except click.UsageError as e:
        click.echo(f"error: {_usage_line(e)}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"error: {_one_line(e.format_message())}", err=True)
        sys.exit(2 if e.exit_code == 1 else e.exit_code)
    except KeyboardInterrupt:
        for line in interrupted_lines(sys.argv[1:]):
            click.echo(line, err=True)
        sys.exit(130)
    except OSError as e:
        click.echo(f"error: {_os_error_line(e)}", err=True)
        sys.exit(2)
    except MemoryError:
        click.echo("error: out of memory; use a smaller model, batch size or subset, or a machine with more memory", err=True)
        sys.exit(2)
    except RuntimeError as e:
        if not _is_allocation_failure(e):
            raise
        first = _one_line((str(e).strip().splitlines() or [""])[0])[:300]
        click.echo(f"error: out of memory ({first}); use a smaller model, batch size or subset, or a device with more memory", err=True)
        sys.exit(2)
