"""Batched training reads a dataset through the SplitData protocol only: a dataset without whole-split tensors
(a streamed image folder) trains batched too (it used to fail on ``dataset.test_x``, found by typing the seam)."""

from __future__ import annotations

import pytest

from stardomain.data.protocol import SplitData
from stardomain.training import zoo
from stardomain.training.loop import default_recipe


class _NoTensors:
    """A Dataset seen through SplitData alone: no train_x / test_x, as a StreamingImageFolder."""

    def __init__(self, dataset):
        self._d = dataset
        self.name, self.num_classes, self.in_shape, self.classes = dataset.name, dataset.num_classes, dataset.in_shape, dataset.classes

    @property
    def train_y(self):
        return self._d.train_y

    @property
    def test_y(self):
        return self._d.test_y

    def record(self):
        return self._d.record()

    def split_size(self, split):
        return self._d.split_size(split)

    def split_tensors(self, split, indices=None):
        return self._d.split_tensors(split, indices)

    def train_loader(self, batch_size, augment, seed, device="cpu"):
        return self._d.train_loader(batch_size, augment, seed, device)

    def eval_batches(self, split, batch_size=1024, device="cpu", indices=None):
        return self._d.eval_batches(split, batch_size, device, indices)


def test_batched_training_needs_no_whole_split_tensors(digits, tmp_path):
    data = _NoTensors(digits)
    assert isinstance(data, SplitData) and not hasattr(data, "test_x")
    recipe = default_recipe("digits").replace(epochs=1)
    seeds = [0, 1]
    zoo.train_zoo(data, "mlp", {"depth": 1, "width": 8}, recipe, seeds, tmp_path / "wrapped", progress=False, batch_models=2)
    zoo.train_zoo(digits, "mlp", {"depth": 1, "width": 8}, recipe, seeds, tmp_path / "plain", progress=False, batch_models=2)
    for s in seeds:
        wrapped, plain = (zoo.load_zoo(tmp_path / d)[s][2] for d in ("wrapped", "plain"))
        assert wrapped["history"][0]["test_acc"] == pytest.approx(plain["history"][0]["test_acc"], abs=0)
        assert wrapped["metrics"] == plain["metrics"]
