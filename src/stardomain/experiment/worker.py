"""The worker side of every executor: run one unit under its claim and report what happened.

:func:`execute_unit` is what a Ray task or a SLURM array task calls (and the local executor, in
this process): it skips a unit already done, claims it (see :mod:`.claims`), removes temp files a
killed predecessor left, computes it with the picklable ``job`` under the run's fixed CPU thread count
and releases the claim. It never raises for the unit's own error: the record says ``failed`` with one
line and the log to read.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Protocol

from stardomain._util.fileio import remove_stray_temps
from stardomain.experiment import claims
from stardomain.experiment.plan import Unit


class UnitJob(Protocol):
    """What a worker needs to run units; picklable, it rebuilds its state from config + run folder."""

    def __call__(self, unit_id: str) -> None:
        """Compute the unit and write its output (atomically)."""

    def is_done(self, unit: Unit) -> bool:
        """Whether the unit's output exists and belongs to its current inputs."""

    def output(self, unit: Unit) -> Path:
        """The file the unit writes (an evaluation's name follows from its inputs' content hashes)."""

    # optional: prepare() -> None loads what every unit needs (data) once per worker process, untimed


def _remove_stray_temps(out_dir: Path, unit: Unit, target: Path) -> None:
    """Temp files a killed worker left beside this unit's output (our claim means nobody is writing them).

    Only the temps of this unit's own files (the output, its JSON, its per-epoch state), only in its own folder
    inside the run folder (never through a symlink), and its claim's temps in ``claims/``."""
    stem = target.stem
    states = [f".{stem}.{kind}.{ext}" for kind in ("train-state", "state") for ext in ("safetensors", "json")]
    names = [target.name, f"{stem}.json", *states]
    try:
        rel = target.parent.relative_to(out_dir)
    except ValueError:  # not inside the run folder: not ours to clean
        rel = None
    if rel is not None:
        remove_stray_temps(out_dir, older_than=time.time(), subfolders=[rel], targets=names)
    remove_stray_temps(out_dir, older_than=time.time() - 60, subfolders=["claims"], targets=[f"{unit.slug}.claim"])


def log_path(out_dir: str | os.PathLike, unit: Unit) -> Path:
    return Path(out_dir) / "logs" / f"{unit.slug}.log"


def execute_unit(
    job: UnitJob,
    unit: Unit,
    out_dir: str,
    stale_after: float = claims.STALE_AFTER,
    threads: int | None = None,
    on_claim: Callable[[claims.Claim | None], None] | None = None,
) -> dict[str, Any]:
    """Run one unit under its claim, with ``threads`` torch CPU threads (None: as they are); returns a record
    (never raises for the unit's own errors)."""
    from stardomain.training.execution import fixed_threads

    out = Path(out_dir)
    rec: dict[str, Any] = {"unit": unit.id, "stage": unit.stage, "host": socket.gethostname(), "pid": os.getpid()}
    if job.is_done(unit):
        return {**rec, "status": "skipped"}
    claim = claims.acquire(out / "claims" / f"{unit.slug}.claim", unit.id, stale_after=stale_after)
    if claim is None:
        return {**rec, "status": "busy"}
    if on_claim is not None:
        on_claim(claim)
    log = log_path(out, unit)
    try:
        if job.is_done(unit):  # finished by someone else between our check and our claim
            return {**rec, "status": "skipped"}
        _remove_stray_temps(out, unit, job.output(unit))
        log.parent.mkdir(parents=True, exist_ok=True)
        # the run's thread count, in a worker and in the driver's own process alike (restored afterwards):
        # a sum split over another number of threads rounds differently, so results would follow the machine
        with fixed_threads(threads):
            setup = time.perf_counter()
            if hasattr(job, "prepare"):  # a fresh worker loads its data once: not part of any unit's seconds
                job.prepare()
            rec["setup_seconds"] = round(time.perf_counter() - setup, 3)
            t0 = time.perf_counter()
            with open(log, "a") as f:
                f.write(
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')} start {unit.id} on {rec['host']} pid {rec['pid']}, "
                    f"{sys.modules['torch'].get_num_threads()} CPU thread(s)\n"
                )
            try:
                job(unit.id)
            except Exception as e:  # the unit's own failure: reported by the driver in one line
                with open(log, "a") as f:
                    f.write(traceback.format_exc())
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                return {**rec, "status": "failed", "error": f"{type(e).__name__}: {first}", "log": str(log)}
        seconds = round(time.perf_counter() - t0, 3)
        with open(log, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} done {unit.id} in {seconds} s\n")
        return {**rec, "status": "done", "seconds": seconds}
    finally:
        claim.release()
        if on_claim is not None:
            on_claim(None)
