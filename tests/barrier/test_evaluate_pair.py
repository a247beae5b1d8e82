"""One pair evaluation: the CLI's ``barrier`` and the pipeline's pairs call ``evaluate_pair`` and agree exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_helpers import assert_one_line_error, run_cli, tiny_config

from stardomain.barrier import evaluate_pair
from stardomain.checkpoints import store
from stardomain.data import open_dataset
from stardomain.errors import StardomainError


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stardomain.experiment import load_config, run_experiment

    folder = tmp_path_factory.mktemp("pair")
    (folder / "pair.yaml").write_text(yaml.safe_dump(tiny_config("pair", eval={"points": 5, "max_pairs": 1})))
    run_experiment(load_config(folder / "pair.yaml"), folder / "run", progress=False)
    return folder / "run"


@pytest.mark.parametrize("group", ["regular-regular", "star-held-out"])
def test_cli_barrier_and_pipeline_pair_give_identical_numbers(tiny_run: Path, group: str, tmp_path: Path, capsys) -> None:
    results = json.loads((tiny_run / "results.json").read_text())
    piped = results["barriers"]["groups"][group][0]
    paths = {p.stem: p for p in tiny_run.rglob("*.safetensors")}
    out = tmp_path / "pair.json"
    r = run_cli(capsys, "barrier", paths[piped["a"]], paths[piped["b"]], "--align", "weight", "--points", "5", "--out", out, "-q")
    assert r.code == 0, r.err
    cli = json.loads(out.read_text())
    for key in ("l2", "match_objective", "spec_coverage", "l2_aligned", "curve", "barriers"):
        assert cli[key] == piped[key], key  # exactly: one code path
    # the Python API: the same call, the same numbers
    state_a, meta = store.load_state(paths[piped["a"]])
    state_b, _ = store.load_state(paths[piped["b"]])
    api = evaluate_pair(state_a, state_b, model=store.build_model(meta["arch"]), dataset=open_dataset("digits"), align="weight", points=5)
    assert api.record() == {k: piped[k] for k in api.record()}


def test_evaluate_pair_refuses_bad_options_in_one_line(tiny_run: Path, tmp_path: Path, capsys) -> None:
    a, b = sorted((tiny_run / "zoo" / "main").glob("*.safetensors"))[:2]
    state, meta = store.load_state(a)
    model = store.build_model(meta["arch"])
    for bad, match in (
        ({"align": "both"}, "align must be one of"),
        ({"points": 1}, "points must be >= 2"),
        ({"matching_samples": 0}, "matching_samples must be >= 1"),
    ):
        with pytest.raises(StardomainError, match=match):
            evaluate_pair(state, state, model=model, dataset=open_dataset("digits"), **bad)
    r = run_cli(capsys, "barrier", a, b, "--align", "activation", "--matching-samples", "0")
    assert_one_line_error(r, "--matching-samples must be >= 1")
    r = run_cli(capsys, "barrier", a, b, "--points", "1")
    assert_one_line_error(r, "--points must be >= 2")


def test_cli_barrier_and_star_say_when_the_sources_are_not_converged(tmp_path: Path, capsys) -> None:
    """One epoch on digits is far from converged: the number still comes, with a warning beside it and in the JSON."""
    zoo = tmp_path / "zoo"
    assert run_cli(capsys, "train", "-d", "digits", "-o", "width=8", "-o", "depth=1", "-e", "1", "--n", "2", "--out", zoo, "-q").code == 0
    a, b = sorted(zoo.glob("*.safetensors"))
    r = run_cli(capsys, "barrier", a, b, "--points", "3", "--out", tmp_path / "pair.json", "-q")
    assert r.code == 0 and "not converged" in r.err
    assert "not converged" in json.loads((tmp_path / "pair.json").read_text())["not_converged"]
    r = run_cli(capsys, "star", "--sources", zoo, "--epochs", "1", "--out", tmp_path / "star.safetensors", "-q")
    assert r.code == 0 and "not converged" in r.err
    for flag in ("--eval-train-samples", "--eval-test-samples"):
        assert_one_line_error(run_cli(capsys, "barrier", a, b, flag, "0"), f"{flag} must be >= 1 (got 0); omit it")
