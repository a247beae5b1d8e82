"""Issue 33 item 3: a recipe grid over lr x weight decay runs end to end, its report shows both losses and every axis,
and ``scripts/results_tables.py grid`` prints each cell's verdicts on train and test loss side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import tiny_config
from paths import REPO

from stardomain.experiment import run_experiment
from stardomain.experiment.config import experiment_config

GRID = {"lr": [0.05, 0.1], "weight_decay": [0.0005, 0.005], "sources": 2, "held_out": 1}


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grid") / "out"
    base = tiny_config("grid", star={"repeats": 2})
    cfg = experiment_config({**base, "studies": {"barriers": False, "distances": False, "recipe": GRID}})
    run_experiment(cfg, out, progress=False)
    return out


def test_every_cell_trains_its_lr_and_weight_decay_and_names_them(grid_run: Path) -> None:
    res = json.loads((grid_run / "results.json").read_text())
    rows = res["recipe_study"]["rows"]
    assert [(r["cell"]["lr"], r["cell"]["weight_decay"]) for r in rows] == [(0.05, 0.0005), (0.05, 0.005), (0.1, 0.0005), (0.1, 0.005)]
    for r in rows:
        assert (r["recipe"]["lr"], r["recipe"]["weight_decay"]) == (r["cell"]["lr"], r["cell"]["weight_decay"])
        assert r["star_recipe"]["lr"] == r["cell"]["lr"]  # the star trains at its cell's lr
        assert r["tag"] == f"rc-e1-paper-sgd-lr{r['cell']['lr']:g}-wd{r['cell']['weight_decay']:g}-w8"
    assert res["recipe_study"]["axes"]["lr"] == [0.05, 0.1] and res["recipe_study"]["axes"]["optimizer"] == ["sgd"]
    # the models differ by cell: the lr reached the optimizer
    zoo = sorted((grid_run / "zoo").glob("rc-*"))
    assert len(zoo) == 4
    for t in res["tests"]["recipe_study"]:
        assert set(t["by_metric"]) == {"train_loss", "test_loss"} and t["metric"] == "train_loss"


def test_the_report_shows_both_losses_with_a_figure_each(grid_run: Path) -> None:
    report = (grid_run / "report.md").read_text()
    assert "| epochs | init | optimizer | lr | weight decay |" in report
    assert "train loss: star–held-out vs regular–regular" in report and "test loss: star–held-out vs regular–regular" in report
    assert (grid_run / "recipe_sensitivity.png").is_file() and (grid_run / "recipe_sensitivity_test_loss.png").is_file()
    assert "lr [0.05, 0.1]" in report


def test_the_tables_script_prints_the_grid_with_both_losses(grid_run: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "results_tables.py"), "grid", str(grid_run)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("| mlp ·")]
    assert len(lines) == 4
    assert "| mlp · 1 ep · sgd lr 0.1 · wd 0.005 |" in r.stdout
    header = r.stdout.splitlines()[0]
    assert "train loss: s–h < r–r" in header and "test loss: s–h < r–r" in header and "verdicts differ between losses?" in header
