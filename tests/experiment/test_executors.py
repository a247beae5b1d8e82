"""Plans, claims and executors on toy plans: local, Ray (local instance) and submitit's local executor."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from executor_jobs import ToyJob, toy_plan

from stardomain.errors import StardomainError
from stardomain.experiment import claims
from stardomain.experiment.executors import ExecutorConfig, run_plan
from stardomain.experiment.plan import Board, Plan, Unit

EXPECTED = {"leaves/0.txt": "0", "leaves/1.txt": "1", "leaves/2.txt": "4", "leaves/3.txt": "9", "sum.txt": "14", "final.txt": "final 14"}


def outputs(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*.txt")) if not p.name.startswith(".")}


def computed(out: Path) -> list[str]:
    return [line.split()[0] for line in (out / "computed.log").read_text().splitlines()]


def leftovers(out: Path) -> list[str]:
    """Temp files, claims and break markers: none may survive a finished run."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp") or p.suffix in (".claim", ".break"))


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def event_writer(out: Path):
    def event(kind: str, **fields) -> None:
        with open(out / "events.jsonl", "a") as f:
            f.write(json.dumps({"event": kind, **fields}) + "\n")

    return event


# -- plans and progress ---------------------------------------------------------------------------------------------


def test_plan_checks_order_and_ids():
    a = Unit("a", "s", "a.txt")
    with pytest.raises(StardomainError, match="unit b waits for a, which is not planned before it"):
        Plan([Unit("b", "s", "b.txt", ("a",)), a])
    with pytest.raises(StardomainError, match="appears twice"):
        Plan([a, a])
    with pytest.raises(StardomainError, match="share a claim file"):
        Plan([Unit("x/y", "s", "1"), Unit("x:y", "s", "2")])
    plan = toy_plan(3)
    assert [[u.id for u in w] for w in plan.waves()] == [["leaf/0", "leaf/1", "leaf/2"], ["sum"], ["final"]]
    assert [u.id for u in plan.ready({"leaf/0"}, {"leaf/1"})] == ["leaf/2"]
    assert [u.id for u in plan.ready({"leaf/0", "leaf/1", "leaf/2"}, set())] == ["sum"]


def test_board_counts_per_stage_and_eta():
    plan = toy_plan(4)
    board = Board(plan, parallel=2)
    assert board.line().endswith("ETA ?")
    board.running.add("leaf/1")
    board.elsewhere.add("leaf/2")
    board.finish("leaf/0", 10.0)
    assert board.counts()["leaf"] == {"done": 1, "running": 2, "waiting": 1}
    # 3 leaves at 10 s + sum and final at the overall mean (10 s), two at a time
    assert board.eta_seconds() == pytest.approx(25.0)
    assert board.line().startswith("leaf 1/4 done, 2 running, 1 waiting | sum 0/1 done")


# -- claims -----------------------------------------------------------------------------------------------------------


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_claim_is_exclusive_and_released(tmp_path):
    path = tmp_path / "u.claim"
    first = claims.acquire(path, "u")
    assert first is not None and json.loads(path.read_text())["pid"] == os.getpid()
    assert claims.acquire(path, "u") is None  # held by a live process: never broken
    first.release()
    assert not path.exists()
    again = claims.acquire(path, "u")
    assert again is not None
    first.release()  # a stale handle never removes someone else's claim
    assert path.exists()
    again.release()


def test_claim_broken_only_when_stale(tmp_path):
    path = tmp_path / "u.claim"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "token": "x"}))
    taken = claims.acquire(path, "u")  # same host, dead process
    assert taken is not None
    taken.release()
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "token": "x"}))
    assert claims.acquire(path, "u", stale_after=60) is None  # another host, fresh heartbeat
    old = time.time() - 120
    os.utime(path, (old, old))
    taken = claims.acquire(path, "u", stale_after=60)  # another host, silent for 2 minutes
    assert taken is not None
    taken.release()


