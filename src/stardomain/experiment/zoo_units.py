"""A zoo's members as executor units (`stardomain train --executor ray|slurm`): the ``run_units`` of
:func:`stardomain.training.zoo_run.run_zoo`, so an executor changes who trains a member, never what is trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from stardomain.training.loop import Recipe


def zoo_executor(
    data: Mapping[str, Any],
    model: str,
    options: Mapping[str, Any],
    recipe: Recipe,
    out_dir: str | Path,
    role: str,
    device: str,
    *,
    local: Any = None,
    executor: str | None = None,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
    event: Callable[..., None] | None = None,
) -> Callable[[list[int]], None]:
    """``run_units(seeds)``: one unit per seed on ``executor`` (``data``: what rebuilds the dataset in a worker,
    ``local``: the driver's copy). The executor is checked when it is called, after the zoo's own checks."""

    def run_units(seeds: list[int]) -> None:
        import torch

        from stardomain.experiment.executors import ExecutorConfig, check_available, run_plan, with_overrides
        from stardomain.experiment.jobs import ZooJob

        threads = torch.get_num_threads()  # the command's --threads: each worker's too
        ex = with_overrides(ExecutorConfig(cpus_per_unit=threads), executor, workers)
        check_available(ex)
        job = ZooJob(data, model, options, recipe.to_dict(), out_dir, role, device, local=local)
        run_plan(job.plan(seeds), job, out_dir, ex, log=log, event=event, threads=threads)

    return run_units
