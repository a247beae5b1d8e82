"""A researcher's own Hugging Face config: ``hf:pkg.module:make_config`` builds, traces, saves and reloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'stardomain[hf]')")

import own_models  # noqa: E402,F401  (the user's module, imported as --plugin would)

from stardomain import models  # noqa: E402
from stardomain.checkpoints import store  # noqa: E402
from stardomain.errors import StardomainError  # noqa: E402
from stardomain.permute import random_permutation, trace_spec  # noqa: E402
from stardomain.permute.apply import apply_permutation  # noqa: E402


@pytest.mark.parametrize("maker,shape", [("make_vit_config", (1, 8, 8)), ("make_bert_config", (64,))])
def test_a_user_config_builds_a_model_that_traces_and_keeps_its_function(maker: str, shape: tuple[int, ...], tmp_path: Path) -> None:
    name = f"hf:own_models:{maker}"
    torch.manual_seed(0)
    model = models.create(name, 10, shape).eval()
    assert model.arch["name"] == name and "factory" not in model.arch
    x = torch.randn(4, *shape)
    assert model(x).shape == (4, 10)
    spec = trace_spec(model)
    assert spec.summary()["covered_share"] > 0.5
    state = model.state_dict()
    permuted = apply_permutation(state, random_permutation(spec, 0), spec=spec)
    other = models.create(name, 10, shape).eval()
    other.load_state_dict(permuted)
    assert torch.allclose(model(x), other(x), atol=1e-5)
    path = store.save(tmp_path / "m.safetensors", model, {"seed": 0})
    assert torch.equal(store.load(path)(x), model(x))  # rebuilt from the name, the module being imported


def test_a_config_function_that_is_not_imported_or_returns_no_config_is_one_line() -> None:
    with pytest.raises(StardomainError, match="not imported; pass --plugin"):
        models.create("hf:not_imported_mod:make", 10, (1, 8, 8))
    with pytest.raises(StardomainError, match="not a transformers config"):
        models.create("hf:own_models:build_lnmlp", 10, (1, 8, 8))


def test_an_hf_checkpoint_whose_metadata_names_other_sizes_is_refused_before_building(tmp_path: Path) -> None:
    import json

    torch.manual_seed(0)
    model = models.create("hf:vit", 10, (1, 8, 8), hidden=16, layers=1, heads=2, patch=4)
    path = store.save(tmp_path / "vit.safetensors", model, {"seed": 0})
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["arch"]["options"]["hidden"] = 32  # a hand-edited or mismatched metadata file
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StardomainError, match="does not fit|shape"):
        store.load_state(path)
