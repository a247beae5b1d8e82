"""Starlight re-aligns its sources with the symmetry classes beyond permutations (issue 31): every aligned source
keeps its function, comes closer to the star than by permutations alone, and a model that cannot take the maps is
refused before the star trains."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

import torch  # noqa: E402
from torch.func import functional_call  # noqa: E402

from stardomain import models  # noqa: E402
from stardomain.errors import StardomainError  # noqa: E402
from stardomain.starlight import Starlight, StarlightConfig  # noqa: E402
from stardomain.training.loop import Recipe  # noqa: E402

TINY = {"hidden": 16, "layers": 1, "heads": 2, "mlp": 2}
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def small_digits():
    from stardomain.data import load_dataset

    return load_dataset("digits", subset=128)


def _zoo(name: str) -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    star = models.create(name, 10, SHAPE, **TINY)
    sources = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        sources.append({k: v.detach().clone() for k, v in models.create(name, 10, SHAPE, **TINY).state_dict().items()})
    return star, sources


def _distance(a, b) -> float:
    return float(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a if a[k].is_floating_point()))


@pytest.mark.parametrize("symmetry", ["orthogonal", "invertible"])
def test_realignment_with_maps_keeps_each_source_and_comes_closer(small_digits, symmetry):
    x = small_digits.train_x[:16]
    star, sources = _zoo("hf:gpt2")
    recipe = Recipe(lr=0.01, epochs=1, batch_size=64, optimizer="adam", nesterov=False)
    by_perm = Starlight(star, sources, small_digits, StarlightConfig(recipe=recipe))
    by_maps = Starlight(star, sources, small_digits, StarlightConfig(recipe=recipe, symmetry=symmetry))
    by_perm.realign()
    by_maps.realign()
    theta = {k: v.detach() for k, v in star.state_dict().items()}
    model = by_maps.model.eval()
    for n, src in enumerate(sources):
        full = {**src, **by_maps.aligned[n]}
        with torch.no_grad():
            gap = (functional_call(model, full, (x,)) - functional_call(model, src, (x,))).abs().max()
        assert gap < 1e-4, f"source {n}: the maps changed its function by {gap}"
        keys = list(by_maps.aligned[n])
        near = _distance({k: theta[k] for k in keys}, by_maps.aligned[n])
        perm = _distance({k: theta[k] for k in keys}, by_perm.aligned[n])
        assert near < perm, f"source {n}: {symmetry} maps leave it no closer ({near:.4f} vs {perm:.4f})"
    result = by_maps.fit(progress=False)  # one epoch trains through the mapped sources
    assert result.history[0]["interp_train_loss"] > 0


def test_a_model_without_a_residual_stream_is_refused_before_training(small_digits):
    star = models.create("mlp", 10, SHAPE, width=8, depth=1)
    sources = [models.create("mlp", 10, SHAPE, width=8, depth=1).state_dict()]
    with pytest.raises(StardomainError) as e:
        Starlight(star, sources, small_digits, StarlightConfig(recipe=Recipe(epochs=1), symmetry="orthogonal"))
    assert "\n" not in str(e.value)


def test_symmetry_without_matching_is_refused_and_the_default_keeps_old_identities():
    with pytest.raises(StardomainError, match="symmetry"):
        StarlightConfig(matching="none", symmetry="orthogonal")
    assert "symmetry" not in StarlightConfig().to_dict()  # stars written before the setting are reused
    assert StarlightConfig(symmetry="orthogonal").to_dict()["symmetry"] == "orthogonal"
