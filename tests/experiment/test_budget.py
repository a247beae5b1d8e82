"""Issue 30 item 5: every size a user can set is held to one budget, estimated before anything is built.

Before: ``eval.points``, ``star.pairs_per_step`` and ``studies.bma.max_samples`` at 10^9 and ``train.epochs`` at
10^12 passed validation (the zoo trained, then MemoryError or a loop without end), a recipe grid of 10^6 cells
built its plan for minutes, depth 10^6 was accepted, ``spec`` allocated what ``train`` refused, and ``threads:
4096`` ran on 2 cores. Each case here is refused in one line naming the key and the estimate, fast, before a
plan, a cell or a model is built; ``STARDOMAIN_BUDGET`` lifts (``off``) or scales the limits. Nothing trains.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import assert_one_line_error, run_cli, tiny_config
from paths import REPO

from stardomain._util import budget
from stardomain.errors import StardomainError
from stardomain.experiment import load_config
from stardomain.experiment.budget import plan_units
from stardomain.experiment.config import experiment_config

BASE = tiny_config("budget")


def _studies(**blocks: dict) -> dict:
    return {"studies": {**BASE["studies"], **blocks}}


def _refused(patch: dict, *needles: str, seconds: float = 5.0) -> str:
    start = time.monotonic()
    with pytest.raises(StardomainError) as e:
        experiment_config({**BASE, **patch})
    message = str(e.value)
    assert "\n" not in message and time.monotonic() - start < seconds, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


@pytest.mark.parametrize(
    "patch, needles",
    [
        ({"eval": {"points": 10**9}}, ["eval.points: the t values of each curve would be 1,000,000,000", "over the budget of 1,000,000"]),
        (
            {"dataset": "mnist", "eval": {"points": 500_000}},
            ["eval.points: the t values x evaluated samples of each curve (500000 x 70000)"],
        ),
        ({"star": {"pairs_per_step": 10**9}}, ["star.pairs_per_step: the (source, t) pairs of each star step would be 1,000,000,000"]),
        (
            {"model": {"name": "mlp"}, "star": {"pairs_per_step": 10**5}},
            ["star.pairs_per_step: the interpolated parameters each star step holds (100000 pairs x 563,722 parameters)"],
        ),
        (_studies(bma={"max_samples": 10**9}), ["studies.bma.max_samples: the BMA's samples would be 1,000,000,000"]),
        (
            {"dataset": "cifar100", **_studies(bma={"max_samples": 10**5})},
            ["studies.bma.max_samples: the BMA's predicted probabilities", "100000 x 10000 x 100"],
        ),
        ({"train": {"epochs": 10**12}}, ["train.epochs: the epochs of one training run would be 1,000,000,000,000", "10,000"]),
        ({"star": {"epochs_factor": 10**5}}, ["star.epochs_factor: the epochs of one training run would be 100,000"]),
        ({"star": {"recipe": {"epochs": 10**6}}}, ["star.recipe.epochs: the epochs of one training run"]),
        (_studies(optimizer={"recipe": {"epochs": 10**6}}), ["studies.optimizer.recipe.epochs: the epochs"]),
        (_studies(recipe={"epochs": [1, 10**6]}), ["studies.recipe.epochs: the epochs of one training run would be 1,000,000"]),
        (
            {"model": {"name": "mlp", "options": {"depth": 10**6, "width": 1}}},
            ["model.options: model 'mlp': option depth would be 1,000,000"],
        ),
        (_studies(width_depth={"settings": [{"depth": 10**6}]}), ["studies.width_depth.settings[0]: model 'mlp': option depth"]),
        (
            {"model": {"name": "mlp", "options": {"depth": 1, "width": 2**40}}},
            ["model.options: model 'mlp'", "parameters (over the budget"],
        ),
        ({"sources": 10**9}, ["sources: the plan's units (sources: the main zoo, stars and pairs) would be"]),
        ({"star": {"repeats": 10**6}}, ["sources: the plan's units"]),
        (_studies(width_depth={"settings": [{"width": w} for w in range(1, 3001)]}), ["studies.width_depth.settings: the plan's units"]),
    ],
)
def test_a_size_over_the_budget_is_refused_at_load_naming_its_key(patch: dict, needles: list[str]) -> None:
    message = _refused(patch, *needles)
    assert "set STARDOMAIN_BUDGET=off" in message  # the override is named in the error itself


def test_a_recipe_grid_of_a_million_cells_is_refused_without_being_built() -> None:
    """Before: 10^6 cells built the plan for minutes with growing memory; 10^4 cells (140,008 units) were accepted."""
    grid = {"epochs": list(range(1, 1001)), "weight_decay": [i * 1e-6 for i in range(1000)]}
    _refused(_studies(recipe=grid), "studies.recipe: the plan's units (studies.recipe: 1,000,000 cells x 14 units)", seconds=2.0)
    grid = {"epochs": list(range(1, 101)), "weight_decay": [i * 1e-4 for i in range(100)]}
    _refused(_studies(recipe=grid), "studies.recipe: the plan's units (studies.recipe: 10,000 cells x 14 units) would be 140,0")


def test_the_override_lifts_or_scales_every_limit(monkeypatch) -> None:
    patch = {"eval": {"points": 2 * 10**6, "max_pairs": 1, "eval_train_samples": 1, "eval_test_samples": 1}}
    _refused(patch, "eval.points")
    monkeypatch.setenv(budget.ENV, "off")
    assert experiment_config({**BASE, **patch}).eval.points == 2 * 10**6
    monkeypatch.setenv(budget.ENV, "10")
    assert experiment_config({**BASE, **patch}).eval.points == 2 * 10**6
    monkeypatch.setenv(budget.ENV, "0.5")
    _refused({"eval": {"points": 600_000, "max_pairs": 1, "eval_train_samples": 1, "eval_test_samples": 1}}, "over the budget of 500,000")
    for bad in ("lots", "-1", "inf", "nan"):
        monkeypatch.setenv(budget.ENV, bad)
        _refused({}, f"STARDOMAIN_BUDGET={bad!r}: set it to 'off'")


def test_plan_units_is_the_plan_size_from_the_counts_alone(tmp_path: Path) -> None:
    """The arithmetic estimate is the plan's unit count (an upper bound where two studies share a unit)."""
    from stardomain.experiment.pipeline import Experiment
    from stardomain.experiment.units import build_plan

    configs = [
        BASE,
        {**BASE, "sources": 4, "held_out": 2, "eval": {"points": 3, "max_pairs": 3, "max_star_source_pairs": 2}},
        {
            **BASE,
            "star": {"repeats": 2},
            "train": {"epochs": 1, "batch_models": 2},
            **_studies(
                bma={"max_samples": 2},
                fusion={"sizes": [2, 3]},
                width_depth={"settings": [{"width": 4}]},
                optimizer={"sources": 2, "held_out": 1},
                recipe={"epochs": [1, 2], "init": ["paper", "xavier"], "width": [4, 8]},
            ),
        },
    ]
    for i, data in enumerate(configs):
        cfg = experiment_config(data)
        plan = build_plan(Experiment(cfg, tmp_path / f"out{i}", progress=False)).plan
        assert sum(n for n, _ in plan_units(cfg).values()) == len(plan), i
    shared = experiment_config({**BASE, **_studies(n_sources={"sizes": [2]})})  # main-z2 is the main star again
    plan = build_plan(Experiment(shared, tmp_path / "shared", progress=False)).plan
    assert sum(n for n, _ in plan_units(shared).values()) >= len(plan)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_is_within_a_tenth_of_the_budget(name: str, monkeypatch) -> None:
    """The limits are generous: every shipped config passes with every limit divided by 10."""
    monkeypatch.setenv(budget.ENV, "0.1")
    load_config(REPO / "configs" / name)


