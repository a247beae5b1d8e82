"""The ``stardomain`` command group (global options, version) and the entry point that turns user errors into one line."""

from __future__ import annotations

import sys

import click

from stardomain.errors import StardomainError


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from stardomain.console import version_message

        click.echo(version_message())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the stardomain, torch and Python versions and exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr, for every command (results still print).")
@click.option("--log-json", is_flag=True, help="Progress and log events as JSON lines on stderr (for log collectors).")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE first (repeatable): it may register models and datasets, or define the factory a "
                   "checkpoint names. Nothing is imported because a checkpoint says so.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, log_json: bool, plugins: tuple[str, ...]) -> None:
    """stardomain: test the star domain conjecture on real networks.

    Progress goes to stderr: a bar on a terminal, plain lines (every epoch and at least
    every 30 s) when stderr is a file, as under SLURM or nohup.

    \b
    Pipeline (each stage is a command; `run` does them all from one YAML file):
      spec     how a model's hidden units can be permuted (groups, coverage, a check)
      train    train source / held-out models into a model zoo folder
      eval     test loss and accuracy of a checkpoint
      align    permute a model into another's basin (weight or activation matching)
      barrier  loss/accuracy along the linear path between two models, and its barrier
      star     Starlight (Algorithm 1): train a star model from a zoo of sources
      bma      Bayesian model averaging over the star domain vs a deep ensemble
      run      a whole experiment from one YAML file (resumable)
      demo     the whole pipeline on the embedded digits dataset, on a CPU
    """
    from stardomain.plugins import load_plugins

    load_plugins(plugins)
    ctx.obj = {"quiet": quiet, "log_json": log_json, "plugins": list(plugins)}


def main() -> None:
    """Entry point: user errors become one line and exit code 2."""
    try:
        cli.main(standalone_mode=False)
    except StardomainError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
