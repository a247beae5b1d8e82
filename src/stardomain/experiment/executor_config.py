"""The ``executor:`` block of an experiment YAML: who runs the units, never what they compute.

Its own module, below both the driver loop (:mod:`.executors`) and the Ray/SLURM backends
(:mod:`.cluster`), so the YAML schema (:mod:`.config`) and the backends can read it without
importing the driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from stardomain.errors import StardomainError
from stardomain.experiment import claims

KINDS = ("local", "ray", "slurm")


@dataclass
class ExecutorConfig:
    """The ``executor:`` block of an experiment YAML; none of it changes any result."""

    kind: str = "local"
    workers: int | None = None  # ray without address: size of the local Ray instance (default: all cores)
    address: str | None = None  # ray: "auto" joins the cluster this machine belongs to, or "ray://head:10001"
    gpus_per_unit: float | None = None  # ray: fractions share a GPU (default 1 where there are GPUs); slurm: whole GPUs
    cpus_per_unit: float = 1.0  # ray/slurm: CPUs reserved per unit, at least the run's `threads` (what each unit computes with)
    partition: str | None = None  # slurm
    time_min: int = 60  # slurm: per job; a unit cut by the limit is requeued and resumes from its last epoch
    mem_gb: float | None = None  # slurm
    array_parallelism: int = 64  # slurm: array tasks running at once
    units_per_job: int = 1  # slurm: units run one after another in one array task (>1 for many short units)
    folder: str | None = None  # slurm: submitit's job folder (default <out>/logs/slurm)
    cluster: str | None = None  # slurm: None = SLURM itself; "local" runs the same job arrays as local processes
    retries: int = 2  # times a unit whose worker died is run again
    stale_after: float = claims.STALE_AFTER  # seconds without heartbeat before a claim from another host is broken

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise StardomainError(msg)

        check(self.kind in KINDS, f"executor.kind: one of {', '.join(KINDS)} (got {self.kind!r})")
        check(self.workers is None or self.workers >= 1, f"executor.workers: at least 1 (got {self.workers})")
        check(self.gpus_per_unit is None or self.gpus_per_unit >= 0, f"executor.gpus_per_unit: >= 0 (got {self.gpus_per_unit})")
        check(self.cpus_per_unit > 0, f"executor.cpus_per_unit: > 0 (got {self.cpus_per_unit})")
        check(
            self.kind != "slurm" or self.gpus_per_unit is None or float(self.gpus_per_unit).is_integer(),
            f"executor.gpus_per_unit: SLURM allocates whole GPUs (got {self.gpus_per_unit}); use kind: ray to share one GPU",
        )
        check(self.time_min >= 1, f"executor.time_min: at least 1 minute (got {self.time_min})")
        check(self.array_parallelism >= 1, f"executor.array_parallelism: at least 1 (got {self.array_parallelism})")
        check(self.units_per_job >= 1, f"executor.units_per_job: at least 1 (got {self.units_per_job})")
        check(self.retries >= 0, f"executor.retries: >= 0 (got {self.retries})")
        check(self.stale_after > 0, f"executor.stale_after: > 0 seconds (got {self.stale_after})")
        check(self.cluster in (None, "slurm", "local"), f"executor.cluster: slurm or local (got {self.cluster!r})")


def check_threads(cfg: ExecutorConfig, threads: int) -> None:
    """A Ray task or SLURM job computes with ``threads`` CPU threads: it must reserve at least as many CPUs."""
    if cfg.kind != "local" and cfg.cpus_per_unit < threads:
        raise StardomainError(
            f"executor.cpus_per_unit {cfg.cpus_per_unit:g} is below threads {threads}: each {cfg.kind} unit "
            f"computes with {threads} CPU thread(s); set cpus_per_unit: {threads} or more, or lower threads"
        )


def with_overrides(cfg: ExecutorConfig, kind: str | None = None, workers: int | None = None) -> ExecutorConfig:
    """The YAML's executor with the command line's ``--executor`` / ``--workers`` on top.

    ``--workers`` sizes the local Ray instance, or caps a SLURM array's running jobs; the local
    executor runs one unit at a time, so asking it for more workers is a mistake worth a line.
    """
    kind = kind or cfg.kind
    fields = {**cfg.__dict__, "kind": kind}
    if workers is not None:
        if kind == "local" and workers != 1:
            raise StardomainError(
                f"--workers {workers}: the local executor runs one unit at a time; add --executor ray to use {workers} workers"
            )
        fields["array_parallelism" if kind == "slurm" else "workers"] = workers
    return ExecutorConfig(**fields)
