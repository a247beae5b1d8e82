"""lerp_state, BatchNorm re-estimation (bn.py) and the fast evaluation engine."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from stardomain import StardomainError
from stardomain.barrier.bn import batchnorm_layers, has_batchnorm, reset_bn, sample_order
from stardomain.barrier.interpolate import EvalEngine, interpolation_points, lerp_state


def small_bn_net(seed: int = 0, dropout: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers += [nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 4)]
    return nn.Sequential(*layers)


class OneBN(nn.Module):
    """Conv -> BN -> ReLU -> head: the BN input does not depend on any BN, so exact stats exist."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)))


def data(n: int = 300, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g) * 2 + 1


# --------------------------------------------------------------------------- lerp


def test_lerp_endpoints_are_exact_copies():
    a, b = small_bn_net(0).state_dict(), small_bn_net(1).state_dict()
    s0, s1 = lerp_state(a, b, 0.0), lerp_state(a, b, 1.0)
    for k in a:
        assert torch.equal(s0[k], a[k]) and torch.equal(s1[k], b[k])
        assert s0[k].data_ptr() != a[k].data_ptr()  # copies: mutating the result leaves A alone


def test_lerp_midpoint_and_integer_buffers():
    a, b = small_bn_net(0).state_dict(), small_bn_net(1).state_dict()
    b["1.num_batches_tracked"] = torch.tensor(7)
    mid = lerp_state(a, b, 0.25)
    assert torch.allclose(mid["0.weight"], 0.75 * a["0.weight"] + 0.25 * b["0.weight"], atol=1e-7)
    assert torch.allclose(mid["1.running_var"], 0.75 * a["1.running_var"] + 0.25 * b["1.running_var"])
    assert mid["1.num_batches_tracked"].dtype == torch.int64
    assert int(mid["1.num_batches_tracked"]) == int(a["1.num_batches_tracked"])


def test_lerp_with_itself_is_exact_at_every_t():
    a = small_bn_net(0).state_dict()
    for t in interpolation_points(11):
        s = lerp_state(a, a, t)
        assert all(torch.equal(s[k], a[k]) for k in a)


def test_lerp_rejects_other_architectures():
    a = small_bn_net(0).state_dict()
    b = dict(a)
    b.pop("0.weight")
    with pytest.raises(StardomainError, match="keys"):
        lerp_state(a, b, 0.5)
    b = dict(a)
    b["0.weight"] = torch.zeros(1)
    with pytest.raises(StardomainError, match="shape|architecture"):
        lerp_state(a, b, 0.5)


def test_interpolation_points():
    ts = interpolation_points(21)
    assert ts[0] == 0.0 and ts[-1] == 1.0 and len(ts) == 21 and ts[10] == 0.5
    with pytest.raises(StardomainError):
        interpolation_points(1)


# --------------------------------------------------------------------------- BatchNorm reset


