"""Tests for the ImageNet-style image-folder dataset: tiny synthetic folders written with Pillow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from image_helpers import COLOURS, Image, make_folder, write_image

from stardomain.data import accepts_image_size, load_dataset
from stardomain.data.imagefolder import read_image_folder
from stardomain.errors import StardomainError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "tiny")


def test_shapes_labels_and_classes(folder):
    d = load_dataset("imagefolder", root=folder, image_size=16)
    assert d.name == "imagefolder" and d.classes == ["ant", "bee", "cat"] and d.num_classes == 3
    assert tuple(d.train_x.shape) == (12, 3, 16, 16) and tuple(d.test_x.shape) == (6, 3, 16, 16)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert d.in_shape == (3, 16, 16) and d.augment
    assert d.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert d.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    raw = read_image_folder(folder, 16)
    assert raw.train_x.dtype == np.uint8 and raw.scale == 255.0
    for label, name in enumerate(d.classes):  # each label's images carry that class's colour
        mean_colour = raw.train_x[raw.train_y == label].reshape(-1, 3, 256).mean(axis=(0, 2))
        assert np.allclose(mean_colour, COLOURS[name], atol=4), (name, mean_colour)


def test_default_image_size_and_deterministic(folder):
    a = load_dataset("imagefolder", root=folder)
    b = load_dataset("image-folder", root=str(folder))
    assert a.in_shape == (3, 64, 64)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert a.mean == b.mean and a.std == b.std


def test_per_channel_normalisation(folder):
    d = load_dataset("imagefolder", root=folder, image_size=8)
    x = d.train_x.double()
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-4)
    raw = read_image_folder(folder, 8)
    scaled = raw.train_x.astype(np.float64) / 255
    assert np.allclose(d.mean, scaled.mean(axis=(0, 2, 3))) and np.allclose(d.std, scaled.std(axis=(0, 2, 3)))


def _stripes(size: tuple[int, int], horizontal: bool) -> Image.Image:
    """Four equal stripes green | red | blue | yellow along the long side."""
    colours = [(0, 255, 0), (255, 0, 0), (0, 0, 255), (255, 255, 0)]
    w, h = size
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    n = w if horizontal else h
    for k, c in enumerate(colours):
        sl = slice(k * n // 4, (k + 1) * n // 4)
        if horizontal:
            arr[:, sl] = c
        else:
            arr[sl, :] = c
    return Image.fromarray(arr)


def test_resize_shorter_side_then_centre_crop(tmp_path):
    root = tmp_path / "crop"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        _stripes((40, 20), horizontal=True).save(root / split / "a" / "wide.png")  # 40 wide, 20 tall
        (root / split / "b").mkdir(parents=True)
        _stripes((20, 40), horizontal=False).save(root / split / "b" / "tall.png")
    raw = read_image_folder(root, 10)
    wide, tall = raw.train_x[0], raw.train_x[1]  # (3, 10, 10); sorted: a/wide, b/tall
    # shorter side 20 -> 10, the 20x10 result cropped to its middle: the outer (green, yellow) stripes go,
    # red stays on the left / top half and blue on the right / bottom half
    red, blue = [255, 0, 0], [0, 0, 255]
    for r in (0, 5, 9):
        assert wide[:, r, 1].tolist() == red and wide[:, r, 3].tolist() == red
        assert wide[:, r, 6].tolist() == blue and wide[:, r, 8].tolist() == blue
        assert tall[:, 1, r].tolist() == red and tall[:, 8, r].tolist() == blue
    assert not (wide[1] > 128).any()  # no green (nor yellow) survives the crop
    assert np.array_equal(raw.test_x, raw.train_x)


def test_val_preferred_over_test(tmp_path):
    both = make_folder(tmp_path / "both", held={"val": 2, "test": 1})
    assert len(load_dataset("imagefolder", root=both, image_size=8).test_y) == 6
    only_test = make_folder(tmp_path / "test-only", held={"test": 1})
    assert load_dataset("imagefolder", root=only_test, image_size=8).test_y.tolist() == [0, 1, 2]


def test_missing_train_folder(tmp_path):
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(StardomainError) as err:
        load_dataset("imagefolder", root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "train") in msg and "val/<class>" in msg


def test_no_held_out_split(tmp_path):
    make_folder(tmp_path, held={})
    with pytest.raises(StardomainError, match="neither val/ nor test/"):
        load_dataset("imagefolder", root=tmp_path)


def test_unknown_class_in_val(folder):
    write_image(folder / "val" / "dog" / "x.png", (10, 10), (1, 2, 3))
    with pytest.raises(StardomainError) as err:
        load_dataset("imagefolder", root=folder, image_size=8)
    msg = str(err.value)
    assert "\n" not in msg and str(folder / "val" / "dog") in msg


def test_empty_train_class(folder):
    (folder / "train" / "dog").mkdir()
    (folder / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(StardomainError, match="dog holds no images"):
        load_dataset("imagefolder", root=folder, image_size=8)


def test_corrupt_file_is_named(folder):
    bad = folder / "train" / "bee" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(StardomainError) as err:
        load_dataset("imagefolder", root=folder, image_size=8)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "cannot decode" in msg


def test_image_size_only_for_imagefolder(folder):
    assert accepts_image_size("imagefolder") and accepts_image_size("Image-Folder")
    assert not accepts_image_size("digits") and not accepts_image_size("nope")
    with pytest.raises(StardomainError, match="only applies to imagefolder"):
        load_dataset("digits", image_size=8)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(StardomainError, match="image_size"):
            load_dataset("imagefolder", root=folder, image_size=bad)


def test_root_is_required(monkeypatch, tmp_path):
    monkeypatch.setenv("STARDOMAIN_DATA", str(make_folder(tmp_path / "env")))  # not used as a fallback
    for root in (None, ""):
        with pytest.raises(StardomainError) as err:
            load_dataset("imagefolder", root=root)
        msg = str(err.value)
        assert "\n" not in msg and "--data-root" in msg


def test_download_is_ignored(folder):
    d = load_dataset("imagefolder", root=folder, image_size=8, download=False)
    assert len(d.train_y) == 12


# --------------------------------------------------------------------------- CLI


def test_cli_train_and_eval_on_image_folder(capsys, folder, tmp_path):
    out = tmp_path / "zoo"
    args = [
        "train",
        "-d",
        "imagefolder",
        "--data-root",
        folder,
        "--image-size",
        "12",
        "-m",
        "mlp",
        "-o",
        "width=8",
        "-o",
        "depth=1",
        "-e",
        "1",
        "--seed",
        "0",
        "--device",
        "cpu",
        "-q",
    ]
    r = run_cli(capsys, *args, "--out", out)
    assert r.code == 0, r.err
    ckpt = out / "seed-0.safetensors"
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    assert meta["dataset"] == "imagefolder" and meta["arch"]["in_shape"] == [3, 12, 12] and meta["arch"]["num_classes"] == 3
    assert meta["config"]["data"] == {"image_size": 12, "classes": ["ant", "bee", "cat"]}

    r = run_cli(capsys, "eval", ckpt, "--data-root", folder, "--json", "--device", "cpu")  # image size from the checkpoint
    assert r.code == 0, r.err
    assert json.loads(r.out)["n"] == 6
    assert_one_line_error(run_cli(capsys, "eval", ckpt, "--device", "cpu"), "--data-root")

    # same zoo folder, other image size: a different run, refused rather than silently mixed
    r = run_cli(capsys, *[a if a != "12" else "16" for a in args], "--out", out)
    assert_one_line_error(r, "different run")
    assert_one_line_error(
        run_cli(capsys, "train", "-d", "digits", "--image-size", "8", "--out", tmp_path / "d"), "only applies to imagefolder"
    )


# --------------------------------------------------------------------------- YAML config


def test_experiment_config_image_size(tmp_path, folder):
    from stardomain.experiment.config import ExperimentConfig, from_dict

    cfg = from_dict(ExperimentConfig, {"dataset": "imagefolder", "data_root": str(folder), "image_size": 32})
    assert cfg.image_size == 32 and cfg.to_dict()["image_size"] == 32
    assert "image_size" not in from_dict(ExperimentConfig, {"dataset": "digits"}).to_dict()  # older configs unchanged
    with pytest.raises(StardomainError, match="image_size: only applies to dataset imagefolder"):
        from_dict(ExperimentConfig, {"dataset": "digits", "image_size": 32})
    with pytest.raises(StardomainError, match="data_root"):
        from_dict(ExperimentConfig, {"dataset": "imagefolder"})
    with pytest.raises(StardomainError, match="image_size"):
        from_dict(ExperimentConfig, {"dataset": "imagefolder", "data_root": str(folder), "image_size": 0})
