"""The CLI's ``bma`` and the BMA study compute one thing (issue 34): bma.study.star_bma, the alignment a parameter.

The study calls star_bma with eval.align / eval.symmetry; the CLI with the star's recorded matching by default. On
a weight-matched star both are weight matching, so the CLI's JSON and a direct call with the study's settings must
give the same numbers, the posterior tests included.
"""

from __future__ import annotations

import json

import pytest
from cli_helpers import assert_one_line_error, run_cli


def _quiet_cli(*args: object) -> int:
    """The CLI in-process, its output left to pytest (a module fixture has no capsys)."""
    import sys

    from stardomain.cli import main

    old, sys.argv = sys.argv, ["stardomain", *map(str, args)]
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = old
    return 0


@pytest.fixture(scope="module")
def tiny_star(tmp_path_factory):
    """Three width-8 digits MLPs (1 epoch) and a 1-epoch star of them (weight matching, the default)."""
    root = tmp_path_factory.mktemp("bma_use_case")
    base = ["-d", "digits", "-o", "width=8", "-o", "depth=1", "-e", "1", "-q"]
    assert _quiet_cli("train", *base, "--n", "3", "--out", root / "zoo") == 0
    assert _quiet_cli("star", "--sources", root / "zoo", "-e", "1", "--out", root / "star.safetensors", "-q") == 0
    return root


def test_cli_bma_equals_the_use_case_with_the_study_settings(tiny_star, tmp_path, capsys):
    import torch

    from stardomain.bma.study import star_bma
    from stardomain.checkpoints import store
    from stardomain.data import load_dataset

    r = run_cli(capsys, "bma", "--star", tiny_star / "star.safetensors", "--max-samples", 3, "--seed", 1, "--out", tmp_path / "b.json")
    assert r.code == 0, r.err
    cli = json.loads((tmp_path / "b.json").read_text())
    assert cli["alignment"] == {"align": "weight", "symmetry": "permutation", "chosen_by": "the star's recorded matching"}
    assert "alignment: sources aligned to the star by weight matching (the star's recorded matching" in r.out
    assert "minus deep ensemble (K=3); paired bootstrap" in r.out and "- ECE: " in r.out

    # the study's call (experiment/studies/bma.py): eval.align weight, eval.symmetry permutation, eval.bn_samples None
    star_state, meta = store.load_state(tiny_star / "star.safetensors")
    model = store.build_model(meta["arch"])
    sources = [store.load_state(tiny_star / "zoo" / f"seed-{s}.safetensors")[0] for s in range(3)]
    direct = star_bma(
        star_state,
        model,
        sources,
        load_dataset("digits"),
        align="weight",
        symmetry="permutation",
        max_samples=3,
        seed=1,
        bn_samples=None,
        device=torch.device("cpu"),
        allow_unpermuted=False,
    )
    direct = json.loads(json.dumps(direct))  # as the JSON file holds it (tuples as lists)
    for key in ("star_domain", "ensemble", "star", "single", "config", "tests"):
        assert cli[key] == direct[key], key
    assert set(direct["tests"]) == {"auroc_max_prob", "auroc_neg_entropy", "ece"}


def test_cli_bma_alignment_is_explicit(tiny_star, tmp_path, capsys):
    star = tiny_star / "star.safetensors"
    r = run_cli(capsys, "bma", "--star", star, "--align", "none", "--max-samples", 2, "--out", tmp_path / "n.json")
    assert r.code == 0, r.err
    out = json.loads((tmp_path / "n.json").read_text())
    assert out["alignment"] == {"align": "none", "symmetry": "permutation", "chosen_by": "--align"}
    assert "sources taken as they are (no alignment) (--align" in r.out
    assert_one_line_error(
        run_cli(capsys, "bma", "--star", star, "--align", "none", "--symmetry", "orthogonal"), "--symmetry orthogonal", "--align"
    )


