"""The curated top-level API: one name per use case, resolved lazily, and a whole study through it alone."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import stardomain as sd


def test_import_stardomain_loads_no_torch_and_every_name_resolves() -> None:
    code = "import sys, stardomain; assert 'torch' not in sys.modules, 'torch imported'; print(len(stardomain.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(sd.__all__)
    for name in sd.__all__:
        assert getattr(sd, name) is not None, name
    assert set(dir(sd)) >= set(sd.__all__)


def test_a_star_and_its_barrier_through_the_top_level_api(tmp_path: Path) -> None:
    ds = sd.load_dataset("digits")
    recipe = sd.Recipe(epochs=1)
    paths = sd.train_zoo(ds, "mlp", {"width": 8, "depth": 1}, recipe, [0, 1], tmp_path / "zoo", progress=False)
    star = sd.train_star(paths, ds, sd.StarlightConfig(recipe=recipe), tmp_path / "star.safetensors", seed=sd.star_seed(0))
    assert star.trained and star.meta["kind"] == "star" and [s["seed"] for s in star.meta["sources"]] == [0, 1]
    model = sd.load_checkpoint(star.path)
    pair = sd.evaluate_pair(model.state_dict(), sd.load_state(paths[0])[0], model=model, dataset=ds, points=3)
    assert isinstance(pair, sd.PairResult) and pair.function_check is not None
    assert all(math.isfinite(v) for v in pair.barriers.values()) and pair.l2_aligned <= pair.l2 + 1e-6


def test_the_api_gives_accuracies_and_accuracy_barriers_as_fractions(tmp_path: Path) -> None:
    """Issue 35's convention: the Python API returns fractions in [0, 1] everywhere (people get % and pp from the CLI)."""

    def fractions(*values: float) -> bool:
        return all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values)

    ds = sd.load_dataset("digits")
    recipe = sd.Recipe(epochs=1)
    history = sd.train_model(
        sd.create_model("mlp", ds.num_classes, tuple(ds.in_shape), width=8, depth=1), ds, recipe, seed=0, progress=False
    )
    assert fractions(*(r[k] for r in history for k in ("train_acc", "test_acc")))
    paths = sd.train_zoo(ds, "mlp", {"width": 8, "depth": 1}, recipe, [0, 1], tmp_path / "zoo", progress=False)
    metas = [meta for _, _, meta in sd.load_zoo(tmp_path / "zoo")]
    assert fractions(*(m["metrics"][k] for m in metas for k in ("train_acc", "test_acc")))
    model = sd.load_checkpoint(paths[0])
    a, b = (sd.load_state(p)[0] for p in paths)
    pair = sd.evaluate_pair(a, b, model=model, dataset=ds, points=3)
    assert fractions(pair.barriers["train_acc"], pair.barriers["test_acc"], *pair.curve.train_acc, *pair.curve.test_acc)
    assert fractions(*(v for k, v in sd.barriers(pair.curve).items() if k.endswith("_acc")))
    star = sd.train_star(paths, ds, sd.StarlightConfig(recipe=recipe), tmp_path / "star.safetensors", seed=sd.star_seed(0))
    assert fractions(star.meta["metrics"]["test_acc"], star.meta["metrics"]["train_acc"])
    star_state = sd.load_state(star.path)[0]
    bma = sd.bma_study(model, star_state, [a, b], ds, max_samples=2, n_boot=10)
    assert fractions(*bma["star_domain"]["metrics"]["accuracy"], *bma["ensemble"]["metrics"]["accuracy"])
    row = sd.fusion_row(model, [a, b], star_state, ds)
    assert fractions(row["regular_acc_mean"], row["best_regular_acc"], row["ensemble_acc"], row["star_acc"], *row["regular_accs"])
