"""`stardomain run` with repeated stars, the BatchNorm ablation and batched zoo training (issues 18 and 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from paths import REPO

from stardomain import StardomainError
from stardomain.checkpoints import store
from stardomain.experiment import ExperimentConfig, run_experiment
from stardomain.experiment.config import from_dict
from stardomain.experiment.pipeline import Experiment
from stardomain.starlight import repeat_seed

BASE = {
    "name": "rep",
    "dataset": "digits",
    "seed": 0,
    "device": "cpu",
    "model": {"name": "mlp", "options": {"depth": 1, "width": 8}},
    "train": {"epochs": 2},
    "sources": 3,
    "held_out": 2,
    "star": {"recipe": {"epochs": 1}, "repeats": 2},
    "eval": {"points": 3, "max_pairs": 2, "bn_samples": 128},
    "studies": {"barriers": True, "distances": True, "n_sources": {"sizes": [2, 3]}},
}


def config(**over) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {**BASE, **over})


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    run_experiment(config(), out, progress=False)
    return out


def test_repeats_give_distinct_recorded_stars_and_spreads_over_stars(reference):
    res = json.loads((reference / "results.json").read_text())
    stars = res["models"]["stars"]
    assert res["models"]["repeats"] == 2 and [s["repeat"] for s in stars] == [0, 1]
    assert [s["path"] for s in stars] == ["stars/main-z3.safetensors", "stars/main-z3-r1.safetensors"]
    assert [s["seed"] for s in stars] == [repeat_seed(0, r, "main-z3") for r in range(2)]
    assert res["models"]["star_seed"] == stars[0]["seed"]  # repeat 0 is the single star of older runs
    sources = {json.loads(p.read_text())["seed"] for p in (reference / "zoo").rglob("seed-*.json")}
    assert not {s["seed"] for s in stars} & sources
    a, b = (store.load_state(reference / s["path"])[0] for s in stars)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two different models, not one saved twice
    for s in stars:
        meta = store.read_metadata(reference / s["path"])
        assert (meta["repeat"], meta["repeats"]) == (s["repeat"], 2)
    summary = res["barriers"]["summary"]
    for g, per_star in (("star-source", 3), ("star-held-out", 2)):
        o = summary[g]["over_stars"]["test_loss"]
        assert o["n_stars"] == 2 and o["n_pairs"] == 2 * per_star and [ps["n"] for ps in o["per_star"]] == [per_star] * 2
        assert o["over_pairs"]["mean"] == pytest.approx(summary[g]["barriers"]["test_loss"]["mean"])
        pooled = [p["barriers"]["test_loss"] for p in res["barriers"]["groups"][g]]
        assert summary[g]["values_by_star"]["test_loss"] == [pooled[:per_star], pooled[per_star:]]
    assert "over_stars" not in summary["regular-regular"]
    d = res["distances"]["star-held-out"]["over_stars"]["l2_aligned"]  # distances are star figures too
    assert d["n_stars"] == 2 and d["over_pairs"]["mean"] == pytest.approx(res["distances"]["star-held-out"]["l2_aligned"]["mean"])
    assert res["tests"]["distances"]["star_held_out_vs_regular_over_stars"]["a"]["n"] == 2
    t = res["tests"]["barriers"]
    assert t["n_stars"] == 2 and t["star_held_out_vs_regular_over_stars"]["a"]["n"] == 2
    row = res["n_sources"]["rows"][0]
    assert row["star_seeds"] == [repeat_seed(0, r, "main-z2") for r in range(2)] and row["over_stars"]["test_loss"]["n_stars"] == 2
    trend = res["tests"]["n_sources"]
    assert trend["n_stars"] == 2 and trend["trend_over_stars"]["a"]["n"] == trend["trend_over_stars"]["b"]["n"] == 2
    m = res["tests"]["metric"]  # the trend is tested on the verdicts' metric (eval.metric)
    means = [[ps["mean"] for ps in r["over_stars"][m]["per_star"]] for r in res["n_sources"]["rows"]]
    assert trend["trend_over_stars"]["diff"] == pytest.approx(sum(means[-1]) / 2 - sum(means[0]) / 2)
    report = (reference / "report.md").read_text()
    assert "over 2 stars per size (n = per-star means)" in report and "ℓ2 w/ perm over stars" in report
    assert "over stars = mean ± sample std of the per-star means" in report and "over 2 stars" in report
    assert "(2 stars)" in report


def test_run_killed_after_repeat_0_resumes_to_identical_files(reference, tmp_path, monkeypatch):
    real = Experiment.star_model

    def star_model(self, tag, *args, **kwargs):
        if tag == "main-z3-r1":
            assert store.is_complete(self.star_path("main-z3"))  # killed after repeat 0's star was written
            raise Killed("killed")
        return real(self, tag, *args, **kwargs)

    monkeypatch.setattr(Experiment, "star_model", star_model)
    with pytest.raises(StardomainError, match="Killed: killed"):
        run_experiment(config(), tmp_path, progress=False)
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "stars" / "main-z3-r1.safetensors").exists()
    monkeypatch.setattr(Experiment, "star_model", real)
    run_experiment(config(), tmp_path, progress=False)
    for name in ("results.json", "report.md"):
        assert (tmp_path / name).read_bytes() == (reference / name).read_bytes(), name


def test_one_star_says_its_spread_over_stars_is_unknown(tmp_path):
    res = run_experiment(config(star={"recipe": {"epochs": 1}}, studies={"barriers": True, "distances": False}), tmp_path, progress=False)
    assert res["models"]["repeats"] == 1 and "repeats" not in res["config"]["star"]  # old configs stay identical
    assert res["barriers"]["summary"]["star-held-out"]["over_stars"]["test_loss"]["n_stars"] == 1
    assert res["tests"]["barriers"]["n_stars"] == 1 and "star_held_out_vs_regular_over_stars" not in res["tests"]["barriers"]
    assert "one star: the spread over stars is unknown" in (tmp_path / "report.md").read_text()
    # more repeats in the same folder only add stars: repeat 0 is the star already there
    star0 = tmp_path / "stars" / "main-z3.safetensors"
    before = star0.stat().st_mtime_ns
    more = run_experiment(
        config(star={"recipe": {"epochs": 1}, "repeats": 2}, studies={"barriers": True, "distances": False}), tmp_path, progress=False
    )
    assert star0.stat().st_mtime_ns == before and more["models"]["repeats"] == 2
    assert more["barriers"]["groups"]["regular-regular"] == res["barriers"]["groups"]["regular-regular"]


def test_repeats_below_one_is_refused():
    from stardomain.errors import StardomainError

    with pytest.raises(StardomainError, match=r"star.repeats: must be >= 1 \(got 0\)"):
        config(star={"repeats": 0})


def test_bn_ablation_on_a_bn_model_gives_both_protocols_and_they_differ(tmp_path):
    cfg = config(
        model={"name": "resnet20", "options": {"width": 0.25}},
        subset=300,
        sources=2,
        held_out=1,
        train={"epochs": 2},
        star={"recipe": {"epochs": 1}},
        eval={"points": 3, "max_pairs": 1, "bn_ablation": True},
        studies={"barriers": True, "distances": False},
    )
    res = run_experiment(cfg, tmp_path, progress=False)
    ab = res["bn_ablation"]
    assert ab["applicable"] and set(ab["groups"]) == {"regular-regular", "star-source", "star-held-out"}
    for name, g in ab["groups"].items():
        v = g["test_loss"]["values"]
        assert len(v["reset"]) == len(v["interpolate"]) == g["n_pairs"] == len(res["barriers"]["groups"][name])
        assert v["reset"] == [p["barriers"]["test_loss"] for p in res["barriers"]["groups"][name]]  # the main study's pairs
        assert g["test_loss"]["difference"]["mean"] == pytest.approx(
            sum(b - a for a, b in zip(v["reset"], v["interpolate"])) / len(v["reset"])
        )
    assert any(
        v != r for g in ab["groups"].values() for r, v in zip(g["test_loss"]["values"]["reset"], g["test_loss"]["values"]["interpolate"])
    )
    assert set(res["tests"]["bn_ablation"]) == set(ab["groups"]) and all("paired" in t for t in res["tests"]["bn_ablation"].values())
    keys = [json.loads(p.read_text())["key"] for p in (tmp_path / "cache" / "pairs").glob("*.json")]
    bns = [k["settings"]["bn"] for k in keys]
    assert bns.count("interpolate") == bns.count("reset") == 4  # own cache entries
    report = (tmp_path / "report.md").read_text()
    assert "## BatchNorm ablation" in report and "interpolated" in report


def test_bn_ablation_is_not_applicable_without_batchnorm(tmp_path):
    res = run_experiment(
        config(
            star={"recipe": {"epochs": 1}},
            eval={"points": 3, "max_pairs": 1, "bn_ablation": True},
            studies={"barriers": True, "distances": False},
        ),
        tmp_path,
        progress=False,
    )
    assert res["bn_ablation"]["applicable"] is False and "bn_ablation" not in res["tests"]
    assert {json.loads(p.read_text())["key"]["settings"]["bn"] for p in (tmp_path / "cache" / "pairs").glob("*.json")} == {"reset"}
    assert "BatchNorm ablation" not in (tmp_path / "report.md").read_text()


def test_batch_models_trains_the_same_zoo_and_the_run_completes(reference, tmp_path):
    cfg = config(train={"epochs": 2, "batch_models": 2})
    assert cfg.batch_models == 2 and "batch_models" not in cfg.train and cfg.source_recipe() == config().source_recipe()
    res = run_experiment(cfg, tmp_path, progress=False)
    assert res["config"]["train"]["batch_models"] == 2
    for p in sorted((reference / "zoo" / "main").glob("seed-*.safetensors")):
        mine = tmp_path / "zoo" / "main" / p.name
        a, ma = store.load_state(p)
        b, mb = store.load_state(mine)
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), p.name
        assert mb.get("batched", {"models_per_pass": 1})["models_per_pass"] in (1, 2) and "batched" not in ma
        assert ma["identity"] == mb["identity"] if "identity" in ma else ma["seed"] == mb["seed"]
    assert json.loads((tmp_path / "zoo" / "main" / "seed-0.json").read_text())["batched"]["seeds"] == [0, 1]
    # the same run folder accepts the one-at-a-time config: a batched member is the same run
    again = run_experiment(config(), tmp_path, progress=False)
    assert again["barriers"]["summary"].keys() == res["barriers"]["summary"].keys()


def test_paired_t_sees_a_shift_that_the_pair_spread_hides():
    from stardomain.analysis.stats import compare, paired_t

    reset = [0.10, 0.40, 0.20, 0.30, 0.15]
    interp = [r + 0.02 + e for r, e in zip(reset, [0.001, -0.002, 0.0, 0.002, -0.001])]
    assert compare(interp, reset)["direction"] == 0  # two samples: the pair-to-pair spread swamps 0.02
    pt = paired_t(interp, reset)
    assert pt["direction"] == 1 and pt["ci"][0] > 0 and pt["difference"]["mean"] == pytest.approx(0.02)
    assert paired_t([0.2], [0.1])["direction"] == 0  # one pair: no interval


def test_readme_tables_script_quotes_the_run_with_both_spreads(reference):
    import subprocess
    import sys

    repo = REPO
    r = subprocess.run(
        [sys.executable, str(repo / "scripts" / "results_tables.py"), "cnn", str(reference)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    res = json.loads((reference / "results.json").read_text())
    sh = res["barriers"]["summary"]["star-held-out"]
    o = sh["over_stars"]["test_loss"]["over_stars"]
    assert f"{sh['barriers']['test_loss']['mean']:.3f} ± {sh['barriers']['test_loss']['std']:.3f} (n=4)" in r.stdout
    assert f"{o['mean']:.3f} ± {o['std']:.3f} (k=2)" in r.stdout
    for claim in (
        "star–held-out below regular–regular (over 2 stars)",
        "the same over 2 stars per \\|Z\\|",
        "star closer in ℓ2 (over 2 stars)",
    ):
        assert claim in r.stdout, claim
    assert "| rep | 2 | " in r.stdout and "| rep | 3 | " in r.stdout  # the |Z| table, one row per size
    missing = subprocess.run(
        [sys.executable, str(repo / "scripts" / "results_tables.py"), "cnn", str(reference / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode != 0 and missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr


def test_width_table_says_when_its_tests_are_over_pairs(tmp_path):
    """With one star per width the 'over stars' columns cannot hold a test over stars: the cell says what was tested."""
    import subprocess
    import sys

    cfg = config(
        star={"recipe": {"epochs": 1}},
        studies={
            "barriers": False,
            "distances": False,
            "width_depth": {"sources": 2, "held_out": 1, "settings": [{"width": 4}, {"width": 8}]},
        },
    )
    run_experiment(cfg, tmp_path, progress=False)
    script = REPO / "scripts" / "results_tables.py"
    r = subprocess.run([sys.executable, str(script), "width", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| 4 |") or ln.startswith("| 8 |")]
    assert len(rows) == 2 and all("(tested over pairs: one star)" in ln for ln in rows)
