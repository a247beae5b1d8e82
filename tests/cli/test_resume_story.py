"""One resume story for every command (issue 35): a re-run says what it reuses ('resuming: N of M ... done',
'nothing to do: finished'), a finished result of the same identity is reused and said, one of other settings is
refused in one line (star: naming --force), and Ctrl-C says what was kept and the exact command that resumes.
A dataset without a default recipe trains only with its epochs chosen (a one-line refusal otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_helpers import assert_one_line_error, run_cli, tiny_config

TINY = ["-d", "digits", "-m", "mlp", "-o", "depth=1", "-o", "width=8", "-e", "1", "--subset", "200", "--device", "cpu", "-q"]


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_train_rerun_says_which_models_it_reused(tmp_path, capsys):
    zoo = tmp_path / "zoo"
    r = run_cli(capsys, "train", *TINY, "--n", "2", "--out", zoo)
    assert r.code == 0, r.err
    assert "resuming" not in r.err and "reused" not in r.out
    before = (zoo / "seed-0.safetensors").read_bytes()
    r = run_cli(capsys, "train", *TINY, "--n", "3", "--out", zoo)
    assert r.code == 0, r.err
    assert f"resuming: 2 of 3 models done (seed-0..1 in {zoo}" in r.err
    reused = [ln for ln in r.out.splitlines() if "reused" in ln]
    assert [ln.split(":")[0] for ln in reused] == [str(zoo / "seed-0.safetensors"), str(zoo / "seed-1.safetensors")]
    assert "reused" not in [ln for ln in r.out.splitlines() if "seed-2" in ln][0]
    assert (zoo / "seed-0.safetensors").read_bytes() == before  # never retrained
    r = run_cli(capsys, "train", *TINY, "--n", "3", "--out", zoo)
    assert r.code == 0 and f"nothing to do: finished (seed-0..2 in {zoo}" in r.err
    # another run into the same folder: one line, before any work
    other = [a if a != "width=8" else "width=9" for a in TINY]
    assert_one_line_error(run_cli(capsys, "train", *other, "--n", "3", "--out", zoo), "already holds a different run", "width")


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory) -> Path:
    from click.testing import CliRunner

    from stardomain.cli import cli

    zoo = tmp_path_factory.mktemp("resume_zoo") / "zoo"
    r = CliRunner().invoke(cli, [*map(str, ["train", *TINY, "--n", "2", "--out", zoo])], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return zoo


def test_star_rerun_reuses_the_same_star_and_refuses_another(small_zoo, tmp_path, capsys):
    out = tmp_path / "star.safetensors"
    base = ["star", "--sources", small_zoo, "-e", "1", "-q", "--device", "cpu", "--out", out]
    r = run_cli(capsys, *base)
    assert r.code == 0, r.err
    assert f"wrote {out}" in r.out
    first = out.read_bytes(), out.with_suffix(".json").read_bytes()
    r = run_cli(capsys, *base)  # the same command again: the finished star is reused, and said
    assert r.code == 0, r.err
    assert f"reused {out}: finished before with these sources and settings (--force retrains)" in r.out
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == first
    r = run_cli(capsys, *base, "--lr", "0.01")  # other settings: one line naming the difference and --force
    assert_one_line_error(r, str(out), "other settings", "lr", "--force")
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == first


def test_ctrl_c_says_what_was_kept_and_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    from stardomain.training import zoo as zoo_mod

    real, calls = zoo_mod.train_model, [0]

    def interrupted_second(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(zoo_mod, "train_model", interrupted_second)
    zoo = tmp_path / "my zoo"
    args = ["train", *TINY, "--n", "2", "--out", str(zoo)]
    r = run_cli(capsys, *args)
    assert r.code == 130
    lines = _lines(r.err)
    assert lines == [
        f"interrupted: kept the finished models in {zoo} and the last finished epoch of the one in training",
        f"resume with the same command: stardomain {' '.join(args[:-1])} '{zoo}'",
    ]
    assert (zoo / "seed-0.safetensors").exists() and not (zoo / "seed-1.safetensors").exists()
    monkeypatch.setattr(zoo_mod, "train_model", real)
    r = run_cli(capsys, *args)  # the printed command resumes
    assert r.code == 0 and "resuming: 1 of 2 models done" in r.err


def test_ctrl_c_of_a_command_that_writes_at_the_end(small_zoo, capsys, monkeypatch):
    from stardomain.cli import pairs_cmd  # noqa: F401  (the command module is loaded)
    from stardomain.training import loop

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "evaluate", interrupt)
    r = run_cli(capsys, "eval", small_zoo / "seed-0.safetensors")
    assert r.code == 130
    assert _lines(r.err) == [
        "interrupted before its results were written (nothing to resume)",
        f"run it again with: stardomain eval {small_zoo / 'seed-0.safetensors'}",
    ]


def test_run_rerun_says_resuming_and_a_finished_folder_prints_no_eta(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config("resume")))
    out = tmp_path / "run"
    r = run_cli(capsys, "run", cfg, "--out", out)
    assert r.code == 0, r.err
    assert "resuming" not in r.err and "nothing to do" not in r.err
    r = run_cli(capsys, "run", cfg, "--out", out)
    assert r.code == 0, r.err
    assert "nothing to do: finished (all" in r.err and "ETA ?" not in r.err
    held_out = next((out / "zoo").rglob("seed-1000.safetensors"))
    held_out.unlink()
    held_out.with_suffix(".json").unlink()
    r = run_cli(capsys, "run", cfg, "--out", out)
    assert r.code == 0, r.err
    done = [ln for ln in r.err.splitlines() if "resuming:" in ln]
    assert len(done) == 1 and " units done in " in done[0], r.err
    n, m = done[0].split("resuming: ", 1)[1].split(" units")[0].split(" of ")
    assert 0 < int(n) < int(m), done[0]  # the held-out unit (and what reads it) only


def _write_npz(path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3
    np.savez(path, x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])


def test_own_data_has_no_default_recipe_until_one_is_chosen(tmp_path, capsys):
    from stardomain.training.loop import default_recipe, has_default_recipe

    data = tmp_path / "blobs.npz"
    _write_npz(data)
    base = ["train", "-d", data, "-m", "mlp", "-o", "width=4", "-o", "depth=1", "--device", "cpu", "-q", "--out", tmp_path / "z"]
    r = run_cli(capsys, *base)
    assert r.code == 2
    assert_one_line_error(r, "has no default recipe", "--epochs N")
    assert not (tmp_path / "z").exists()  # refused before any work
    r = run_cli(capsys, *base, "-e", "1")
    assert r.code == 0, r.err
    assert "no default recipe: 1 epochs (--epochs), then optimizer sgd, lr 0.1" in r.err  # said, never silent
    assert json.loads((tmp_path / "z" / "seed-0.json").read_text())["recipe"]["epochs"] == 1
    # the registered datasets keep their defaults
    assert all(has_default_recipe(n) for n in ("digits", "fmnist", "mnist", "cifar10", "cifar100", "imagefolder"))
    assert (default_recipe("digits").epochs, default_recipe("fashion_mnist").epochs, default_recipe("cifar10").epochs) == (15, 10, 200)


def test_own_data_in_yaml_needs_train_epochs(tmp_path):
    from stardomain.errors import StardomainError
    from stardomain.experiment import load_config

    _write_npz(tmp_path / "blobs.npz")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_config("own", dataset={"file": "blobs.npz"}, train={"lr": 0.05})))
    with pytest.raises(StardomainError, match=r"has no default recipe.*train: \{epochs: N\}"):
        load_config(path)
    path.write_text(yaml.safe_dump(tiny_config("own", dataset={"file": "blobs.npz"}, train={"epochs": 2})))
    assert load_config(path).source_recipe().epochs == 2
