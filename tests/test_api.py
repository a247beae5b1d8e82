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
