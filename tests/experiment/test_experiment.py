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
from paths import REPO

from stardomain.errors import StardomainError
from stardomain.experiment import load_config

CONFIGS = REPO / "configs"

from experiment_configs import TINY  # noqa: E402


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
    assert res["schema_version"] == 3
    for section in ("barriers", "distances", "n_sources", "bma", "fusion", "width_depth", "optimizer", "models", "config", "dataset"):
        assert section in res, section
    groups = res["barriers"]["groups"]
    assert len(groups["regular-regular"]) == 3 and len(groups["star-source"]) == 3 and len(groups["star-held-out"]) == 2
    # which pairs: recorded, disjoint first; the star meets every source
    record = res["barriers"]["pairs"]
    assert record["regular-regular"]["pairs"][0] == ["seed-0", "seed-1"] and record["regular-regular"]["possible"] == 3
    assert [b for _, b in record["star-source"]["pairs"]] == ["seed-0", "seed-1", "seed-2"]
    assert [[p["a"], p["b"]] for p in groups["regular-regular"]] == record["regular-regular"]["pairs"]
    # both endpoints of every barrier, and the poor-star flag (this 2-epoch star is far below its sources)
    ep = res["endpoints"]
    assert ep["sources"]["test_acc"]["n"] == 3 and ep["held_out"]["test_acc"]["n"] == 2
    assert ep["star_below_sources"] == (ep["sources"]["test_acc"]["mean"] - ep["star"]["test_acc"] > 0.01)
    assert res["models"]["has_batchnorm"] is False
    # every verdict comes from a stored test
    tests = res["tests"]
    assert tests["barriers"]["comparable"] == (not ep["star_below_sources"])
    assert {"regular_regular_vs_zero", "star_source_near_zero", "star_held_out_vs_regular"} <= set(tests["barriers"])
    assert set(tests["bma"]) == {"auroc_max_prob", "auroc_neg_entropy", "ece"} and tests["n_sources"]["first"] == 2
    # roles and seeds: held-out models are recorded as such; every star has its own seed, never a model's
    for name, role in (("seed-0", "source"), ("seed-1000", "held_out")):
        assert json.loads((out / "zoo" / "main" / f"{name}.json").read_text())["role"] == role
    stars = {p.stem: json.loads(p.read_text()) for p in (out / "stars").glob("*.json")}
    seeds = [m["seed"] for m in stars.values()]
    regular_seeds = {json.loads(p.read_text())["seed"] for p in (out / "zoo").rglob("seed-*.json")}
    assert len(stars) == 5 and len(set(seeds)) == len(seeds) and not set(seeds) & regular_seeds
    assert res["models"]["star_seed"] == stars["main-z3"]["seed"]
    # star.recipe (epochs: 2) trains the SGD stars; the Adam star is trained like the Adam sources
    assert stars["main-z3"]["starlight"]["recipe"]["epochs"] == 2
    adam = stars["opt-adam-z2"]["starlight"]["recipe"]
    assert adam["optimizer"] == "adam" and adam["epochs"] == 3 and adam == res["optimizer"]["recipe"]
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
    for heading in (
        "Loss barriers",
        "ℓ2 distances",
        "number of sources",
        "Bayesian model averaging",
        "Model fusion",
        "Width and depth",
        "Optimizer",
    ):
        assert heading in report, heading
    assert "BatchNorm statistics are re-estimated" not in report and "no BatchNorm" in report
    assert "Endpoints of these barriers" in report and "seed-0–seed-1" in report
    if ep["star_below_sources"]:
        star_verdicts = [ln for ln in report.splitlines() if ln.startswith("- star–") and "barrier" in ln]
        assert len(star_verdicts) == 3 and all("not comparable" in ln and "near 0" not in ln for ln in star_verdicts)
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
    cfg = {
        **TINY,
        "studies": {"barriers": True, "distances": True, "n_sources": {"sizes": [2, 3]}, "bma": {"max_samples": 3}},
        "train": {"epochs": 6},
    }
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
    for name in ("results.json", "report.md"):
        assert (tmp_path / "ref" / name).read_bytes() == (out / name).read_bytes(), name


