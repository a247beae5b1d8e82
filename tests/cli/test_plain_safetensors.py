"""Plain safetensors state dicts (``safetensors.torch.save_file``, no .json) whose model is named by an import path
(issue 32): eval, spec, align, barrier --align weight and star from a folder of three, each saying what it assumed;
no --model, a builder that does not fit the weights or has the wrong signature: one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_cli

BUILD = "own_models:build_lnmlp"


@pytest.fixture(autouse=True)
def _named_code_restored():
    """The in-process CLI names own_models (--model): later tests see the closed set as it was."""
    from stardomain._util import plugins

    modules, paths = set(plugins._NAMED_MODULES), set(plugins._NAMED_PATHS)
    yield
    plugins._NAMED_MODULES.clear()
    plugins._NAMED_MODULES.update(modules)
    plugins._NAMED_PATHS.clear()
    plugins._NAMED_PATHS.update(paths)


def _train_and_save(seed: int, path, steps: int = 20, metadata: dict | None = None):
    """Plain PyTorch: build, a few SGD steps on digits, save_file(state_dict) and nothing else."""
    from own_models import build_lnmlp
    from safetensors.torch import save_file

    from stardomain import data

    ds = data.load_dataset("digits")
    torch.manual_seed(seed)
    model = build_lnmlp(ds.num_classes, tuple(ds.in_shape))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(steps):
        x, y = ds.train_x[i * 32 : (i + 1) * 32], ds.train_y[i * 32 : (i + 1) * 32]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain")
    # the file's own header names a callable: never read, never called (the model is --model's)
    header = {"arch": json.dumps({"name": "own_models:build_tied"}), "builder": "os:system"}
    return [_train_and_save(s, root / "zoo" / f"w{s}.safetensors", metadata=header if s == 0 else None) for s in range(3)]


def test_eval_and_spec(capsys, plain):
    r = run_cli(capsys, "eval", plain[0], "--model", BUILD, "--dataset", "digits", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["test_acc"] > 0.3 and out["assumed"] and out["data"]["assumed"]
    assert "note: " in r.err and BUILD in json.dumps(out["assumed"])
    r = run_cli(capsys, "spec", plain[1], "--model", BUILD, "--dataset", "digits", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["covered_share"] > 0.5 and report["assumed"] and "assumed" in r.err


def test_align_and_barrier(capsys, tmp_path, plain):
    a, b = plain[:2]
    r = run_cli(capsys, "align", a, b, "--model", BUILD, "--dataset", "digits", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["function_check"] == "passed" and out["l2_after"] < out["l2_before"] and out["assumed"]
    res = tmp_path / "barrier.json"
    args = ["--align", "weight", "--points", "3", "--eval-train-samples", "64", "--eval-test-samples", "64", "--out", res]
    r = run_cli(capsys, "--quiet", "barrier", a, b, "--model", BUILD, "--dataset", "digits", *args)
    assert r.code == 0, r.err
    rec = json.loads(res.read_text())
    assert rec["function_check"] == "passed" and rec["assumed"] and rec["data"]["recorded"]["name"] is None


def test_star_from_a_folder_of_three(capsys, tmp_path, plain):
    out = tmp_path / "star.safetensors"
    args = ["--dataset", "digits", "--epochs", "1", "--out", out]
    r = run_cli(capsys, "--quiet", "star", "--sources", plain[0].parent, "--model", BUILD, *args)
    assert r.code == 0, r.err
    assert "w0.safetensors, w1.safetensors, w2.safetensors" in r.out and "assumed" in r.err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["arch"]["name"] == BUILD and len(meta["sources"]) == 3


def test_api(plain):
    import stardomain as sd

    model = sd.load_checkpoint(plain[0], model=BUILD, dataset="digits")
    assert model.meta["assumed"] and model.meta["arch"]["name"] == BUILD
    with pytest.raises(sd.StardomainError, match="pass --model pkg.mod:build"):
        sd.load_checkpoint(plain[0])


@pytest.mark.parametrize("problem", ["no_model", "misfit", "signature", "no_dataset"])
def test_refusals_exit_2_nothing_written(capsys, tmp_path, plain, problem):
    model = {"no_model": [], "misfit": ["--model", "own_models:build_tied"], "signature": ["--model", "own_models:build_no_shape"]}
    data = [] if problem == "no_dataset" else ["--dataset", "digits"]
    res = tmp_path / "res.json"
    star = tmp_path / "star.safetensors"
    for args in (
        ["barrier", plain[0], plain[1], *model.get(problem, ["--model", BUILD]), *data, "--out", res],
        ["star", "--sources", plain[0].parent, *model.get(problem, ["--model", BUILD]), *data, "--epochs", "1", "--out", star],
    ):
        r = run_cli(capsys, *args)
        assert r.code == 2, r.err
        lines = [ln for ln in r.err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), r.err
        assert not res.exists() and not star.exists() and not star.with_suffix(".json").exists()
        want = {
            "no_model": "pass --model pkg.mod:build",
            "misfit": "does not fit",
            "signature": "must take (num_classes, in_shape",
            "no_dataset": "--dataset",
        }
        assert want[problem] in lines[0], lines[0]
