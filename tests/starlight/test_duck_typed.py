"""A duck-typed dataset (name, split tensors, classes, shape) trains a zoo and a star: the README promises plain objects work."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import stardomain as sd


def test_train_star_on_a_duck_typed_dataset_records_its_name(tmp_path: Path) -> None:
    ds = sd.load_dataset("digits")
    duck = SimpleNamespace(
        name="digits",
        train_x=ds.train_x,
        train_y=ds.train_y,
        test_x=ds.test_x,
        test_y=ds.test_y,
        num_classes=ds.num_classes,
        in_shape=ds.in_shape,
    )
    recipe = sd.Recipe(epochs=1, augment=False)
    paths = sd.train_zoo(duck, "mlp", {"width": 8, "depth": 1}, recipe, [0, 1], tmp_path / "zoo", progress=False)
    star = sd.train_star(paths, duck, sd.StarlightConfig(recipe=recipe), tmp_path / "star.safetensors", seed=3)
    assert star.meta["data"]["name"] == "digits" and star.meta["dataset"] == "digits"
