"""The experiment pipeline: config validation, a tiny end-to-end run, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cli_helpers import assert_one_line_error, run_cli
from stardomain.errors import StardomainError
from stardomain.experiment import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY = {
    "name": "tiny",
    "dataset": "digits",
    "seed": 0,
    "device": "cpu",
    "model": {"name": "mlp", "options": {"depth": 1, "width": 8}},
    "train": {"epochs": 3},
    "sources": 3,
    "held_out": 2,
    "star": {"recipe": {"epochs": 2}, "mu": 0.0},
    "eval": {"points": 5, "max_pairs": 3, "bn_samples": 256},
    "studies": {
        "barriers": True,
        "distances": True,
        "n_sources": {"sizes": [2, 3]},
        "bma": {"max_samples": 4},
        "fusion": {"sizes": [2], "mu": 1.0},
        "width_depth": {"settings": [{"width": 4}], "sources": 2, "held_out": 1},
        "optimizer": {"optimizer": "adam", "sources": 2, "held_out": 1},
    },
}


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.sources >= 2 and cfg.held_out >= 1


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"sorces": 3}, "unknown key 'sorces'"),
        ({"sources": "ten"}, "sources: expected an integer"),
        ({"sources": 1}, "|Z| must be >= 2"),
        ({"eval": {"points": 1}}, "eval.points"),
        ({"studies": {"fusion": {"sizes": [2], "mu": 0}}}, "mu > 0"),
        ({"studies": {"bma": {"max_sampels": 3}}}, "studies.bma: unknown key 'max_sampels'"),
        ({"star": {"t_sampling": "gaussian"}}, None),
        ({"logging": {"mlflow": True}}, "logging: unknown sink 'mlflow'"),
        ({"model": {"name": "mlp", "options": {"depth": 1}, "extra": 1}}, "model: unknown key 'extra'"),
    ],
)
def test_config_errors_are_one_line_and_name_the_key(tmp_path, capsys, patch, message):
    cfg = {**TINY, **patch}
    path = write_config(tmp_path / "bad.yaml", cfg)
    r = run_cli(capsys, "run", path, "--out", tmp_path / "out")
    assert_one_line_error(r, *([message] if message else ["t_sampling"]))
    assert not (tmp_path / "out" / "results.json").exists()


def test_invalid_yaml(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(StardomainError, match="not valid YAML at line"):
        load_config(p)


def _strip(results: dict) -> dict:
    return json.loads(json.dumps(results))


def test_tiny_experiment_end_to_end(tmp_path, capsys):
    cfg = write_config(tmp_path / "tiny.yaml", TINY)
    r = run_cli(capsys, "run", cfg, "--out", tmp_path / "out", "-q")
    assert r.code == 0, r.err
    out = tmp_path / "out"
    res = json.loads((out / "results.json").read_text())
    assert res["schema_version"] == 1
    for section in ("barriers", "distances", "n_sources", "bma", "fusion", "width_depth", "optimizer", "models", "config", "dataset"):
        assert section in res, section
    groups = res["barriers"]["groups"]
    assert len(groups["regular-regular"]) == 3 and len(groups["star-source"]) == 3 and len(groups["star-held-out"]) == 2
    for pair in groups["regular-regular"]:
        c = pair["curve"]
        assert len(c["t"]) == 5 and c["t"][0] == 0.0 and c["t"][-1] == 1.0
        assert pair["l2_aligned"] <= pair["l2"] + 1e-6
        assert set(pair["barriers"]) == {"train_loss", "test_loss", "train_acc", "test_acc"}
    assert [row["n_sources"] for row in res["n_sources"]["rows"]] == [2, 3]
    assert res["bma"]["star_domain"]["k"] == [1, 2, 3, 4] and len(res["bma"]["ensemble"]["k"]) == 3
    assert res["fusion"]["rows"][0]["n_sources"] == 2
    assert res["width_depth"]["rows"][0]["options"]["width"] == 4
    assert res["optimizer"]["optimizer"] == "adam"
    report = (out / "report.md").read_text()
    for heading in ("Loss barriers", "ℓ2 distances", "number of sources", "Bayesian model averaging", "Model fusion", "Width and depth", "Optimizer"):
        assert heading in report, heading
    for png in ("barrier_curves.png", "n_sources.png", "bma.png", "width_depth.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # star metadata records its sources by content hash
    star_meta = json.loads((out / "stars" / "main-z3.json").read_text())
    assert len(star_meta["sources"]) == 3 and all(len(s["sha256"]) == 64 for s in star_meta["sources"])
    # a second run redoes nothing and gives identical results
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    r = run_cli(capsys, "run", cfg, "--out", out, "-q")
    assert r.code == 0, r.err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == mtimes
    assert json.loads((out / "results.json").read_text()) == res
    # a different experiment in the same folder is refused
    other = write_config(tmp_path / "other.yaml", {**TINY, "seed": 5})
    assert_one_line_error(run_cli(capsys, "run", other, "--out", out), "already holds a different experiment", "seed")


def test_killed_run_resumes_to_identical_results(tmp_path):
    cfg = {**TINY, "studies": {"barriers": True, "distances": True, "n_sources": {"sizes": [2, 3]}, "bma": {"max_samples": 3}},
           "train": {"epochs": 6}}
    path = write_config(tmp_path / "k.yaml", cfg)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "stardomain.cli", "run", str(path), "-q"]
    # reference: uninterrupted
    ref = subprocess.run(cmd + ["--out", str(tmp_path / "ref")], capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr
    # killed part-way (after some models exist but before the end), then resumed
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "zoo" / "main").glob("seed-*.json"))) >= 3 if (out / "zoo" / "main").exists() else False:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make the tiny config slower"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    # nothing half-written is visible as complete
    for p in out.rglob("*.json"):
        json.loads(p.read_text()) if not p.name.startswith(".") else None
    resumed = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "ref" / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert a == b


def test_missing_logging_package_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name == "tensorboard":
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    path = write_config(tmp_path / "tb.yaml", {**TINY, "logging": {"tensorboard": True}})
    r = run_cli(capsys, "run", path, "--out", tmp_path / "out")
    assert_one_line_error(r, "pip install 'stardomain[tensorboard]'")