def exact_stats(model: OneBN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        h = model.conv(x).transpose(0, 1).reshape(5, -1).double()
    return h.mean(1), h.var(1, unbiased=True)


def test_has_batchnorm():
    assert has_batchnorm(small_bn_net())
    assert not has_batchnorm(nn.Sequential(nn.Linear(2, 2)))
    assert not has_batchnorm(nn.Sequential(nn.BatchNorm1d(2, track_running_stats=False)))


def test_reset_of_exact_stats_changes_nothing():
    model, x = OneBN(), data(300)
    mean, var = exact_stats(model, x)
    model.bn.running_mean.copy_(mean.float())
    model.bn.running_var.copy_(var.float())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # 300 = 4 x 64 + 44: a short last batch must not be over-weighted
    new = reset_bn(model, x, batch_size=64)
    assert torch.allclose(new["bn.running_mean"], before["bn.running_mean"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(new["bn.running_var"], before["bn.running_var"], rtol=1e-5, atol=1e-6)
    for k, v in model.state_dict().items():
        if "num_batches" not in k:
            assert torch.allclose(v, before[k], rtol=1e-5, atol=1e-6), k


def test_cumulative_estimator_matches_pytorch_momentum_none():
    model, x = small_bn_net(0), data(256)
    ref = copy.deepcopy(model)
    order = sample_order(len(x))
    for bn in (m for _, m in batchnorm_layers(ref)):
        bn.reset_running_stats()
        bn.momentum = None
    ref.train()
    with torch.no_grad():
        for s in range(0, 256, 64):
            ref(x[order[s : s + 64]])
    new = reset_bn(model, x, batch_size=64, estimator="cumulative")
    for k, v in ref.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            assert torch.allclose(new[k], v, rtol=1e-5, atol=1e-6), k


def test_pooled_stats_do_not_depend_on_batch_size_cumulative_ones_do():
    x = data(300)
    a, b = OneBN(), OneBN()
    sa = reset_bn(a, x, batch_size=300)  # one batch: PyTorch's own full-data statistics
    sb = reset_bn(b, x, batch_size=32)
    assert torch.allclose(sa["bn.running_mean"], sb["bn.running_mean"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(sa["bn.running_var"], sb["bn.running_var"], rtol=1e-5, atol=1e-6)
    c = OneBN()
    sc = reset_bn(c, x, batch_size=32, estimator="cumulative")  # average of within-batch variances
    assert torch.allclose(sc["bn.running_mean"], sa["bn.running_mean"], rtol=1e-5, atol=1e-6)
    assert (sc["bn.running_var"] - sa["bn.running_var"]).abs().max() > 1e-4


def test_fewer_bn_samples_give_worse_statistics():
    model, x = OneBN(), data(2000)
    mean, var = exact_stats(model, x)
    errors = []
    for n in (16, 128, 2000):
        s = reset_bn(model, x, num_samples=n, batch_size=64)
        errors.append(float((s["bn.running_mean"].double() - mean).abs().max() + (s["bn.running_var"].double() / var - 1).abs().max()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4


def test_reset_restores_momentum_and_modes():
    model, x = small_bn_net(dropout=True), data(100)
    bns = [m for _, m in batchnorm_layers(model)]
    bns[0].momentum = 0.3
    bns[1].momentum = None
    model.train()
    model[8].eval()  # the dropout: a mixed-mode model must come back exactly as it was
    modes = {m: m.training for m in model.modules()}
    reset_bn(model, x, batch_size=32)
    assert bns[0].momentum == 0.3 and bns[1].momentum is None and bns[2].momentum == 0.1
    assert {m: m.training for m in model.modules()} == modes


def test_reset_is_deterministic_and_ignores_running_stats_it_started_from():
    x = data(200)
    a, b = small_bn_net(0), small_bn_net(0)
    for _, m in batchnorm_layers(b):
        m.running_mean.fill_(5.0)
        m.running_var.fill_(0.01)
    sa, sb = reset_bn(a, x, batch_size=50), reset_bn(b, x, batch_size=50)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_reset_state_argument_and_errors():
    model, x = small_bn_net(0), data(64)
    other = small_bn_net(1).state_dict()
    new = reset_bn(model, x, state=other, batch_size=32)
    assert torch.equal(model.state_dict()["0.weight"], other["0.weight"])
    assert set(new) == {k for k in other if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    with pytest.raises(StardomainError):
        reset_bn(model, x, batch_size=1)
    with pytest.raises(StardomainError):
        reset_bn(model, x, estimator="median")  # type: ignore[arg-type]
    assert reset_bn(nn.Linear(3, 2), torch.randn(4, 3)) == {}


def test_reset_merges_a_trailing_single_sample_batch():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    reset_bn(model, torch.randn(65, 4), batch_size=32)  # 32 + 32 + 1 -> 32 + 33


# --------------------------------------------------------------------------- evaluation engine


def test_engine_folded_forward_matches_model():
    from stardomain.models import create

    torch.manual_seed(0)
    model = create("resnet20", 10, (3, 8, 8))
    x = data(64)
    reset_bn(model, x, batch_size=32)
    model.eval()
    engine = EvalEngine(model)
    assert engine.folded is not None and len(engine.pairs) == 21  # 19 conv-BN + 2 shortcut conv-BN
    engine.load(model.state_dict())
    with torch.no_grad():
        ref, got = model(x), engine.forward(x)
    assert torch.allclose(ref, got, rtol=1e-4, atol=1e-5)
    # the BN pass through the engine (traced, in-place relus) gives the model's own statistics
    engine.reset_bn(x, sample_order(len(x)), batch_size=32)
    ref_stats = reset_bn(model, x, batch_size=32)
    got_stats = dict(engine.model.state_dict())
    assert all(torch.allclose(ref_stats[k], got_stats[k], rtol=1e-5, atol=1e-6) for k in ref_stats)
    assert not any(p.requires_grad is False for p in model.parameters())  # caller's model untouched