def test_cli_bma_matching_samples_equals_the_use_case(tiny_star, tmp_path, capsys):
    """--align activation --matching-samples N runs what the study runs with eval.matching_samples N."""
    import torch

    from stardomain.bma.study import star_bma
    from stardomain.checkpoints import store
    from stardomain.data import load_dataset

    args = ("--align", "activation", "--matching-samples", 64, "--max-samples", 2, "--seed", 1)
    r = run_cli(capsys, "bma", "--star", tiny_star / "star.safetensors", *args, "--out", tmp_path / "a.json")
    assert r.code == 0, r.err
    cli = json.loads((tmp_path / "a.json").read_text())
    assert cli["alignment"] == {"align": "activation", "symmetry": "permutation", "matching_samples": 64, "chosen_by": "--align"}
    assert "sources aligned to the star by activation matching on 64 samples (--align" in r.out

    star_state, meta = store.load_state(tiny_star / "star.safetensors")
    sources = [store.load_state(tiny_star / "zoo" / f"seed-{s}.safetensors")[0] for s in range(3)]
    direct = star_bma(
        star_state,
        store.build_model(meta["arch"]),
        sources,
        load_dataset("digits"),
        align="activation",
        matching_samples=64,
        max_samples=2,
        seed=1,
        device=torch.device("cpu"),
    )
    direct = json.loads(json.dumps(direct))
    for key in ("star_domain", "ensemble", "star", "single", "config", "tests"):
        assert cli[key] == direct[key], key
    # the default is another sample (DEFAULT_MATCHING_SAMPLES): the option reaches the matcher
    r = run_cli(capsys, "bma", "--star", tiny_star / "star.safetensors", *args[:2], *args[4:], "--out", tmp_path / "d.json")
    assert r.code == 0, r.err
    default = json.loads((tmp_path / "d.json").read_text())
    assert default["alignment"]["matching_samples"] == 1024


def _restar(tiny_star, tmp_path, **starlight):
    """A copy of the tiny star whose metadata records other Starlight settings (the weights, and their hash, kept)."""
    import shutil

    shutil.copy(tiny_star / "star.safetensors", tmp_path / "star.safetensors")
    meta = json.loads((tiny_star / "star.json").read_text())
    meta["starlight"] = {**meta["starlight"], **starlight}
    (tmp_path / "star.json").write_text(json.dumps(meta))
    return tmp_path / "star.safetensors"


@pytest.fixture
def no_data(monkeypatch):
    """Refusals come before any data loads: loading it fails the test."""
    from stardomain.cli import star_cmd

    def refuse(*a, **k):
        raise AssertionError("the data was loaded before the refusal")

    monkeypatch.setattr(star_cmd, "load_data_for", refuse)


def test_cli_bma_align_star_refuses_what_the_recorded_matching_never_uses(tiny_star, tmp_path, capsys, no_data):
    unaligned = _restar(tiny_star, tmp_path, matching="none")
    assert_one_line_error(
        run_cli(capsys, "bma", "--star", unaligned, "--symmetry", "orthogonal"),
        "--symmetry orthogonal extends an alignment",
        "trained without one (matching none)",
        "--align weight or activation",
    )
    star = tiny_star / "star.safetensors"  # weight matching: no activation sample
    assert_one_line_error(
        run_cli(capsys, "bma", "--star", star, "--matching-samples", 64),
        "--matching-samples sets the sample activation matching correlates on",
        "--align star (the star's recorded matching weight) never uses",
    )
    assert_one_line_error(
        run_cli(capsys, "bma", "--star", star, "--align", "weight", "--matching-samples", 64), "which --align weight never uses"
    )
    assert_one_line_error(run_cli(capsys, "bma", "--star", star, "--matching-samples", 0), "--matching-samples must be >= 1 (got 0)")


def test_cli_bma_align_star_takes_the_recorded_matching_samples(tiny_star, tmp_path):
    """--align star reads the star's matching_samples; --matching-samples replaces it (the alignment record only:
    no data is needed to test the choice)."""
    from stardomain.checkpoints.meta import read_checkpoint
    from stardomain.cli.star_cmd import _bma_alignment

    starlight = read_checkpoint(_restar(tiny_star, tmp_path, matching="activation", matching_samples=32)).starlight
    recorded = {"align": "activation", "symmetry": "permutation", "chosen_by": "the star's recorded matching"}
    assert _bma_alignment(starlight, "star", None) == {**recorded, "matching_samples": 32}
    assert _bma_alignment(starlight, "star", None, 64) == {**recorded, "matching_samples": 64}
    assert _bma_alignment(starlight, "activation", None)["matching_samples"] == 1024