# -- the command line: one line, exit 2, nothing written ---------------------------------------------------------


def _nothing_written(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != "bad.yaml")


def test_spec_refuses_the_width_train_refuses(tmp_path: Path, capsys) -> None:
    """Before: `spec mlp -o width=268435456` allocated 64 GB where `train` refused in one line; both share the meta build."""
    r = run_cli(capsys, "spec", "mlp", "-o", f"width={2**28}")
    assert_one_line_error(r, "model 'mlp'", "parameters (over the budget of 1e+10", "STARDOMAIN_BUDGET=off")
    r = run_cli(capsys, "spec", "mlp", "-o", "depth=1000000", "-o", "width=1")
    assert_one_line_error(r, "model 'mlp': option depth would be 1,000,000")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["-e", str(10**12)], "--epochs: the epochs of each model would be 1,000,000,000,000"),
        (["--n", str(10**9)], "--n: the models to train would be 1,000,000,000"),
        (["-o", "depth=1000000"], "-o/--opt: model 'mlp': option depth would be 1,000,000"),
        (["--threads", "4096"], "--threads: 4096 CPU threads on a machine with"),
    ],
)
def test_train_sizes_are_refused_before_any_data_is_read(extra: list[str], needle: str, tmp_path: Path, capsys) -> None:
    r = run_cli(capsys, "train", "-d", "digits", "-m", "mlp", "-o", "width=4", *extra, "--out", tmp_path / "zoo", "-q")
    assert_one_line_error(r, needle)
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize("where", ["yaml", "flag"])
def test_run_refuses_more_threads_than_cpus_before_any_unit(where: str, tmp_path: Path, capsys) -> None:
    threads = (os.cpu_count() or 1) + 1
    cfg = {**BASE, "threads": threads} if where == "yaml" else BASE
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    flag = ["--threads", str(threads)] if where == "flag" else []
    r = run_cli(capsys, "run", tmp_path / "bad.yaml", "--out", tmp_path / "out", *flag)
    assert_one_line_error(r, f"threads: {threads} CPU threads on a machine with {os.cpu_count()} CPUs", "STARDOMAIN_BUDGET=off")
    assert _nothing_written(tmp_path) == []


def test_the_threads_budget_follows_the_override(monkeypatch) -> None:
    over = (os.cpu_count() or 1) + 1
    with pytest.raises(StardomainError, match="CPU threads on a machine with"):
        budget.check_threads(over, "threads")
    monkeypatch.setenv(budget.ENV, "off")
    budget.check_threads(over, "threads")
