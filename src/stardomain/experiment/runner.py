"""``stardomain run`` end to end: plan the units, let an executor run them, assemble, write the files.

The top of the experiment package: it is the one module that knows the pipeline
(:class:`~.pipeline.Experiment`), the plan of its units (:mod:`.units`) and who runs them
(:mod:`.executors`), so none of those needs to reach back up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from stardomain._util.fileio import remove_stray_temps
from stardomain.checkpoints import store
from stardomain.errors import StardomainError
from stardomain.experiment.config import ExperimentConfig
from stardomain.experiment.executor_config import ExecutorConfig, check_threads
from stardomain.experiment.executors import check_available, run_plan
from stardomain.experiment.jobs import ExperimentJob
from stardomain.experiment.pipeline import Experiment
from stardomain.experiment.sinks import check_available as check_sinks
from stardomain.experiment.units import build_plan
from stardomain.report.markdown import write_report
from stardomain.training.execution import fixed_threads


def run_folders(out_dir: str | Path) -> list[str]:
    """The folders of a run folder that stardomain writes files into, relative to it: the folder itself, claims/,
    stars/, each zoo (zoo/<tag>) and each cache kind (cache/<kind>). The temp cleanup looks into these only:
    never a folder the user keeps in the run folder, never one reached through a symlink."""
    out = Path(out_dir)
    rel = [".", "claims", "stars"]
    for parent in ("zoo", "cache"):
        p = out / parent
        if p.is_dir() and not p.is_symlink():
            rel += [f"{parent}/{c.name}" for c in sorted(p.iterdir()) if c.is_dir() and not c.is_symlink()]
    return rel


def check_execution(config: ExperimentConfig, device: str) -> None:
    """What the resolved device cannot honour is refused before the folder is claimed or any unit runs."""
    import torch

    from stardomain.training.execution import autocast, check_channels_last

    for recipe in (config.source_recipe(), *((config.optimizer_recipe(),) if config.studies.optimizer else ())):
        autocast(recipe.precision, torch.device(device))
        check_channels_last(recipe.channels_last, torch.device(device))


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    executor: ExecutorConfig | None = None,
) -> dict[str, Any]:
    """Run the plan's units with ``executor`` (default: the config's), assemble every study from the
    unit files, then write results.json, report.md and the figures (all atomically).

    All of it computes with ``config.threads`` torch CPU threads (the caller's count is restored after):
    the data the local executor's units share is prepared here, and the assembly's statistics too. The returned
    results (results.json) give accuracies and accuracy barriers as fractions in [0, 1]; report.md shows % and pp."""
    executor = executor or config.executor
    check_threads(executor, config.threads)  # --executor may have replaced the YAML's
    if executor.kind == "local" or (executor.kind == "ray" and executor.address is None) or executor.cluster == "local":
        from stardomain._util.budget import check_threads as check_cpus

        check_cpus(config.threads, "threads")  # the units compute on this machine: no more threads than its CPUs
    _warn_same_runs(config)
    check_studies_travel(config, executor)
    check_available(executor)
    check_sinks(config.logging)  # a sink whose package is missing: one line, before any data is read
    with fixed_threads(config.threads):
        return _run(config, out_dir, progress, log, executor)


def check_studies_travel(config: ExperimentConfig, executor: ExecutorConfig) -> None:
    """A Ray or SLURM worker rebuilds the plan from the config alone: a study registered in this process only (a
    notebook, a script) would be unknown there, so it is refused here, before any work, unless ``plugins:`` names it."""
    if executor.kind == "local":
        return
    from stardomain.experiment.study import registered_studies

    for study in registered_studies():
        module = type(study).__module__
        named = any(module == p or module.startswith(p + ".") for p in config.plugins)
        if study.enabled(config) and not module.startswith("stardomain.") and not named:
            raise StardomainError(
                f"study {study.key} ({module}) is registered in this process only: {executor.kind} workers rebuild the plan "
                "from the config and would not know it; list its module under plugins: (or use --executor local)"
            )


def _warn_same_runs(config: ExperimentConfig) -> None:
    """One warning line naming the recipe-study cells that are the same run (e.g. the MLP's init axis
    ``[paper, kaiming]``: both are PyTorch's default init for it), which train the same zoo more than once."""
    from stardomain._util.console import notice
    from stardomain.experiment.config_checks import nominal_data
    from stardomain.experiment.studies.recipe import same_runs

    groups = same_runs(config, *nominal_data(config))
    if groups:
        notice(
            "warning",
            f"studies.recipe: cells {'; '.join(' = '.join(tags) for tags in groups)} are the same run (their inits draw "
            f"the same weights for {config.model.name}): each trains the same zoo and stars; keep one of those init values",
        )


def _run(
    config: ExperimentConfig, out_dir: str | Path, progress: bool | None, log: Callable[[str], None] | None, executor: ExecutorConfig
) -> dict[str, Any]:
    started = time.time()
    exp = Experiment(config, out_dir, progress=progress, log=log)
    try:
        return _run_units(exp, config, out_dir, executor, started)
    except BaseException:
        exp.events.close(exit_code=1)  # the sinks see a failed (or interrupted) run end; events.jsonl needs no closing
        raise


def _run_units(exp: Experiment, config: ExperimentConfig, out_dir: str | Path, executor: ExecutorConfig, started: float) -> dict[str, Any]:
    check_execution(config, exp.device)
    exp.claim_folder()
    # what a killed run left: no later rename needs it (a minute's margin for a concurrent run's write still in fsync)
    remove_stray_temps(out_dir, older_than=started - 60, subfolders=run_folders(out_dir))
    plan = build_plan(exp).plan
    exp.event("start", name=config.name, device=exp.device, executor=executor.kind, units=len(plan), threads=config.threads)
    run_plan(
        plan,
        ExperimentJob(config.to_dict(), out_dir, local=exp),
        out_dir,
        executor,
        log=exp.log,
        event=exp.record if executor.kind == "local" else exp.event,
        threads=config.threads,
    )
    results = exp.run(assemble=True)
    path = Path(out_dir) / "results.json"
    store.atomic_write_json(path, results)
    # the report is written from the file, never from in-memory state: a resumed run and an
    # uninterrupted one hold the same results.json, so they get the same report.md bytes
    results = json.loads(path.read_text())
    write_report(results, Path(out_dir))
    # the rest: a run's whole length is far longer than any rename
    remove_stray_temps(out_dir, older_than=started, subfolders=run_folders(out_dir))
    return results
