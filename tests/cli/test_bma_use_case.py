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