def test_claim_heartbeat_keeps_it_fresh(tmp_path):
    path = tmp_path / "u.claim"
    held = claims.acquire(path, "u", stale_after=0.5)
    old = time.time() - 100
    os.utime(path, (old, old))
    time.sleep(0.4)  # heartbeat every 0.1 s
    assert time.time() - path.stat().st_mtime < 1.0
    held.release()


# -- the local executor -----------------------------------------------------------------------------------------------


def test_local_runs_plan_records_workers_and_resumes(tmp_path):
    lines: list[str] = []
    recs = run_plan(toy_plan(), ToyJob(tmp_path), tmp_path, log=lines.append, event=event_writer(tmp_path))
    assert outputs(tmp_path) == EXPECTED and leftovers(tmp_path) == []
    assert sorted(computed(tmp_path)) == sorted(u.id for u in toy_plan())
    ev = [e for e in events(tmp_path) if e["event"] == "unit"]
    assert {e["unit"] for e in ev} == {u.id for u in toy_plan()}
    assert all(e["host"] == socket.gethostname() and e["pid"] == os.getpid() and e["seconds"] >= 0 for e in ev)
    assert len(recs) == 6 and lines[-1].startswith("leaf 4/4 done, 0 running, 0 waiting")
    assert (tmp_path / "logs" / "leaf_0.log").read_text().count("done leaf/0") == 1
    assert run_plan(toy_plan(), ToyJob(tmp_path), tmp_path) == []  # all done: nothing runs again


def test_failing_unit_stops_with_one_line_and_rerun_resumes(tmp_path):
    with pytest.raises(StardomainError) as e:
        run_plan(toy_plan(), ToyJob(tmp_path, fail="sum"), tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("unit sum failed (ValueError: toy failure in sum); log: ")
    log = Path(msg.rsplit("log: ", 1)[1])
    assert log == tmp_path / "logs" / "sum.log" and "Traceback" in log.read_text()
    assert not (tmp_path / "sum.txt").exists() and leftovers(tmp_path) == []
    run_plan(toy_plan(), ToyJob(tmp_path), tmp_path)
    assert outputs(tmp_path) == EXPECTED
    assert computed(tmp_path).count("leaf/0") == 1 and computed(tmp_path).count("sum") == 2


def test_unit_held_by_live_claim_is_waited_for_not_computed(tmp_path):
    """A unit another run holds is watched: when its output appears the plan goes on without computing it."""
    held = claims.acquire(tmp_path / "claims" / "leaf_2.claim", "leaf/2")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time, pathlib, sys; time.sleep(1.5); "
            "p = pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True, exist_ok=True); p.write_text('4')",
            str(tmp_path / "leaves" / "2.txt"),
        ]
    )
    run_plan(toy_plan(), ToyJob(tmp_path), tmp_path, poll=0.1)
    child.wait()
    held.release()
    assert outputs(tmp_path) == EXPECTED and "leaf/2" not in computed(tmp_path)


