"""Ray and SLURM (submitit) backends of :func:`stardomain.experiment.executors.run_plan`.

Both are optional extras, imported only here and only when asked for; a missing one is a one-line
error naming the install command. A backend submits units and hands back finished records; the
driver loop (progress, claims held elsewhere, retries of dead SLURM jobs) is shared.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from stardomain.errors import StardomainError
from stardomain.experiment import claims
from stardomain.experiment.executor_config import ExecutorConfig
from stardomain.experiment.plan import Unit
from stardomain.experiment.worker import UnitJob, execute_unit, log_path


def _missing_extra(module: str, extra: str) -> StardomainError:
    return StardomainError(f"the {extra} executor needs {module}, which is not installed: pip install 'stardomain[{extra}]'")


def require(cfg: ExecutorConfig) -> Any:
    """The engine module of ``cfg.kind`` (ray or submitit), or one line saying how to get it or why it cannot run."""
    if cfg.kind == "ray":
        try:
            import ray
        except ImportError:
            raise _missing_extra("Ray", "ray") from None
        return ray
    try:
        import submitit
    except ImportError:
        raise _missing_extra("submitit", "slurm") from None
    if cfg.cluster != "local" and submitit.SlurmExecutor.affinity() < 0:
        raise StardomainError(
            "executor.kind slurm: no SLURM here (sbatch not found); run on a login node, "
            "or set executor.cluster: local to try the job arrays as local processes"
        )
    return submitit


class RayBackend:
    """Each unit a Ray task with its CPU/GPU share, retried by Ray when its worker process dies."""

    name = "ray"

    def __init__(self, job: UnitJob, out_dir: Path, cfg: ExecutorConfig, threads: int | None = 1):
        ray = require(cfg)
        self.ray, self.job, self.out, self.cfg = ray, job, out_dir, cfg
        self.owns_instance = not ray.is_initialized()
        if self.owns_instance:
            try:
                quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
                if cfg.address:
                    ray.init(address=cfg.address, **quiet)
                else:
                    ray.init(num_cpus=(cfg.workers or os.cpu_count() or 1) * cfg.cpus_per_unit, **quiet)
            except ConnectionError as e:
                raise StardomainError(
                    f"executor.address {cfg.address!r}: no Ray cluster answers ({e}); start one with `ray start --head`"
                ) from None
        resources = ray.cluster_resources()
        gpus = cfg.gpus_per_unit if cfg.gpus_per_unit is not None else (1.0 if resources.get("GPU", 0) > 0 else 0.0)
        if gpus > resources.get("GPU", 0):
            raise StardomainError(f"executor.gpus_per_unit {gpus:g}: the Ray cluster has {resources.get('GPU', 0):g} GPUs")
        slots = resources.get("CPU", 1) / cfg.cpus_per_unit
        if gpus > 0:
            slots = min(slots, resources.get("GPU", 0) / gpus)
        self.parallel = max(1, int(slots))
        self.capacity = self.parallel  # submit what fits now, so "running" means running
        # a GPU unit gets a fresh worker process (max_calls=1): CUDA memory and the device Ray assigned die with it
        self.remote = ray.remote(
            num_cpus=cfg.cpus_per_unit, num_gpus=gpus, max_retries=cfg.retries, **({"max_calls": 1} if gpus > 0 else {})
        )(execute_unit)
        self.threads = threads  # the run's, never the CPUs reserved: results must not follow the reservation
        self.pending: dict[Any, Unit] = {}

    def submit(self, units: list[Unit]) -> None:
        for u in units:
            self.pending[self.remote.remote(self.job, u, str(self.out), self.cfg.stale_after, self.threads)] = u

    def wait(self, timeout: float) -> list[tuple[Unit, dict[str, Any] | None]]:
        if not self.pending:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            unit = self.pending.pop(ref)
            try:
                out.append((unit, self.ray.get(ref)))
            except self.ray.exceptions.RayError as e:
                raise StardomainError(
                    f"unit {unit.id}: its Ray worker died {self.cfg.retries + 1} times "
                    f"({type(e).__name__}); see {log_path(self.out, unit)}, then re-run to resume"
                ) from None
        return out

    def close(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref)
        self.pending.clear()
        if self.owns_instance:
            self.ray.shutdown()


def _slurm_task_class() -> type:
    """A Checkpointable unit runner (built lazily: submitit is an optional extra)."""
    import submitit

    class SlurmUnit(submitit.helpers.Checkpointable):
        """Runs a chunk of units; on preemption or timeout submitit calls checkpoint(): free the claim,
        then requeue the same chunk (its finished units are skipped, the cut one resumes from its epoch)."""

        def __init__(self, job: UnitJob, out_dir: str, stale_after: float, threads: int | None):
            self.job, self.out_dir, self.stale_after, self.threads = job, out_dir, stale_after, threads
            self._claim: claims.Claim | None = None

        def __getstate__(self) -> dict[str, Any]:
            return {k: v for k, v in self.__dict__.items() if k != "_claim"}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state, _claim=None)

        def _hold(self, claim: claims.Claim | None) -> None:
            self._claim = claim

        def __call__(self, units: list[Unit]) -> list[dict[str, Any]]:
            return [execute_unit(self.job, u, self.out_dir, self.stale_after, self.threads, on_claim=self._hold) for u in units]

        def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
            if self._claim is not None:
                self._claim.release()
            return super().checkpoint(*args, **kwargs)

    return SlurmUnit


class SlurmBackend:
    """Every batch of ready units one job array (``map_array``), ``units_per_job`` units per array task;
    dead jobs are resubmitted by the driver."""

    name = "slurm"

    def __init__(self, job: UnitJob, out_dir: Path, cfg: ExecutorConfig, threads: int | None = 1):
        submitit = require(cfg)
        folder = Path(cfg.folder) if cfg.folder else out_dir / "logs" / "slurm"
        self.ex = submitit.AutoExecutor(folder=folder, cluster="local" if cfg.cluster == "local" else "slurm")
        gpus = int(cfg.gpus_per_unit or 0)
        params: dict[str, Any] = {
            "timeout_min": cfg.time_min,
            "gpus_per_node": gpus,
            "cpus_per_task": max(1, int(cfg.cpus_per_unit)),
            "name": f"stardomain-{out_dir.name}",
            "slurm_array_parallelism": cfg.array_parallelism,
        }
        if cfg.mem_gb is not None:
            params["mem_gb"] = cfg.mem_gb
        if cfg.partition:
            params["slurm_partition"] = cfg.partition
        self.ex.update_parameters(**params)
        self.task = _slurm_task_class()(job, str(out_dir), cfg.stale_after, threads)
        self.out, self.cfg = out_dir, cfg
        self.parallel = cfg.array_parallelism
        # SLURM enforces array_parallelism itself; local processes would all start at once
        self.capacity = cfg.array_parallelism * cfg.units_per_job if cfg.cluster == "local" else 10**9
        self.pending: list[tuple[Any, list[Unit]]] = []

    def submit(self, units: list[Unit]) -> None:
        k = self.cfg.units_per_job
        chunks = [units[i : i + k] for i in range(0, len(units), k)]
        if chunks:
            self.pending.extend(zip(self.ex.map_array(self.task, chunks), chunks))

    def wait(self, timeout: float) -> list[tuple[Unit, dict[str, Any] | None]]:
        deadline = time.monotonic() + timeout
        while True:
            finished = [(j, u) for j, u in self.pending if j.done()]
            if finished or time.monotonic() >= deadline or not self.pending:
                break
            time.sleep(min(0.2, timeout))
        out: list[tuple[Unit, dict[str, Any] | None]] = []
        for j, chunk in finished:
            self.pending.remove((j, chunk))
            try:  # submitit's log of each job: <folder>/<job>_0_log.out
                out.extend((u, {**r, "job": str(j.job_id)}) for u, r in zip(chunk, j.result()))
            except Exception:  # the job process died (killed, node failure): the driver may resubmit its units
                out.extend((u, None) for u in chunk)
        return out

    def close(self) -> None:
        for j, _ in self.pending:
            try:
                j.cancel(check=False)
            except Exception:
                pass
        self.pending.clear()
