"""Hugging Face transformers (``hf:vit``, ``hf:gpt2``) through the CLI on digits: a zoo, an aligned barrier, a star.

The models are tiny (one block of width 16) and train one epoch: this checks that checkpoints of ``hf:`` models
are written, read back (rebuilt from their metadata), weight-matched and starred end to end, not their accuracy.
"""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from cli_helpers import assert_one_line_error, run_cli  # noqa: E402

TINY = ["-o", "hidden=16", "-o", "layers=1", "-o", "heads=2", "-o", "mlp=2"]
MODELS = {
    "hf:vit": [*TINY, "-o", "patch=4"],  # 8x8 digits as 4 patches of 4x4
    "hf:gpt2": TINY,  # 64 pixel tokens, ids 0..16 (the default vocab)
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def zoo(request, tmp_path_factory):
    """Two one-epoch sources of one hf: model on digits (one zoo per model, shared by this module's tests)."""
    import sys

    from stardomain.cli import main  # in-process like run_cli (a module-scoped fixture has no capsys)

    name = request.param
    out = tmp_path_factory.mktemp(name.replace(":", "_")) / "zoo"
    old = sys.argv
    sys.argv = ["stardomain", "train", "-d", "digits", "-m", name, *MODELS[name], "-e", "1", "--n", "2", "--out", str(out), "-q"]
    try:
        main()
    except SystemExit as e:
        assert not e.code, f"stardomain train -m {name} exited {e.code}"
    finally:
        sys.argv = old
    return name, out


def test_train_writes_hf_checkpoints_that_record_the_model(zoo):
    name, out = zoo
    for seed in (0, 1):
        meta = json.loads((out / f"seed-{seed}.json").read_text())
        assert meta["arch"]["name"] == name and meta["arch"]["in_shape"] == [1, 8, 8]
        assert meta["arch"]["options"]["hidden"] == 16 and meta["arch"]["options"]["layers"] == 1
        assert (out / f"seed-{seed}.safetensors").exists()


def test_barrier_weight_matches_hf_models(zoo, tmp_path, capsys):
    name, out = zoo
    result = tmp_path / "x.json"
    r = run_cli(
        capsys,
        "barrier",
        out / "seed-0.safetensors",
        out / "seed-1.safetensors",
        "--align",
        "weight",
        "--points",
        "3",
        "--out",
        result,
        "-q",
    )
    assert r.code == 0, r.err
    data = json.loads(result.read_text())
    assert data["align"] == "weight"
    assert set(data["barriers"]) == {"test_loss", "test_acc", "train_loss", "train_acc"}
    assert all(math.isfinite(v) for v in data["barriers"].values()), data["barriers"]
    assert len(data["curve"]["t"]) == 3 and all(math.isfinite(v) for v in data["curve"]["test_loss"])
    # the traced spec permutes (almost) every parameter, and the permuted B computed the same function
    assert 0.9 < data["spec_coverage"] <= 1.0, data["spec_coverage"]
    assert data["function_check"] == "passed"
    assert math.isfinite(data["l2_aligned"]) and data["l2_aligned"] < data["l2"]
    assert "permutation spec covers" in r.out and "function check passed" in r.out


def test_star_trains_from_hf_sources(zoo, tmp_path, capsys):
    from stardomain.checkpoints import store

    name, out = zoo
    star = tmp_path / "star.safetensors"
    r = run_cli(capsys, "star", "--sources", out, "--epochs", "1", "--out", star, "-q")
    assert r.code == 0, r.err
    state, meta = store.load_state(star)
    assert meta["kind"] == "star" and meta["arch"]["name"] == name
    assert 0.9 < meta["spec_coverage"] <= 1.0, meta["spec_coverage"]
    assert all(math.isfinite(float(v.float().abs().max())) for v in state.values())
    # the star is a checkpoint like any other: the barrier to a source reads it back
    r = run_cli(capsys, "barrier", star, out / "seed-0.safetensors", "--align", "weight", "--points", "3", "-q")
    assert r.code == 0, r.err
    # a star is never trained from a star
    r = run_cli(capsys, "star", "--sources", tmp_path, "--epochs", "1", "--out", tmp_path / "again.safetensors")
    assert_one_line_error(r)


def test_unknown_hf_model_is_a_one_line_error(tmp_path, capsys):
    r = run_cli(capsys, "train", "-d", "digits", "-m", "hf:t5", "-e", "1", "--out", tmp_path / "z")
    assert_one_line_error(r, "hf:t5")
