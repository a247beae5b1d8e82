"""Who runs a plan's units: this process, a Ray cluster, or SLURM job arrays (through submitit).

One driver loop (:func:`run_plan`) serves all three: it submits every unit whose dependencies are
done, records each finished unit in events.jsonl (which worker, how long) and prints done /
running / waiting per stage with an ETA. Workers call :func:`.worker.execute_unit`, which claims the
unit (see :mod:`.claims`), computes it with the picklable ``job`` and releases the claim; a unit someone
else holds is left to them and watched until its output appears (two runs on one folder share
the work). Ray retries a task whose worker died; SLURM jobs that died are resubmitted by the
driver and requeued by submitit on preemption or timeout. Ray and submitit are optional extras,
imported only when asked for (:mod:`.cluster`).

Its settings, :class:`ExecutorConfig`, live in :mod:`.executor_config` (below the backends) and are
re-exported here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from stardomain.errors import StardomainError
from stardomain.experiment import claims
from stardomain.experiment.executor_config import (
    KINDS,
    ExecutorConfig,
    check_threads,
    with_overrides,
)
from stardomain.experiment.plan import Board, Plan, Unit
from stardomain.experiment.worker import UnitJob, execute_unit, log_path

__all__ = ["KINDS", "ExecutorConfig", "check_available", "check_threads", "run_plan", "with_overrides"]


# -- the local backend: units one after another in this process ----------------------------------------------------


class _Local:
    """Units one after another in this process: today's behaviour, and the reference for the others."""

    name = "local"

    def __init__(self, job: UnitJob, out_dir: Path, cfg: ExecutorConfig, threads: int | None = 1):
        self.job, self.out, self.cfg, self.threads = job, out_dir, cfg, threads
        self.queue: list[Unit] = []
        self.parallel = 1
        self.capacity = 1

    def submit(self, units: list[Unit]) -> None:
        self.queue.extend(units)

    def wait(self, timeout: float) -> list[tuple[Unit, dict[str, Any] | None]]:
        if not self.queue:
            time.sleep(timeout)
            return []
        unit = self.queue.pop(0)
        return [(unit, execute_unit(self.job, unit, str(self.out), self.cfg.stale_after, self.threads))]

    def close(self) -> None:
        pass


def check_available(cfg: ExecutorConfig) -> None:
    """Fail in the first second, before any data is loaded, when the executor cannot run here."""
    if cfg.kind != "local":
        from stardomain.experiment import cluster

        cluster.require(cfg)


def _backend(kind: str) -> type:
    if kind == "local":
        return _Local
    from stardomain.experiment import cluster

    return cluster.RayBackend if kind == "ray" else cluster.SlurmBackend


# -- the driver -------------------------------------------------------------------------------------------------------


def run_plan(
    plan: Plan,
    job: UnitJob,
    out_dir: str | os.PathLike,
    cfg: ExecutorConfig | None = None,
    log: Callable[[str], None] | None = None,
    event: Callable[..., None] | None = None,
    progress_every: float = 10.0,
    poll: float = 0.5,
    threads: int | None = 1,
) -> list[dict[str, Any]]:
    """Run every unit of ``plan`` that is not done; returns the records of the units run here.

    Every unit computes with ``threads`` torch CPU threads, whichever executor runs it (the local one
    restores this process's own count after each unit); None leaves each process's count as it is.

    Raises :class:`StardomainError` naming the unit and its log when a unit fails; what finished
    before stays on disk, so a re-run resumes.
    """
    cfg = cfg or ExecutorConfig()
    if threads is not None:
        check_threads(cfg, threads)
    out = Path(out_dir)
    log = log or (lambda msg: None)
    event = event or (lambda kind, **fields: None)
    board_done = {u.id for u in plan if job.is_done(u)}
    if len(board_done) == len(plan):
        log(f"nothing to do: finished (all {len(plan)} units done in {out}; results are re-assembled from them)")
    elif board_done:
        log(f"resuming: {len(board_done)} of {len(plan)} units done in {out} (kept, not recomputed)")
    backend = _backend(cfg.kind)(job, out, cfg, threads)
    board = Board(plan, parallel=backend.parallel, done=board_done)
    deaths: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    last_line = 0.0
    try:
        while len(board.done) < len(plan):
            room = backend.capacity - len(board.running)
            ready = plan.ready(board.done, board.running | board.elsewhere)[: max(0, room)]
            if ready:
                backend.submit(ready)
                board.running.update(u.id for u in ready)
            elif not board.running and not board.elsewhere:
                raise StardomainError("plan: no unit can start (a dependency cycle?)")  # Plan() forbids this
            for unit, rec in backend.wait(poll):
                if rec is None:
                    deaths[unit.id] = deaths.get(unit.id, 0) + 1
                    event("unit_lost", unit=unit.id, stage=unit.stage, attempt=deaths[unit.id])
                    board.running.discard(unit.id)
                    if deaths[unit.id] > cfg.retries:
                        raise StardomainError(
                            f"unit {unit.id}: its job died {deaths[unit.id]} times; "
                            f"see {log_path(out, unit)} and {backend.name} logs, then re-run to resume"
                        )
                    continue
                status = rec["status"]
                if status == "failed":
                    event("unit", **rec)
                    raise StardomainError(f"unit {unit.id} failed ({rec['error']}); log: {rec['log']}")
                if status == "busy":
                    board.running.discard(unit.id)
                    board.elsewhere.add(unit.id)  # another worker or run holds it: watch, don't compute
                    continue
                board.finish(unit.id, rec.get("seconds"))
                records.append(rec)
                event("unit", **rec)
            for uid in sorted(board.elsewhere):
                unit = plan[uid]
                if job.is_done(unit):
                    board.finish(uid, None)
                else:
                    got = claims.read_claim(out / "claims" / f"{unit.slug}.claim")
                    if got is None or claims.is_stale(*got, stale_after=cfg.stale_after):
                        board.elsewhere.discard(uid)  # its holder gave up or died: ours to run again
            if time.monotonic() - last_line >= progress_every:
                log(board.line())
                last_line = time.monotonic()
    finally:
        backend.close()
    if records or len(board_done) < len(plan):  # a finished folder re-run has no board to show (nor an ETA to guess)
        log(board.line())
    return records
