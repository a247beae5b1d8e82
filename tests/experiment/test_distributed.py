"""One tiny experiment, three executors: local, Ray (local instance, 2 workers) and submitit's local
executor must write byte-identical results.json and report.md; a SIGKILLed worker and two runs on
one folder must not change a byte of them either."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import assert_one_line_error, run_cli
from paths import REPO

from stardomain.errors import StardomainError
from stardomain.experiment.config import ExperimentConfig, from_dict
from stardomain.experiment.executors import ExecutorConfig
from stardomain.experiment.pipeline import Experiment
from stardomain.experiment.runner import run_experiment
from stardomain.experiment.units import build_plan

TINY = {
    "name": "tiny-dist",
    "dataset": "digits",
    "seed": 0,
    "device": "cpu",
    "model": {"name": "mlp", "options": {"depth": 1, "width": 8}},
    "train": {"epochs": 3},
    "sources": 2,
    "held_out": 1,
    "star": {"recipe": {"epochs": 2}, "mu": 0.0},
    "eval": {"points": 3, "max_pairs": 1, "bn_samples": 128, "eval_train_samples": 256},
    "studies": {"barriers": True, "distances": True},
}
FILES = ("results.json", "report.md")


def cfg(**executor) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {**TINY, "executor": executor} if executor else TINY)


def leftovers(out: Path) -> list[str]:
    """Temp files, claims, break markers and per-epoch training states: none may survive a finished run."""
    return sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.name.endswith(".tmp") or p.suffix in (".claim", ".break") or ".train-state" in p.name or ".state." in p.name
    )


def same_results(a: Path, b: Path) -> None:
    for f in FILES:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def unit_events(out: Path) -> list[dict]:
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e["event"] == "unit" and e["status"] == "done"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    run_experiment(cfg(), out, progress=False)
    return out


def test_plan_covers_every_study_of_run(tmp_path):
    """Every study's models and evaluations are units, and run() in assemble mode computes nothing itself
    (so test_experiment's all-studies run, which assembles after the plan, proves the plan misses nothing)."""
    from experiment_configs import TINY as FULL

    exp = Experiment(from_dict(ExperimentConfig, FULL), tmp_path, progress=False)
    plan = build_plan(exp).plan
    stages = {u.stage for u in plan}
    assert stages == {"train", "star", "pairs", "bma", "fusion"}
    assert all(plan[d] for u in plan for d in u.waits_for)
    with pytest.raises(StardomainError, match="missing when the results are assembled"):
        exp.run(assemble=True)


def test_local_executor_records_units(reference):
    ev = unit_events(reference)
    plan = build_plan(Experiment(cfg(), reference, progress=False)).plan
    assert sorted(e["unit"] for e in ev) == sorted(u.id for u in plan)
    assert all(e["pid"] == os.getpid() and e["seconds"] >= 0 for e in ev)
    assert leftovers(reference) == []


def test_ray_gives_identical_results(tmp_path, reference, ray_instance):
    lines: list[str] = []
    run_experiment(cfg(kind="ray"), tmp_path, progress=False, log=lines.append)
    same_results(reference, tmp_path)
    ev = unit_events(tmp_path)
    assert len({e["pid"] for e in ev}) == 2 and os.getpid() not in {e["pid"] for e in ev}
    assert any(line.startswith("train 3/3 done") for line in lines) and leftovers(tmp_path) == []


def test_ray_with_repeated_stars_and_a_batched_zoo_equals_local(tmp_path, ray_instance):
    """Repeated stars and batched zoo groups are units like any other: Ray writes the same bytes."""
    both = {**TINY, "train": {"epochs": 3, "batch_models": 2}, "star": {**TINY["star"], "repeats": 2}}
    run_experiment(from_dict(ExperimentConfig, both), tmp_path / "local", progress=False)
    run_experiment(from_dict(ExperimentConfig, {**both, "executor": {"kind": "ray"}}), tmp_path / "ray", progress=False)
    same_results(tmp_path / "local", tmp_path / "ray")
    units = {e["unit"] for e in unit_events(tmp_path / "ray")}
    assert {"train/main/seeds-0-1", "star/main-z2", "star/main-z2-r1"} <= units
    assert leftovers(tmp_path / "ray") == []


def test_ray_worker_killed_while_training_changes_nothing(tmp_path, reference, ray_instance):
    from executor_jobs import experiment_kill_job

    from stardomain.experiment.executors import run_plan

    config = cfg()
    exp = Experiment(config, tmp_path, progress=False)
    plan = build_plan(exp).plan
    job = experiment_kill_job(config.to_dict(), tmp_path, "train/main/seed-1")
    run_plan(plan, job, tmp_path, ExecutorConfig(kind="ray"))
    assert (tmp_path / "killed-train_main_seed-1").exists()  # the worker did die mid-training
    (tmp_path / "killed-train_main_seed-1").unlink()
    run_experiment(config, tmp_path, progress=False)  # every unit done: only assembles
    same_results(reference, tmp_path)
    assert leftovers(tmp_path) == []


def test_submitit_local_executor_gives_identical_results(tmp_path, reference, worker_path):
    pytest.importorskip("submitit")
    # 4 units per array task: 3 job processes (trainings, star, pairs) instead of 8
    run_experiment(cfg(kind="slurm", cluster="local", array_parallelism=2, units_per_job=4), tmp_path, progress=False)
    same_results(reference, tmp_path)
    assert list((tmp_path / "logs" / "slurm").glob("*_log.out")) and leftovers(tmp_path) == []


def test_two_runs_on_one_folder_cooperate(tmp_path, reference):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "stardomain.cli", "run", str(config), "--out", str(out), "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    same_results(reference, out)
    ev = unit_events(out)
    assert len(ev) == len({e["unit"] for e in ev})  # no unit computed twice
    assert leftovers(out) == []


def test_cli_executor_flags(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    res = run_cli(capsys, "run", config, "--out", tmp_path / "o", "--workers", "2")
    assert_one_line_error(res, "the local executor runs one unit at a time", "--executor ray")
    config.write_text(yaml.safe_dump({**TINY, "executor": {"kind": "slurm", "gpus_per_unit": 0.5}}))
    assert_one_line_error(run_cli(capsys, "run", config, "--out", tmp_path / "o"), "SLURM allocates whole GPUs")
    if shutil.which("sbatch") is None:  # refused before any data is loaded or any file written
        config.write_text(yaml.safe_dump(TINY))
        assert_one_line_error(run_cli(capsys, "run", config, "--out", tmp_path / "o", "--executor", "slurm"), "no SLURM here")
        assert not (tmp_path / "o").exists()


def test_train_zoo_on_ray_matches_local(tmp_path, capsys, ray_instance):
    args = ["train", "-d", "digits", "-o", "width=8", "-o", "depth=1", "--epochs", "2", "--n", "3", "--role", "held_out", "-q"]
    r = run_cli(capsys, *args, "--out", tmp_path / "ray", "--executor", "ray")
    assert r.code == 0, r.err
    assert r.out.count("test_acc=") == 3
    assert run_cli(capsys, *args, "--out", tmp_path / "local").code == 0
    for s in range(3):
        assert (tmp_path / "ray" / f"seed-{s}.safetensors").read_bytes() == (tmp_path / "local" / f"seed-{s}.safetensors").read_bytes()
        meta = json.loads((tmp_path / "ray" / f"seed-{s}.json").read_text())
        assert meta["role"] == "held_out" and meta["seed"] == s
    assert leftovers(tmp_path / "ray") == []


def test_slurm_config_is_the_paper_study_with_only_the_executor_changed():
    from stardomain.experiment import load_config

    configs = REPO / "configs"
    slurm, plain = load_config(configs / "cifar10_resnet18_slurm.yaml"), load_config(configs / "cifar10_resnet18.yaml")
    assert slurm.to_dict() == plain.to_dict()  # same experiment.json, same results.json
    assert (slurm.executor.kind, slurm.sources, slurm.held_out, slurm.executor.gpus_per_unit) == ("slurm", 50, 5, 1)
