"""Toy unit jobs for the executor tests: picklable, importable by Ray workers and submitit jobs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from stardomain.experiment.plan import Plan, Unit


def toy_plan(n_leaves: int = 4) -> Plan:
    """leaf/i writes i*i; sum waits for every leaf; final waits for sum."""
    leaves = [Unit(f"leaf/{i}", "leaf", f"leaves/{i}.txt") for i in range(n_leaves)]
    total = Unit("sum", "sum", "sum.txt", tuple(u.id for u in leaves))
    return Plan([*leaves, total, Unit("final", "final", "final.txt", ("sum",))])


class ToyJob:
    """Computes toy units; ``kill`` SIGKILLs the worker once, mid-write, on that unit; ``fail`` raises there."""

    def __init__(self, out: Path, kill: str | None = None, fail: str | None = None, sleep: float = 0.0):
        self.out, self.kill, self.fail, self.sleep = str(out), kill, fail, sleep

    def is_done(self, unit: Unit) -> bool:
        return self.output(unit).exists()

    def output(self, unit: Unit) -> Path:
        return Path(self.out) / unit.output

    def __call__(self, unit_id: str) -> None:
        out = Path(self.out)
        with open(out / "computed.log", "a") as f:  # one line per computation: tests count duplicates
            f.write(f"{unit_id} {os.getpid()}\n")
        time.sleep(self.sleep)
        if unit_id == self.fail:
            raise ValueError(f"toy failure in {unit_id}")
        if unit_id.startswith("leaf/"):
            i = int(unit_id.split("/")[1])
            target, text = out / "leaves" / f"{i}.txt", str(i * i)
        elif unit_id == "sum":
            target = out / "sum.txt"
            text = str(sum(int(p.read_text()) for p in sorted((out / "leaves").glob("*.txt"))))
        else:
            target, text = out / "final.txt", f"final {(out / 'sum.txt').read_text()}"
        marker = out / f"killed-{unit_id.replace('/', '_')}"
        if unit_id == self.kill and not marker.exists():
            marker.touch()
            target.parent.mkdir(parents=True, exist_ok=True)
            (target.parent / f".stardomain-{target.name}.partial.sd.tmp").write_text(text[:1])  # half a write, then die
            os.kill(os.getpid(), signal.SIGKILL)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".stardomain-{target.name}.{os.getpid()}.sd.tmp"  # atomic, stardomain's temp naming
        tmp.write_text(text)
        os.replace(tmp, target)


def experiment_kill_job(config: dict, out: Path, unit_id: str):
    """An ExperimentJob whose worker SIGKILLs itself once, after ``unit_id`` saved its first per-epoch state."""
    from stardomain.experiment.jobs import ExperimentJob

    class KillDuringTraining(ExperimentJob):
        def __init__(self) -> None:
            super().__init__(config, out)
            self.kill_unit, self.marker = unit_id, str(Path(out) / f"killed-{unit_id.replace('/', '_')}")

        def __getstate__(self) -> dict:
            return {**super().__getstate__(), "kill_unit": self.kill_unit, "marker": self.marker}

        def __call__(self, uid: str) -> None:
            if uid == self.kill_unit and not os.path.exists(self.marker):
                from stardomain.checkpoints import store

                Path(self.marker).touch()
                save = store.save

                def save_then_die(path, *args, **kwargs):
                    written = save(path, *args, **kwargs)
                    if ".train-state" in str(path):
                        os.kill(os.getpid(), signal.SIGKILL)
                    return written

                store.save = save_then_die
            super().__call__(uid)

    return KillDuringTraining()
