"""`stardomain run --dry-run` (issue 33, item 7): the plan's every unit by kind and an estimate from measured unit
costs, with nothing trained and nothing written (not even the run folder)."""

from __future__ import annotations

import json

import yaml
from cli_helpers import run_cli, tiny_config

from stardomain.experiment import Experiment
from stardomain.experiment.config import ExperimentConfig, from_dict
from stardomain.experiment.units import build_plan


def _snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_dry_run_lists_every_unit_and_trains_and_writes_nothing(tmp_path, capsys):
    cfg = tiny_config("dry", studies={"barriers": True, "distances": False, "fusion": {"sizes": [2], "mu": 1.0}, "bma": {"max_samples": 2}})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    before = _snapshot(tmp_path)
    r = run_cli(capsys, "run", path, "--out", out, "--dry-run", "-q")
    assert r.code == 0, r.err
    assert not out.exists() and _snapshot(tmp_path) == before  # not even the run folder
    plan = build_plan(Experiment(from_dict(ExperimentConfig, cfg), out)).plan
    listed = {ln.strip().split("  ")[0] for ln in r.out.splitlines() if ln.startswith("  ")}
    assert listed == {u.id for u in plan.units}
    head = r.out.splitlines()[0]
    n_train = sum(u.stage == "train" for u in plan.units)
    n_pairs = sum(u.stage == "pairs" for u in plan.units)
    assert f"{len(plan.units)} units" in head and f"{n_train} of {n_train} models to train" in head
    assert f"{n_pairs} of {n_pairs} pair evaluations" in head and "other evaluations" in head and "stars" in head
    assert "no measured costs yet" in r.out

    # a folder whose events.jsonl measured some units: the estimate uses them (same unit, else its stage); read only
    out.mkdir()
    train = [u.id for u in plan.units if u.stage == "train"]
    events = [{"event": "unit", "unit": train[0], "stage": "train", "status": "done", "seconds": 120.0}]
    events += [{"event": "unit", "unit": "pair/x", "stage": "pairs", "status": "done", "seconds": 6.0}]
    (out / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"cut short')
    before = _snapshot(tmp_path)
    r = run_cli(capsys, "run", path, "--out", out, "--dry-run", "-q")
    assert r.code == 0, r.err
    assert _snapshot(tmp_path) == before
    expected = (120.0 * n_train + 6.0 * n_pairs) / 60
    assert f"estimate: ~{expected:.1f} min for {len(plan.units)} units" in r.out, r.out
    assert "no measured cost for stage star" in r.out
