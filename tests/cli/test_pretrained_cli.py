"""Every command on save_pretrained folders (issue 32): spec, eval, align, barrier --align weight and star from
a folder of such folders, each saying what it assumed; bad folders refused in one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from pretrained_helpers import train_and_save  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("hfzoo")
    return {
        "vit": [train_and_save("vit", s, root / "vit" / f"run-{s}", steps=3) for s in range(3)],
        "gpt2": [train_and_save("gpt2", s, root / "gpt2" / f"run-{s}", steps=3) for s in range(2)],
    }


def test_spec_and_eval(capsys, zoo):
    for a, *_ in zoo.values():
        r = run_cli(capsys, "spec", a, "--json")
        assert r.code == 0, r.err
        report = json.loads(r.out)
        assert report["covered_share"] > 0.9 and report["assumed"] and "assumed" in r.err
        r = run_cli(capsys, "eval", a)
        assert r.code == 2 and "--dataset" in r.err  # no recorded data: it must be named
        r = run_cli(capsys, "eval", a, "--dataset", "digits", "--json")
        assert r.code == 0, r.err
        out = json.loads(r.out)
        assert 0.0 <= out["test_acc"] <= 1.0 and out["assumed"] and out["data"]["assumed"]


def test_align_and_barrier(capsys, tmp_path, zoo):
    for kind, (a, b, *_) in zoo.items():
        r = run_cli(capsys, "align", a, b, "--json")
        assert r.code == 0, r.err
        out = json.loads(r.out)
        assert out["function_check"] == "passed" and out["l2_after"] <= out["l2_before"] and out["assumed"]
        res = tmp_path / f"{kind}.json"
        r = run_cli(
            capsys,
            "--quiet",
            "barrier",
            a,
            b,
            "--dataset",
            "digits",
            "--align",
            "weight",
            "--points",
            "3",
            "--eval-train-samples",
            "64",
            "--eval-test-samples",
            "64",
            "--out",
            res,
        )
        assert r.code == 0, r.err
        assert "assumed" in r.out  # the data line says what was assumed
        rec = json.loads(res.read_text())
        assert rec["function_check"] == "passed" and rec["assumed"] and rec["data"]["recorded"]["name"] is None


def test_star_from_a_folder_of_folders(capsys, tmp_path, zoo):
    sources = zoo["vit"][0].parent
    out = tmp_path / "star.safetensors"
    r = run_cli(capsys, "--quiet", "star", "--sources", sources, "--dataset", "digits", "--epochs", "1", "--out", out)
    assert r.code == 0, r.err
    assert "run-0, run-1, run-2" in r.out and "default recipe" in r.err and "assumed" in r.err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["arch"]["name"] == "hf:pretrained" and [s["path"].split("/")[-1] for s in meta["sources"]] == ["run-0", "run-1", "run-2"]
    r = run_cli(capsys, "eval", out, "--json")  # the star is a stardomain checkpoint: its data recorded
    assert r.code == 0, r.err


@pytest.mark.parametrize("problem", ["pickled", "unknown_class", "auto_map", "no_config", "misfit", "shape"])
def test_bad_folders_exit_2_nothing_written(capsys, tmp_path, zoo, problem):
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(zoo["vit"][0], folder)
    cfg = json.loads((folder / "config.json").read_text())
    args = ["--dataset", "digits"]
    if problem == "pickled":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    elif problem == "unknown_class":
        cfg["architectures"] = ["os.system"]
    elif problem == "auto_map":
        cfg["auto_map"] = {"AutoModel": "evil.Model"}
    elif problem == "no_config":
        (folder / "config.json").unlink()
    elif problem == "misfit":
        cfg["hidden_size"], cfg["intermediate_size"] = 32, 64
    elif problem == "shape":  # a dataset of 3-channel images: the folder's ViT reads (1, 8, 8)
        import numpy as np

        rng = np.random.default_rng(0)
        data = {f"x_{s}": rng.normal(size=(20, 3, 8, 8)).astype("float32") for s in ("train", "test")}
        data |= {f"y_{s}": np.arange(20) % 10 for s in ("train", "test")}
        np.savez(tmp_path / "rgb.npz", **data)
        args = ["--dataset", str(tmp_path / "rgb.npz")]
    if problem != "no_config":
        (folder / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "res.json"
    r = run_cli(capsys, "barrier", folder, zoo["vit"][1], *args, "--out", out)
    assert r.code == 2
    lines = [ln for ln in r.err.strip().splitlines() if not ln.startswith("note: ")]  # notes say what was assumed
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert not out.exists()
    if problem == "shape":
        assert "reads images (1, 8, 8)" in r.err