def test_config_resolves_names_to_registry_keys(tmp_path):
    cfg = load_config(
        write_config(tmp_path / "a.yaml", {**TINY, "dataset": "Sklearn-Digits", "model": {"name": "MLP", "options": {"width": 8}}})
    )
    assert cfg.dataset == "digits" and cfg.model.name == "mlp"
    assert cfg.to_dict()["dataset"] == "digits"
    assert cfg.source_recipe() == load_config(write_config(tmp_path / "b.yaml", TINY)).source_recipe()
    with pytest.raises(StardomainError, match="dataset: unknown 'fmnst'"):
        load_config(write_config(tmp_path / "c.yaml", {**TINY, "dataset": "fmnst"}))


def test_optimizer_star_recipe_is_its_own(tmp_path):
    base = {**TINY, "star": {"recipe": {"epochs": 7, "lr": 0.3}}}
    cfg = load_config(write_config(tmp_path / "a.yaml", base))
    star = cfg.star_recipe(cfg.optimizer_recipe(), cfg.studies.optimizer.star_recipe)
    assert star.optimizer == "adam" and star.lr == 1e-3 and star.epochs == 3  # no SGD star override leaks in
    opt = {**TINY["studies"]["optimizer"], "star_recipe": {"epochs": 5}}
    cfg = load_config(write_config(tmp_path / "b.yaml", {**base, "studies": {**TINY["studies"], "optimizer": opt}}))
    assert cfg.star_recipe(cfg.optimizer_recipe(), cfg.studies.optimizer.star_recipe).epochs == 5
    bad = {**opt, "star_recipe": {"epoch": 5}}
    with pytest.raises(StardomainError, match="studies.optimizer.star_recipe"):
        load_config(write_config(tmp_path / "c.yaml", {**TINY, "studies": {**TINY["studies"], "optimizer": bad}}))


def test_pipeline_matching_sample_sees_every_class(tmp_path):
    from stardomain.data import matching_sample
    from stardomain.experiment import Experiment

    cfg = load_config(write_config(tmp_path / "a.yaml", {**TINY, "eval": {"matching_samples": 50, "align": "activation"}}))
    exp = Experiment(cfg, tmp_path / "out")
    # a class-sorted training set: a prefix would hold one class, the pipeline's sample holds all of them
    order = exp.dataset.train_y.argsort(stable=True)
    exp.dataset.train_x, exp.dataset.train_y = exp.dataset.train_x[order], exp.dataset.train_y[order]
    x = matching_sample(exp.dataset, cfg.eval.matching_samples, seed=0)  # what the pairs and BMA of this run correlate on
    assert x.shape[0] == 50
    label_of = {r.numpy().tobytes(): int(y) for r, y in zip(exp.dataset.train_x, exp.dataset.train_y)}
    assert len({label_of[r.numpy().tobytes()] for r in x}) == exp.dataset.num_classes
    assert len({label_of[r.numpy().tobytes()] for r in exp.dataset.train_x[:50]}) == 1  # what train_x[:50] would see
    assert "matching_samples" in exp.pair_call(tmp_path / "a", tmp_path / "b").settings
    assert "matching_samples" not in exp.pair_call(tmp_path / "a", tmp_path / "b", align="weight").settings


def test_missing_logging_package_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: find_spec gives None, import fails
    path = write_config(tmp_path / "tb.yaml", {**TINY, "logging": {"tensorboard": True}})
    r = run_cli(capsys, "run", path, "--out", tmp_path / "out")
    assert_one_line_error(r, "pip install 'stardomain[tensorboard]'")
    assert not (tmp_path / "out").exists()  # refused before the folder was claimed or any data read
