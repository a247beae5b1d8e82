"""Every figure the CLI prints comes from the intended models, data and seeds, or is refused in one line.

Regression tests for issue 12 where the user meets it: name aliases, which models are the
sources, the star's own seed stream and sources, the recorded training subset, and an
activation-matching sample that sees every class. Tiny digits MLPs, one epoch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from click.testing import CliRunner
from paths import FASHION_DIR

TINY = ["-d", "digits", "-m", "mlp", "-o", "width=8", "-o", "depth=1", "-e", "1", "--device", "cpu", "-q"]
SUBSET = ["--subset", "200", "--subset-seed", "5"]


def _cli_ok(*args: object) -> str:
    """Run a command that must succeed (module fixtures cannot use capsys)."""
    from stardomain.cli import cli

    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def _copy(src_dir: Path, seeds: list[int], dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        for suffix in (".safetensors", ".json"):
            shutil.copy(src_dir / f"seed-{s}{suffix}", dst / f"seed-{s}{suffix}")
    return dst


def _meta(path: Path) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    """zoo/: sources seeds 1, 2, 10 + held-out 1000 (subset 200, seed 5), and an Adam zoo in zoo/adam/."""
    root = tmp_path_factory.mktemp("trust")
    zoo = root / "zoo"
    for s in (1, 2, 10):  # text order seed-1, seed-10, seed-2: the two lowest seeds are 1 and 2
        _cli_ok("train", *TINY, *SUBSET, "--seed", s, "--out", zoo)
    _cli_ok("train", *TINY, *SUBSET, "--seed", 1000, "--role", "held_out", "--out", zoo)
    _cli_ok("train", *TINY, *SUBSET, "--n", 2, "--seed-start", 20, "--optimizer", "adam", "--out", zoo / "adam")
    only = _copy(zoo, [1, 2, 10], root / "only")
    return root, zoo, only


@pytest.mark.optional_data  # its Fashion-MNIST half runs only where the data is
def test_aliases_give_the_canonical_recipe_and_zoo_identity(tmp_path, capsys):
    from stardomain.training.loop import Recipe, default_recipe

    assert default_recipe("fmnist") == default_recipe("Fashion-MNIST") == default_recipe("fashion_mnist")
    assert default_recipe("fmnist").epochs != Recipe().epochs  # not the 200-epoch CIFAR recipe
    out = tmp_path / "z"
    arch = ["-o", "width=8", "-o", "depth=1", "-e", "1", "--subset", "100", "--seed", "0", "--device", "cpu", "-q"]
    base = [*arch, "--out", out]
    assert run_cli(capsys, "train", "-d", "Sklearn-Digits", "-m", "MLP", *base).code == 0
    meta = _meta(out / "seed-0.json")
    assert (meta["dataset"], meta["arch"]["name"], meta["config"]["dataset"], meta["config"]["model"]) == ("digits", "mlp", "digits", "mlp")
    assert meta["data"] == {"name": "digits", "subset": 100, "subset_seed": 0, "image_size": None}
    before = (out / "seed-0.safetensors").stat().st_mtime_ns
    r = run_cli(capsys, "train", "-d", "digits", "-m", "mlp", *base)  # the same run under its canonical names: skipped
    assert r.code == 0, r.err
    assert (out / "seed-0.safetensors").stat().st_mtime_ns == before
    assert_one_line_error(run_cli(capsys, "train", "-d", "digits", "-m", "resnet-1", *base), "unknown model", "resnet18")
    assert_one_line_error(run_cli(capsys, "train", "--subset-seed", "3", "--out", tmp_path / "x"), "--subset-seed", "--subset N")
    if FASHION_DIR is not None:
        r = run_cli(capsys, "train", "-d", "fmnist", "--data-root", FASHION_DIR, "-m", "mlp", *arch, "--out", tmp_path / "f")
        assert r.code == 0, r.err
        meta = _meta(tmp_path / "f" / "seed-0.json")
        assert meta["dataset"] == meta["data"]["name"] == "fashion_mnist"
        assert meta["recipe"] == default_recipe("fashion_mnist").replace(epochs=1).to_dict()


def test_star_and_bma_use_exactly_the_lowest_seed_sources(zoos, tmp_path, capsys):
    root, zoo, only = zoos
    r = run_cli(capsys, "star", "--sources", zoo, "--n-sources", 2, "-e", 1, "--out", tmp_path / "mixed.safetensors", "-q")
    assert r.code == 0, r.err
    assert "2 sources (seed-1..2 of" in r.out and "1000" not in r.out.split("star seed")[0]
    r = run_cli(capsys, "star", "--sources", only, "--n-sources", 2, "-e", 1, "--out", tmp_path / "only.safetensors", "-q")
    assert r.code == 0, r.err
    mixed, alone = _meta(tmp_path / "mixed.json"), _meta(tmp_path / "only.json")
    assert [s["seed"] for s in mixed["sources"]] == [1, 2]
    assert mixed["sha256"] == alone["sha256"]  # the same star: held-out and Adam models never reached it

    # BMA: the star's recorded sources by default, the same with or without a folder full of other models
    outs = {}
    for name, extra in (("mixed", []), ("search", ["--sources", zoo]), ("only", [])):
        star = tmp_path / f"{'only' if name == 'only' else 'mixed'}.safetensors"
        r = run_cli(capsys, "bma", "--star", star, *extra, "--max-samples", 2, "--out", tmp_path / f"bma-{name}.json", "--device", "cpu")
        assert r.code == 0, r.err
        outs[name] = json.loads((tmp_path / f"bma-{name}.json").read_text())
    for res in outs.values():
        assert [m["seed"] for m in res["sources"]["models"]] == [1, 2] and res["sources"]["which"] == "the star's own"
        for key in ("star_domain", "ensemble"):
            assert res[key]["metrics"] == outs["mixed"][key]["metrics"]
    assert "seed-1..2" in r.out

    # another set only on request, and the output says so
    r = run_cli(
        capsys,
        "bma",
        "--star",
        tmp_path / "mixed.safetensors",
        "--other-sources",
        only,
        "--max-samples",
        2,
        "--out",
        tmp_path / "bma-other.json",
        "--device",
        "cpu",
    )
    assert r.code == 0, r.err
    other = json.loads((tmp_path / "bma-other.json").read_text())
    assert other["sources"]["which"] == "other" and [m["seed"] for m in other["sources"]["models"]] == [1, 2, 10]


def test_folders_that_are_not_one_source_set_are_refused(zoos, tmp_path, capsys):
    root, zoo, only = zoos
    out = ["-e", "1", "--out", tmp_path / "s.safetensors", "-q"]
    mixed = _copy(zoo, [1, 2], tmp_path / "sgd_and_adam")
    _copy(zoo / "adam", [20, 21], mixed)
    assert_one_line_error(run_cli(capsys, "star", "--sources", mixed, *out), "mixes recipes", "optimizer sgd", "adam", "seed-20..21")
    held = _copy(zoo, [1000], tmp_path / "held")
    assert_one_line_error(run_cli(capsys, "star", "--sources", held, *out), "only held_out")
    assert_one_line_error(run_cli(capsys, "star", "--sources", root, *out), "subfolders are not searched")
    old = _copy(zoo, [1, 2], tmp_path / "old")
    meta = _meta(old / "seed-2.json")
    del meta["role"]
    (old / "seed-2.json").write_text(json.dumps(meta))
    assert_one_line_error(run_cli(capsys, "star", "--sources", old, *out), "no recorded role", "--role source")
    assert not (tmp_path / "s.safetensors").exists()


def test_bma_refuses_a_source_that_is_missing_or_changed(zoos, tmp_path, capsys):
    root, zoo, only = zoos
    work = _copy(zoo, [1, 2, 10], tmp_path / "work" / "zoo")
    star = tmp_path / "work" / "star.safetensors"
    assert run_cli(capsys, "star", "--sources", work, "--n-sources", 2, "-e", 1, "--out", star, "-q").code == 0
    for suffix in (".safetensors", ".json"):  # seed-2 replaced by another model under the same name
        shutil.copy(work / f"seed-10{suffix}", work / f"seed-2{suffix}")
    args = ["bma", "--star", star, "--max-samples", 2, "--device", "cpu"]
    assert_one_line_error(run_cli(capsys, *args), "seed-2.safetensors is not the source", "--other-sources")
    (work / "seed-2.safetensors").unlink()
    (work / "seed-2.json").unlink()
    assert_one_line_error(run_cli(capsys, *args), "missing", "--sources DIR")
    r = run_cli(capsys, *args, "--sources", only)  # found again by its hash elsewhere
    assert r.code == 0, r.err


def test_star_seed_never_reproduces_a_source_init(zoos, tmp_path, capsys):
    from stardomain.checkpoints import store
    from stardomain.starlight import star_seed
    from stardomain.training import zoo as zoo_mod
    from stardomain.training.loop import seed_everything

    root, zoo, only = zoos
    meta = _meta(zoo / "seed-1.json")
    own = star_seed(1)
    assert own not in range(0, 2000) and star_seed(1) == own and star_seed(1, "mu=1") != own
    seed_everything(own)
    star_init = store.build_model(meta["arch"]).state_dict()
    source_init = zoo_mod.initial_state(meta)
    assert any(not torch.equal(star_init[k], source_init[k]) for k in source_init)

    r = run_cli(capsys, "star", "--sources", only, "--seed", 1, "-e", 1, "--out", tmp_path / "s1.safetensors", "-q")
    assert r.code == 0, r.err
    m = _meta(tmp_path / "s1.json")
    assert (m["role"], m["seed"], m["seed_option"]) == ("star", own, 1) and f"star seed {own} (--seed 1)" in r.out

    # a source trained from exactly the seed the star would use: refused, not silently a copy
    clash = _copy(zoo, [1], tmp_path / "clash")
    _cli_ok("train", *TINY, *SUBSET, "--seed", own, "--out", clash)
    assert_one_line_error(
        run_cli(capsys, "star", "--sources", clash, "--seed", 1, "-e", 1, "--out", tmp_path / "s.safetensors", "-q"),
        "initial weights equal",
        f"seed {own}",
        "another --seed",
    )


def test_barrier_and_star_use_the_recorded_subset(zoos, tmp_path, capsys):
    from stardomain.checkpoints import store
    from stardomain.data import load_dataset
    from stardomain.training.loop import evaluate

    root, zoo, only = zoos
    a, b = zoo / "seed-1.safetensors", zoo / "seed-2.safetensors"
    r = run_cli(capsys, "barrier", a, b, "--points", 3, "--out", tmp_path / "c.json", "--device", "cpu", "-q")
    assert r.code == 0, r.err
    res = json.loads((tmp_path / "c.json").read_text())
    assert (res["data"]["subset"], res["data"]["subset_seed"], res["data"]["overridden"]) == (200, 5, [])
    assert "subset 200 (seed 5) (as recorded" in r.out and "train n=200" in r.out
    # t = 0 is model A itself: its train loss there is over exactly the 200 samples it was trained on
    ds = load_dataset("digits", subset=200, seed=5)
    loss, _ = evaluate(store.load(a), ds.train_x, ds.train_y)
    assert res["curve"]["train_loss"][0] == pytest.approx(loss, rel=1e-5)
    wrong = load_dataset("digits", subset=200, seed=0)
    assert evaluate(store.load(a), wrong.train_x, wrong.train_y)[0] != pytest.approx(loss, rel=1e-5)

    r = run_cli(capsys, "barrier", a, b, "--points", 2, "--subset", "all", "--out", tmp_path / "f.json", "--device", "cpu", "-q")
    assert r.code == 0, r.err
    full = json.loads((tmp_path / "f.json").read_text())
    assert full["data"]["subset"] is None and full["data"]["overridden"] == ["subset"] and "train n=1437" in r.out

    r = run_cli(capsys, "star", "--sources", only, "-e", 1, "--out", tmp_path / "star.safetensors", "-q")
    assert r.code == 0, r.err
    assert (
        _meta(tmp_path / "star.json")["data"] == _meta(a)["data"] == {"name": "digits", "subset": 200, "subset_seed": 5, "image_size": None}
    )

    _cli_ok("train", *TINY, "--seed", 1, "--out", tmp_path / "full")  # the same seed on the whole split
    full = tmp_path / "full" / "seed-1.safetensors"
    assert_one_line_error(
        run_cli(capsys, "barrier", a, full, "--device", "cpu"), "different data", "subset 200 (seed 5)", "full train split"
    )
    # a subset seed with no subset to draw is refused, not silently dropped for the whole split
    assert_one_line_error(
        run_cli(capsys, "barrier", full, full, "--subset-seed", 3, "--device", "cpu", "-q"),
        "--subset-seed 3",
        "was trained on the full train split",
        "--subset N",
    )
    assert_one_line_error(
        run_cli(capsys, "barrier", a, b, "--subset", "all", "--subset-seed", 5, "--device", "cpu", "-q"),
        "--subset all asks for the full train split",
    )


def test_activation_matching_on_a_class_ordered_image_folder_sees_every_class(tmp_path, capsys, monkeypatch):
    pytest.importorskip("PIL.Image")
    from image_helpers import make_folder

    import stardomain.permute as permute
    from stardomain.data import load_dataset

    folder = make_folder(tmp_path / "tiny")  # train/<class>/ read class by class: labels 0,0,0,0,1,1,1,1,2,...
    base = [
        "-d",
        "imagefolder",
        "--data-root",
        folder,
        "--image-size",
        "8",
        "-m",
        "mlp",
        "-o",
        "width=8",
        "-o",
        "depth=1",
        "-e",
        "1",
        "--device",
        "cpu",
        "-q",
        "--out",
        tmp_path / "z",
    ]
    assert run_cli(capsys, "train", *base, "--n", "2").code == 0
    seen = []
    real = permute.align

    def spy(*args, **kw):
        seen.append(kw["x"].cpu())
        return real(*args, **kw)

    monkeypatch.setattr(permute, "align", spy)
    r = run_cli(
        capsys,
        "barrier",
        tmp_path / "z" / "seed-0.safetensors",
        tmp_path / "z" / "seed-1.safetensors",
        "--align",
        "activation",
        "--matching-samples",
        3,
        "--points",
        2,
        "--data-root",
        folder,
        "--device",
        "cpu",
        "-q",
    )
    assert r.code == 0, r.err
    ds = load_dataset("imagefolder", root=folder, image_size=8)
    assert ds.train_y[:3].unique().numel() == 1  # a prefix would be one class
    labels = {int(ds.train_y[(ds.train_x == row).flatten(1).all(1)][0]) for row in seen[0]}
    assert labels == {0, 1, 2}

    # another folder with as many classes (same shapes, same dataset name) is other data: refused, not evaluated
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    for split in ("train", "val"):
        (other / split / "ant").rename(other / split / "ape")
    assert_one_line_error(
        run_cli(
            capsys,
            "barrier",
            tmp_path / "z" / "seed-0.safetensors",
            tmp_path / "z" / "seed-1.safetensors",
            "--points",
            2,
            "--data-root",
            other,
            "--device",
            "cpu",
            "-q",
        ),
        "classes ant, bee, cat",
        "ape, bee, cat",
        "--data-root it was trained on",
    )


def test_data_the_command_cannot_rebuild_is_refused(zoos, tmp_path, capsys):
    root, zoo, only = zoos
    work = _copy(zoo, [1, 2], tmp_path / "streamed")
    for s in (1, 2):  # as the pipeline records a streamed image folder (resize + centre crop)
        meta = _meta(work / f"seed-{s}.json")
        meta["data"]["stream"] = {"crop": 8, "resize": 9}
        (work / f"seed-{s}.json").write_text(json.dumps(meta))
    assert_one_line_error(
        run_cli(capsys, "barrier", work / "seed-1.safetensors", work / "seed-2.safetensors", "--points", 2, "--device", "cpu", "-q"),
        "with stream",
        "cannot rebuild",
        "stream: true",
    )


def test_a_changed_data_file_is_refused(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)

    def write(path, shift):
        x = rng.normal(size=(60, 6)).astype(np.float32) + shift
        np.savez(path, x_train=x[:40], y_train=np.arange(40) % 3, x_test=x[40:], y_test=np.arange(20) % 3)

    data_file = tmp_path / "table.npz"
    write(data_file, 0.0)
    base = ["-d", f"file:{data_file}", "-m", "mlp", "-o", "width=4", "-o", "depth=1", "-e", "1", "--device", "cpu", "-q"]
    assert run_cli(capsys, "train", *base, "--n", "2", "--out", tmp_path / "z").code == 0, capsys.readouterr()
    a, b = tmp_path / "z" / "seed-0.safetensors", tmp_path / "z" / "seed-1.safetensors"
    r = run_cli(capsys, "barrier", a, b, "--points", 2, "--device", "cpu", "-q")
    assert r.code == 0, r.err
    write(data_file, 1.0)  # same name, other numbers
    assert_one_line_error(run_cli(capsys, "barrier", a, b, "--points", 2, "--device", "cpu", "-q"), "SHA-256", "it changed")
