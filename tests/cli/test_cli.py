"""The CLI of the core stage: train a zoo, evaluate, and one-line errors for every bad input."""

from __future__ import annotations

import json

from cli_helpers import assert_one_line_error, run_cli, run_subprocess


def test_train_digits_mlp_at_95_percent(tmp_path):
    """The default MLP on digits as a subprocess (no wall-time bound here: speed lives in benchmarks/)."""
    r = run_subprocess("train", "--dataset", "digits", "--model", "mlp", "--seed", "0", "--out", tmp_path / "d0", "--quiet")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "d0" / "seed-0.json").read_text())
    assert meta["metrics"]["test_acc"] >= 0.95
    assert meta["arch"]["name"] == "mlp" and meta["seed"] == 0 and meta["dataset"] == "digits"
    assert set(meta["recipe"]) >= {"optimizer", "lr", "epochs", "batch_size"}


def test_zoo_training_skips_complete_members_and_eval(tmp_path, capsys):
    base = ["train", "-d", "digits", "-m", "mlp", "-o", "width=16", "-o", "depth=1", "--epochs", "2"]
    r = run_cli(capsys, *base, "--n", "2", "--out", tmp_path, "-q")
    assert r.code == 0, r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed-0.json", "seed-0.safetensors", "seed-1.json", "seed-1.safetensors"]
    stamp = (tmp_path / "seed-0.safetensors").stat().st_mtime_ns
    r = run_cli(capsys, *base, "--n", "3", "--out", tmp_path, "-q")
    assert r.code == 0, r.err
    assert (tmp_path / "seed-0.safetensors").stat().st_mtime_ns == stamp  # skipped, not retrained
    assert (tmp_path / "seed-2.safetensors").exists()
    r = run_cli(capsys, "eval", tmp_path / "seed-1.safetensors", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["dataset"] == "digits" and 0 < out["test_acc"] <= 1 and out["n"] == 360


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    r = run_cli(capsys, "train", "--dataset", "imagenet21k", "--out", tmp_path / "x")
    assert_one_line_error(r, "imagenet21k", "digits", "fashion_mnist")
    r = run_cli(capsys, "train", "--model", "gpt5", "--out", tmp_path / "x")
    assert_one_line_error(r, "gpt5", "resnet20", "mlp")
    r = run_cli(capsys, "train", "--model", "mlp", "-o", "wdith=3", "--out", tmp_path / "x")
    assert_one_line_error(r, "wdith")
    r = run_cli(capsys, "train", "--dataset", "mnist", "--data-root", tmp_path / "empty", "--out", tmp_path / "x")
    assert_one_line_error(r, "train-images-idx3-ubyte", str(tmp_path / "empty"))
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_corrupt_and_foreign_checkpoints(tmp_path, capsys):
    r = run_cli(capsys, "train", "-d", "digits", "-o", "width=8", "-o", "depth=1", "-e", "1", "--seed", "0", "--out", tmp_path, "-q")
    assert r.code == 0, r.err
    ckpt = tmp_path / "seed-0.safetensors"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[:100])
    assert_one_line_error(run_cli(capsys, "eval", ckpt), "corrupt or truncated")
    ckpt.write_bytes(good)
    meta_path = tmp_path / "seed-0.json"
    meta = json.loads(meta_path.read_text())
    meta["arch"]["name"] = "alexnet"
    meta_path.write_text(json.dumps(meta))
    assert_one_line_error(run_cli(capsys, "eval", ckpt), "alexnet", "known:")


def test_output_folder_with_a_different_run_is_refused(tmp_path, capsys):
    base = ["train", "-d", "digits", "-o", "width=8", "-o", "depth=1", "-e", "1", "--seed", "0", "--out", tmp_path, "-q"]
    assert run_cli(capsys, *base).code == 0
    before = (tmp_path / "seed-0.safetensors").read_bytes()
    r = run_cli(capsys, *base, "--lr", "0.2")
    assert_one_line_error(r, "already holds a different run", "recipe")
    assert (tmp_path / "seed-0.safetensors").read_bytes() == before


def test_help_reads_well(capsys):
    r = run_cli(capsys, "--help")
    assert r.code == 0
    for word in ("train", "eval", "Starlight", "barrier"):
        assert word in r.out


def test_align_barrier_star_bma_commands(tmp_path, capsys):
    zoo = tmp_path / "zoo"
    r = run_cli(capsys, "train", "-d", "digits", "-o", "width=16", "-o", "depth=1", "-e", "3", "--n", "3", "--out", zoo, "-q")
    assert r.code == 0, r.err
    a, b = zoo / "seed-0.safetensors", zoo / "seed-1.safetensors"
    before = b.read_bytes()
    r = run_cli(capsys, "align", a, b, "--out", tmp_path / "b_aligned.safetensors", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["l2_after"] < out["l2_before"] and out["groups"] == 1
    assert b.read_bytes() == before
    assert json.loads((tmp_path / "b_aligned.json").read_text())["aligned_to"]["method"] == "weight"
    r = run_cli(
        capsys,
        "barrier",
        a,
        tmp_path / "b_aligned.safetensors",
        "--points",
        "5",
        "--out",
        tmp_path / "c.json",
        "--plot",
        tmp_path / "c.png",
        "-q",
    )
    assert r.code == 0, r.err
    curve = json.loads((tmp_path / "c.json").read_text())
    assert len(curve["curve"]["t"]) == 5 and curve["barriers"]["test_loss"] >= 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    r = run_cli(capsys, "star", "--sources", zoo, "--epochs", "2", "--out", tmp_path / "star.safetensors", "-q")
    assert r.code == 0, r.err
    r = run_cli(
        capsys,
        "bma",
        "--star",
        tmp_path / "star.safetensors",
        "--sources",
        zoo,
        "--max-samples",
        "3",
        "--out",
        tmp_path / "bma.json",
        "--plot",
        tmp_path / "bma.png",
    )
    assert r.code == 0, r.err
    res = json.loads((tmp_path / "bma.json").read_text())
    assert res["star_domain"]["k"] == [1, 2, 3] and res["ensemble"]["k"] == [1, 2, 3]
    assert len(res["star_domain"]["ci"]["auroc_max_prob"]) == 3  # bootstrap intervals at every K
    assert "misclassification AUROC" in r.out and "bootstrap interval over the" in r.out and "0.5 = chance" in r.out
    # models of different architectures cannot be aligned: one line, nothing written
    r = run_cli(
        capsys, "train", "-d", "digits", "-o", "width=8", "-o", "depth=1", "-e", "1", "--seed", "0", "--out", tmp_path / "other", "-q"
    )
    assert r.code == 0
    r = run_cli(capsys, "align", a, tmp_path / "other" / "seed-0.safetensors", "--out", tmp_path / "x.safetensors")
    assert_one_line_error(r, "different architectures")
    assert not (tmp_path / "x.safetensors").exists()


def test_info_lists_datasets_models_and_lap_solvers(capsys):
    from stardomain.permute.lap import available_lap_solvers

    r = run_cli(capsys, "info")
    assert r.code == 0, r.err
    lines = dict(line.split(":", 1) for line in r.out.strip().splitlines())
    assert "digits" in lines["datasets"] and "resnet18" in lines["models"]
    assert lines["matching LAP solvers"].split("(")[0].strip() == ", ".join(available_lap_solvers())