def test_two_drivers_on_one_folder_share_the_work(tmp_path, worker_path):
    """Two processes run the same plan on one folder: every unit computed exactly once, one correct result."""
    code = (
        "import sys; from pathlib import Path; from executor_jobs import ToyJob, toy_plan; "
        "from stardomain.experiment.executors import run_plan; "
        "out = Path(sys.argv[1]); run_plan(toy_plan(6), ToyJob(out, sleep=0.3), out, poll=0.05)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sorted(computed(tmp_path)) == sorted(u.id for u in toy_plan(6))
    assert outputs(tmp_path)["final.txt"] == "final 55" and leftovers(tmp_path) == []
    pids = {line.split()[1] for line in (tmp_path / "computed.log").read_text().splitlines()}
    assert len(pids) == 2  # both drivers did some of it


def test_executor_config_is_checked():
    with pytest.raises(StardomainError, match="executor.kind: one of local, ray, slurm"):
        ExecutorConfig(kind="dask")
    with pytest.raises(StardomainError, match="SLURM allocates whole GPUs"):
        ExecutorConfig(kind="slurm", gpus_per_unit=0.5)
    assert ExecutorConfig(kind="ray", gpus_per_unit=0.25).gpus_per_unit == 0.25


def test_command_line_overrides_the_yaml_executor():
    from stardomain.experiment.executors import with_overrides

    yaml_cfg = ExecutorConfig(kind="slurm", partition="gpu", gpus_per_unit=1)
    assert with_overrides(yaml_cfg, workers=8).array_parallelism == 8  # slurm: jobs of an array running at once
    ray = with_overrides(yaml_cfg, "ray", 3)
    assert (ray.kind, ray.workers, ray.gpus_per_unit) == ("ray", 3, 1)
    assert with_overrides(yaml_cfg) == yaml_cfg
    with pytest.raises(StardomainError, match="add --executor ray to use 4 workers"):
        with_overrides(ExecutorConfig(), workers=4)


def test_missing_extras_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(StardomainError, match=r"pip install 'stardomain\[ray\]'"):
        run_plan(toy_plan(), ToyJob(tmp_path), tmp_path, ExecutorConfig(kind="ray"))
    with pytest.raises(StardomainError, match=r"pip install 'stardomain\[slurm\]'"):
        run_plan(toy_plan(), ToyJob(tmp_path), tmp_path, ExecutorConfig(kind="slurm"))


def test_slurm_without_slurm_refuses_in_one_line(tmp_path):
    pytest.importorskip("submitit")
    if subprocess.run(["which", "sbatch"], capture_output=True).returncode == 0:
        pytest.skip("this machine has SLURM")
    with pytest.raises(StardomainError, match="no SLURM here .*executor.cluster: local"):
        run_plan(toy_plan(), ToyJob(tmp_path), tmp_path, ExecutorConfig(kind="slurm"))


# -- Ray and submitit ----------------------------------------------------------------------------------------------------


def test_ray_runs_units_on_two_workers(tmp_path, ray_instance):
    recs = run_plan(toy_plan(), ToyJob(tmp_path, sleep=0.2), tmp_path, ExecutorConfig(kind="ray"), event=event_writer(tmp_path))
    assert outputs(tmp_path) == EXPECTED and leftovers(tmp_path) == []
    assert len({r["pid"] for r in recs}) == 2 and all(r["pid"] != os.getpid() for r in recs)
    assert {e["unit"] for e in events(tmp_path) if e["event"] == "unit"} == {u.id for u in toy_plan()}


def test_ray_worker_killed_mid_unit_is_retried(tmp_path, ray_instance):
    run_plan(toy_plan(), ToyJob(tmp_path, kill="leaf/2"), tmp_path, ExecutorConfig(kind="ray"))
    assert outputs(tmp_path) == EXPECTED and leftovers(tmp_path) == []
    assert computed(tmp_path).count("leaf/2") == 2  # killed once, then done once


def test_submitit_local_arrays_and_killed_job(tmp_path, worker_path):
    pytest.importorskip("submitit")
    cfg = ExecutorConfig(kind="slurm", cluster="local", array_parallelism=2, time_min=5)
    events_seen = event_writer(tmp_path)
    recs = run_plan(toy_plan(), ToyJob(tmp_path, kill="leaf/1"), tmp_path, cfg, event=events_seen, poll=0.1)
    assert outputs(tmp_path) == EXPECTED and leftovers(tmp_path) == []
    assert computed(tmp_path).count("leaf/1") == 2
    assert [e["unit"] for e in events(tmp_path) if e["event"] == "unit_lost"] == ["leaf/1"]
    assert all(r["pid"] != os.getpid() for r in recs)
    assert all((tmp_path / "logs" / "slurm" / f"{r['job']}_0_log.out").exists() for r in recs)
    assert list((tmp_path / "logs" / "slurm").glob("*_log.out"))  # submitit's per-job logs in the run folder
