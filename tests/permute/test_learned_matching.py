"""Learned matching (Git Re-Basin's straight-through estimator) refining an alignment: never above its start,
B's function kept, seeded, resumable; on a tiny MLP, a tiny BatchNorm CNN and a tiny Hugging Face model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from torch import nn
from torch.func import functional_call

from stardomain import models
from stardomain.barrier import evaluate_pair
from stardomain.checkpoints import store
from stardomain.errors import StardomainError
from stardomain.permute import align, trace_spec
from stardomain.permute.learned import SteConfig, ste_refine
from stardomain.training.loop import default_recipe, train_model

STEPS = 40


class TinyBNCNN(nn.Module):
    """Two 3x3 convolutions with BatchNorm, global average pooling, a linear head."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.c2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.c1(x)))
        x = torch.relu(self.bn2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


def _trained(make, digits, seed: int, epochs: int, lr: float = 0.05, batch_size: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = make()
    recipe = default_recipe("digits").replace(epochs=epochs, augment=False, batch_size=batch_size, lr=lr)
    train_model(model, digits, recipe, seed=seed, progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mlp() -> nn.Module:
    return models.create("mlp", 10, (1, 8, 8), depth=2, width=32)


@pytest.fixture(scope="module")
def mlp_pair(digits):
    return _mlp(), _trained(_mlp, digits, 0, 3), _trained(_mlp, digits, 1, 3)


@pytest.fixture(scope="module")
def cnn_pair(digits):
    return TinyBNCNN(), _trained(TinyBNCNN, digits, 0, 3, 0.1, 32), _trained(TinyBNCNN, digits, 1, 3, 0.1, 32)


def _refine(model, a, b, digits, **kw):
    kw.setdefault("refine_steps", STEPS)
    return align(a, b, model=model, method="weight", refine="ste", data=digits, seed=0, **kw)


def _max_logit_gap(model, s1, s2, x) -> float:
    model.eval()
    with torch.no_grad():
        return float((functional_call(model, s1, (x,)) - functional_call(model, s2, (x,))).abs().max())


# ------------------------------------------------------------------ (a) never above the start; (b) B's function


def test_mlp_refinement_strictly_lowers_the_midpoint_loss_and_keeps_b(mlp_pair, digits) -> None:
    model, a, b = mlp_pair
    aligned, res = _refine(model, a, b, digits)
    info = res.refine
    assert info is not None and info["method"] == "ste" and res.method == "weight+ste"
    assert info["best_loss"] <= info["start_loss"]
    assert info["best_loss"] < info["start_loss"] and info["improved"]
    assert info["config"] == SteConfig(steps=STEPS).to_dict() and info["seed"] == 0 and info["bn"] is None
    assert len(info["train_losses"]) == STEPS and info["eval_held_out"]
    assert res.check == "passed"
    assert _max_logit_gap(model, b, aligned, digits.test_x) < 1e-5  # (b)
    # the start's score is the plain weight-matched alignment's midpoint loss
    plain, _ = align(a, b, model=model, method="weight", seed=0)
    assert any(not torch.equal(plain[k], aligned[k]) for k in plain)


def test_bn_cnn_refinement_never_ends_above_its_start(cnn_pair, digits) -> None:
    model, a, b = cnn_pair
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # a large step size: the projection leaves the start several times (here never for the better)
    aligned, res = _refine(model, a, b, digits, refine_steps=20, refine_eval_samples=512, refine_lr=0.01)
    info = res.refine
    assert info["perm_changes"] > 0
    assert info["best_loss"] <= info["start_loss"]
    assert all(loss >= info["best_loss"] for _, loss in info["scores"])
    assert "BatchNorm" in info["bn"]
    assert _max_logit_gap(model, b, aligned, digits.test_x) < 1e-5  # (b), BN running statistics permuted along
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model's own buffers untouched


# ------------------------------------------------------------------ (c) seeded; (d) resumable


def test_same_seed_same_bytes_and_another_seed_may_differ(mlp_pair, digits) -> None:
    model, a, b = mlp_pair
    _, r1 = _refine(model, a, b, digits, refine_steps=15)
    _, r2 = _refine(model, a, b, digits, refine_steps=15)
    assert r1.perm.keys() == r2.perm.keys() and all(torch.equal(r1.perm[g], r2.perm[g]) for g in r1.perm)
    assert json.dumps(r1.refine) == json.dumps(r2.refine)
    assert r1.objective == r2.objective


def test_resumed_refinement_equals_uninterrupted(mlp_pair, digits, tmp_path: Path) -> None:
    model, a, b = mlp_pair
    spec = trace_spec(model, example_input=digits.train_x[:8])
    cfg = SteConfig(steps=12, save_every=3, batch_size=64, eval_samples=256)
    whole = ste_refine(a, b, spec=spec, model=model, data=digits, config=cfg, seed=3)
    state = tmp_path / "ste.train-state"

    class Stop(Exception):
        pass

    def stop_at(step: int) -> None:
        if step == 7:
            raise Stop

    with pytest.raises(Stop):
        ste_refine(a, b, spec=spec, model=model, data=digits, config=cfg, seed=3, resume_path=state, on_step=stop_at)
    assert store.is_complete(state)
    with pytest.raises(StardomainError, match="different run"):  # another seed's state is refused, not continued
        ste_refine(a, b, spec=spec, model=model, data=digits, config=cfg, seed=4, resume_path=state)
    resumed = ste_refine(a, b, spec=spec, model=model, data=digits, config=cfg, seed=3, resume_path=state)
    assert resumed.refine["resumed_at"] == 6 and whole.refine["resumed_at"] is None
    assert {k: v for k, v in resumed.refine.items() if k != "resumed_at"} == {k: v for k, v in whole.refine.items() if k != "resumed_at"}
    assert all(torch.equal(resumed.perm[g], whole.perm[g]) for g in whole.perm)
    assert not store.is_complete(state)  # removed once done


def test_settings_are_checked_before_any_work(mlp_pair, digits) -> None:
    model, a, b = mlp_pair
    with pytest.raises(StardomainError, match="unknown setting 'stpes'"):
        align(a, b, model=model, refine="ste", data=digits, refine_stpes=3)
    with pytest.raises(StardomainError, match="needs data="):
        align(a, b, model=model, refine="ste")
    with pytest.raises(StardomainError, match="unknown refinement"):
        align(a, b, model=model, refine="adam", data=digits)
    with pytest.raises(StardomainError, match="lr must be"):
        align(a, b, model=model, refine="ste", data=digits, refine_lr=0)


# ------------------------------------------------------------------ evaluate_pair and the CLI


def test_evaluate_pair_and_cli_accept_refine(digits, tmp_path: Path, capsys) -> None:
    from stardomain.training.zoo import train_zoo

    recipe = default_recipe("digits").replace(epochs=1, augment=False)
    pa, pb = train_zoo(digits, "mlp", {"depth": 1, "width": 16}, recipe, [0, 1], tmp_path / "zoo", progress=False)
    sa, meta = store.load_state(pa)
    sb, _ = store.load_state(pb)
    model = store.build_model(meta["arch"])
    pair = evaluate_pair(sa, sb, model=model, dataset=digits, align="weight", points=3, refine="ste", refine_options={"steps": 5})
    assert pair.record()["refine"]["config"]["steps"] == 5
    assert "refine" not in evaluate_pair(sa, sb, model=model, dataset=digits, align="weight", points=3).record()
    with pytest.raises(StardomainError, match="refines an alignment"):
        evaluate_pair(sa, sb, model=model, dataset=digits, align="none", refine="ste")
    out = tmp_path / "pair.json"
    r = run_cli(
        capsys, "barrier", pa, pb, "--align", "weight", "--refine", "ste", "--refine-steps", "5", "--points", "3", "--out", out, "-q"
    )
    assert r.code == 0, r.err
    rec = json.loads(out.read_text())
    assert rec["refine"] == pair.record()["refine"] and rec["barriers"] == pair.barriers  # one code path
    r = run_cli(capsys, "align", pa, pb, "--refine", "ste", "--refine-steps", "5", "--json", "--out", tmp_path / "b.safetensors")
    assert r.code == 0, r.err
    assert json.loads(r.out)["refine"]["best_loss"] <= json.loads(r.out)["refine"]["start_loss"]
    assert store.read_metadata(tmp_path / "b.safetensors")["aligned_to"]["refine"]["config"]["steps"] == 5


# ------------------------------------------------------------------ (e) a tiny Hugging Face model


@pytest.mark.parametrize("name", ["hf:gpt2", "hf:vit"])
def test_hf_refinement_keeps_b_and_never_ends_above_its_start(name: str, digits) -> None:
    pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
    tiny = {"hidden": 16, "layers": 1, "heads": 2, "mlp": 2}
    torch.manual_seed(0)
    model = models.create(name, 10, (1, 8, 8), **tiny)
    a = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    b = models.create(name, 10, (1, 8, 8), **tiny).state_dict()
    x = digits.train_x[:8]
    data = (digits.train_x[:400], digits.train_y[:400])  # an (x, y) pair works as well as a dataset
    aligned, res = align(
        a, b, model=model, x=x, refine="ste", data=data, refine_options={"steps": 4, "batch_size": 32, "eval_samples": 128}
    )
    assert res.refine["best_loss"] <= res.refine["start_loss"]
    assert len(res.refine["train_losses"]) == 4 and all(0 < v < 10 for v in res.refine["train_losses"])
    assert _max_logit_gap(model, b, aligned, digits.test_x[:64]) < 1e-5
