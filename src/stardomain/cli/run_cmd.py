"""Whole experiments: ``run`` (one YAML file, any executor, resumable) and ``demo`` (the embedded digits study)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from stardomain._util.console import event_logger, progress_config
from stardomain.cli.app import cli
from stardomain.cli.common import executor_options, log_option, quiet_option


@cli.command(short_help="a whole experiment from one YAML file (resumable)")
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (resumable: re-run to continue).")
@click.option("--device", default=None, help="Override the config's device.")
@click.option(
    "--threads",
    type=click.IntRange(1, 4096),
    default=None,
    help="Override the config's threads: torch CPU threads of every unit (results depend on it; recorded).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (units by kind, every model and pair) and its estimated time from the unit costs a run in "
    "--out measured (events.jsonl); nothing is trained or written.",
)
@executor_options
@log_option
@quiet_option
def run(
    experiment: str,
    out_dir: str,
    device: str | None,
    threads: int | None,
    dry_run: bool,
    executor: str | None,
    workers: int | None,
    log_sinks: tuple[str, ...],
    quiet: bool,
) -> None:
    """Run a whole experiment from one YAML file: zoo, star models, barriers, distances, BMA, fusion, report."""
    from stardomain.cli.app import resumable
    from stardomain.experiment import load_config, run_experiment
    from stardomain.experiment.executors import with_overrides

    resumable(f"every finished unit in {out_dir} and the last finished epoch of the model in training")
    cfg = load_config(experiment)
    if device:
        cfg.device = device
    if threads is not None:
        cfg.threads = threads
    cfg.executor = with_overrides(cfg.executor, executor, workers)
    for sink in log_sinks:  # the YAML's logging block, plus these (its settings kept: wandb: {project: ...})
        if not cfg.logging.get(sink):
            cfg.logging = {**cfg.logging, sink: True}
    if dry_run:
        from stardomain.experiment.dry_run import dry_run as plan_of
        from stardomain.experiment.dry_run import plan_lines

        for line in plan_lines(plan_of(cfg, out_dir)):
            click.echo(line)
        return
    from stardomain.report.metrics_side import console_lines

    results = run_experiment(cfg, out_dir, progress=progress_config(quiet), log=event_logger(quiet))
    for line in console_lines(results):
        click.echo(line)
    click.echo(f"wrote {Path(out_dir) / 'results.json'} and {Path(out_dir) / 'report.md'}")


@cli.command(short_help="the whole pipeline on the embedded digits dataset, on a CPU")
@click.option(
    "--out",
    "out_dir",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output folder (resumable: re-run to continue).",
)
@click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the demo config's, auto).")
@quiet_option
def demo(out_dir: str, device: str | None, quiet: bool) -> None:
    """The whole pipeline on the embedded digits dataset (minutes on a laptop CPU, offline)."""
    from importlib import resources

    from stardomain._util.console import summary_line
    from stardomain.cli.app import resumable
    from stardomain.experiment import load_config, run_experiment
    from stardomain.report.metrics_side import console_lines

    resumable(f"every finished unit in {out_dir} and the last finished epoch of the model in training")
    with resources.as_file(resources.files("stardomain") / "configs" / "demo.yaml") as path:
        cfg = load_config(path)
    if device:
        cfg.device = device
    start = time.monotonic()
    results = run_experiment(cfg, out_dir, progress=progress_config(quiet), log=event_logger(quiet))
    for line in console_lines(results):
        click.echo(line)
    click.echo(summary_line(results, Path(out_dir) / "report.md", time.monotonic() - start))
