"""A generated ImageNet-style folder streamed through training, BN re-estimation and a barrier curve.

300 small JPEGs (4 classes, colour-coded with noise, odd sizes), decoded by 2 DataLoader workers at
crop 32 / resize 36 (the ImageNet 224 / 256 scaled down so the test takes seconds).
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stardomain import barrier, models
from stardomain.barrier.bn import bn_state, reset_bn, sample_order
from stardomain.data.stream import IMAGENET_MEAN, IMAGENET_STD, StreamingImageFolder, random_resized_crop_box
from stardomain.errors import StardomainError
from stardomain.training.loop import Recipe, train_model

Image = pytest.importorskip("PIL.Image")

CLASSES = {"n01": (220, 30, 30), "n02": (30, 220, 30), "n03": (30, 30, 220), "n04": (220, 220, 30)}
CROP, RESIZE = 32, 36


def write_folder(root: Path, train_per_class: int = 60, val_per_class: int = 15) -> Path:
    rng = np.random.default_rng(0)
    for name, colour in CLASSES.items():
        for split, n in (("train", train_per_class), ("val", val_per_class)):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                w, h = int(rng.integers(40, 64)), int(rng.integers(40, 64))
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{name}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("imagenet_style"))


@pytest.fixture(scope="module")
def stream(folder) -> StreamingImageFolder:
    return StreamingImageFolder(folder, crop=CROP, resize=RESIZE, num_workers=2)


def test_stream_trains_reestimates_bn_and_gives_the_tensor_curve(stream):
    assert (stream.split_size("train"), stream.split_size("test"), stream.in_shape) == (240, 60, (3, CROP, CROP))
    recipe = Recipe(lr=0.05, epochs=3, batch_size=32, weight_decay=5e-4)
    torch.manual_seed(0)
    model = models.create("resnet20", stream.num_classes, stream.in_shape, width=0.25)
    history = train_model(model, stream, recipe, seed=0, progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["test_acc"] > 0.6  # colour-coded classes: learnt from random-resized crops

    # BN re-estimation read batch by batch from the folder == the same seeded subset held in memory
    order = sample_order(240, 100, seed=5)
    x_sub, _ = stream.split_tensors("train", order)
    trained_bn = bn_state(model)
    streamed, in_memory = model, models.create("resnet20", stream.num_classes, stream.in_shape, width=0.25)
    in_memory.load_state_dict(model.state_dict())
    new_stream = reset_bn(streamed, stream, num_samples=100, seed=5, batch_size=33)
    new_memory = reset_bn(in_memory, x_sub, indices=torch.arange(100), batch_size=33)
    for k, v in new_memory.items():
        torch.testing.assert_close(new_stream[k], v, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(v, trained_bn[k]) for k, v in new_stream.items() if k.endswith("running_mean"))

    # the barrier curve on the stream: its seeded subsets decoded once == the curve of those tensors
    torch.manual_seed(1)
    other = models.create("resnet20", stream.num_classes, stream.in_shape, width=0.25)
    state_a, state_b = model.state_dict(), other.state_dict()
    kw = dict(num_points=3, bn_samples=100, eval_train_samples=80, seed=3, bn_batch_size=50)
    c_stream = barrier.curve(state_a, state_b, model=model, dataset=stream, **kw)
    tx, ty = stream.split_tensors("train")
    vx, vy = stream.split_tensors("test")
    c_memory = barrier.curve(state_a, state_b, model=model, dataset=SimpleNamespace(train_x=tx, train_y=ty, test_x=vx, test_y=vy), **kw)
    assert c_stream.info == c_memory.info and c_stream.info["eval_train_samples"] == 80
    for m in barrier.METRICS:
        assert c_stream.metric(m) == pytest.approx(c_memory.metric(m), rel=1e-5, abs=1e-6), m
    assert c_stream.test_acc[0] > 0.6 and c_stream.test_acc[-1] < 0.5  # trained A, untrained B


def test_batches_do_not_depend_on_workers_and_differ_by_epoch(folder):
    def first_batch(workers: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = StreamingImageFolder(folder, crop=CROP, resize=RESIZE, num_workers=workers)
        loader = ds.train_loader(batch_size=16, augment=True, seed=7)
        loader.epoch = epoch
        return next(iter(loader))

    x0, y0 = first_batch(0, 0)
    x2, y2 = first_batch(2, 0)
    assert x0.dtype == torch.float32 and x0.shape == (16, 3, CROP, CROP)
    assert torch.equal(x0, x2) and torch.equal(y0, y2)
    x1, _ = first_batch(0, 1)
    assert not torch.equal(x0, x1)


def test_eval_crop_and_imagenet_normalisation(tmp_path):
    colour = (200, 100, 50)
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        # a wide image: shorter side 40 -> 36, centre crop 32 keeps the centre stripe only
        pixels = np.zeros((40, 120, 3), dtype=np.uint8)
        pixels[:, 40:80] = colour
        Image.fromarray(pixels).save(tmp_path / split / "a" / "x.png")
    ds = StreamingImageFolder(tmp_path, crop=CROP, resize=RESIZE, num_workers=0)
    x, y = ds.split_tensors("test")
    assert x.shape == (1, 3, CROP, CROP) and y.tolist() == [0]
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, IMAGENET_MEAN, IMAGENET_STD)])
    torch.testing.assert_close(x[0, :, :, 4:-4].mean(dim=(1, 2)), expected, atol=1e-4, rtol=0)
    assert ds.record()["stream"] == {"crop": CROP, "resize": RESIZE}


def test_random_resized_crop_box_stays_inside_with_bounded_aspect():
    rng = random.Random(0)
    for _ in range(500):
        w, h = rng.randint(8, 300), rng.randint(8, 300)
        left, top, cw, ch = random_resized_crop_box(w, h, rng)
        assert 0 <= left and 0 <= top and 0 < cw and 0 < ch and left + cw <= w and top + ch <= h
    # a 100x1 strip cannot hold any 3/4..4/3 box of 8%+ area: the fallback is the centred 4/3 box of full height
    assert random_resized_crop_box(100, 1, random.Random(0)) == (49, 0, 1, 1)


def test_materialising_too_much_and_a_broken_image_are_one_line_errors(folder, tmp_path):
    tight = StreamingImageFolder(folder, crop=CROP, resize=RESIZE, num_workers=0, max_materialize_gb=1e-4)
    with pytest.raises(StardomainError, match="evaluate a seeded subset"):
        tight.split_tensors("train")
    assert len(tight.split_tensors("train", torch.arange(5))[0]) == 5
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.new("RGB", (40, 40), (1, 2, 3)).save(tmp_path / split / "a" / "good.jpg")
    (tmp_path / "train" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    ds = StreamingImageFolder(tmp_path, crop=CROP, resize=RESIZE, num_workers=2)
    with pytest.raises(StardomainError) as info:
        list(ds.train_loader(batch_size=2, augment=True, seed=0))
    assert "broken.jpg" in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("imagefolder: cannot decode")


def test_experiment_with_stream_true_runs_on_a_streamed_folder(folder, tmp_path):
    """The shipped ImageNet config's shape (stream: true, seeded eval subsets), scaled down to the generated folder."""
    from stardomain.experiment import run_experiment
    from stardomain.experiment.config import ExperimentConfig, from_dict

    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "stream",
            "dataset": "imagefolder",
            "data_root": str(folder),
            "stream": True,
            "image_size": CROP,
            "device": "cpu",
            "model": {"name": "resnet18_imagenet", "options": {"width": 0.125}},
            "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
            "sources": 2,
            "held_out": 1,
            "star": {"recipe": {"epochs": 1}},
            "eval": {"points": 3, "bn_samples": 64, "eval_train_samples": 64, "eval_test_samples": 40, "max_pairs": 1},
            "studies": {"barriers": True, "distances": True},
        },
    )
    results = run_experiment(cfg, tmp_path / "run", progress=False)
    pairs = [p for group in results["barriers"]["groups"].values() for p in group]
    assert pairs and all(p["curve"]["info"]["eval_test_samples"] == 40 for p in pairs)
    assert all(p["curve"]["info"]["bn_samples"] == 64 for p in pairs)


def test_stream_config_refuses_what_needs_whole_splits():
    from stardomain.experiment.config import ExperimentConfig, from_dict

    base = {"dataset": "imagefolder", "data_root": "/data", "stream": True, "eval": {"bn_samples": 64, "eval_train_samples": 64}}
    from_dict(ExperimentConfig, base)  # valid
    with pytest.raises(StardomainError, match="set both when stream: true"):
        from_dict(ExperimentConfig, {**base, "eval": {"bn_samples": 64}})
    with pytest.raises(StardomainError, match=r"studies\.bma: needs the whole test split in memory"):
        from_dict(ExperimentConfig, {**base, "studies": {"bma": {"max_samples": 2}}})
    with pytest.raises(StardomainError, match=r"studies\.fusion: needs the whole test split in memory"):
        from_dict(ExperimentConfig, {**base, "studies": {"fusion": {"sizes": [2]}}})
    with pytest.raises(StardomainError, match="only for dataset imagefolder"):
        from_dict(ExperimentConfig, {**base, "dataset": "digits", "data_root": None})


def test_what_needs_whole_splits_refuses_a_streamed_dataset_in_one_line(tmp_path):
    """BMA and fusion read whole splits: handed a streamed folder they refuse, naming the study, never an AttributeError."""
    from stardomain.data.protocol import in_memory

    streamed = SimpleNamespace(streaming=True, train_y=torch.zeros(2), test_y=torch.zeros(2))
    with pytest.raises(StardomainError, match=r"^studies\.fusion: needs the whole train and test splits in memory"):
        in_memory(streamed, "studies.fusion")
    plain = SimpleNamespace(train_x=torch.zeros(2, 1), train_y=torch.zeros(2), test_x=torch.zeros(1, 1), test_y=torch.zeros(1))
    assert in_memory(plain, "studies.bma") is plain
