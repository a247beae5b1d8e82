"""Barrier curves evaluated over the whole t-grid at once give the numbers of one t at a time."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from own_models import DataDependent
from torch import nn

from stardomain import models
from stardomain.barrier import batched as curve_batched
from stardomain.barrier import curve

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def _pair(name, shape, **options):
    torch.manual_seed(0)
    a = models.create(name, 10, shape, **options)
    torch.manual_seed(1)
    b = models.create(name, 10, shape, **options)
    return a, a.state_dict(), b.state_dict()


def _assert_same(c1, c2, tol=1e-5):
    assert c1.t == c2.t and c1.info == c2.info
    for m in METRICS:
        assert len(c1.metric(m)) == len(c2.metric(m)) == len(c1.t)
        assert max(abs(x - y) for x, y in zip(c1.metric(m), c2.metric(m))) <= tol, m


def test_mlp_curve_batched_equals_one_t_at_a_time(digits, monkeypatch):
    model, sa, sb = _pair("mlp", (1, 8, 8), depth=2, width=24)
    one = curve(sa, sb, model=model, dataset=digits, num_points=7, batched=False)
    calls = []
    real = curve_batched.evaluate_states
    monkeypatch.setattr("stardomain.barrier.path.evaluate_states", lambda *a, **k: calls.append(1) or real(*a, **k))
    both = curve(sa, sb, model=model, dataset=digits, num_points=7, batch_size=50, eval_train_samples=300)
    assert calls, "a BatchNorm-free MLP must take the batched path"
    ref = curve(sa, sb, model=model, dataset=digits, num_points=7, batch_size=50, eval_train_samples=300, batched=False)
    _assert_same(both, ref)
    _assert_same(curve(sa, sb, model=model, dataset=digits, num_points=7), one)
    # a small t-chunk (several vmapped passes) changes nothing
    monkeypatch.setattr(curve_batched, "_ROWS_CPU", 64)
    _assert_same(curve(sa, sb, model=model, dataset=digits, num_points=7), one)


def test_convnet_without_batchnorm_is_batched_too():
    g = torch.Generator().manual_seed(0)
    ds = SimpleNamespace(
        train_x=torch.randn(96, 3, 8, 8, generator=g),
        train_y=torch.randint(0, 10, (96,), generator=g),
        test_x=torch.randn(40, 3, 8, 8, generator=g),
        test_y=torch.randint(0, 10, (40,), generator=g),
    )
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10)))
    assert curve_batched.batchable(nets[0], ds.train_x[:2])
    sa, sb = nets[0].state_dict(), nets[1].state_dict()
    _assert_same(
        curve(sa, sb, model=nets[0], dataset=ds, num_points=5), curve(sa, sb, model=nets[0], dataset=ds, num_points=5, batched=False)
    )


def test_batchnorm_and_unvmappable_models_keep_the_per_t_path(digits):
    bn_model, sa, sb = _pair("mlp", (1, 8, 8), depth=1, width=8, batchnorm=True)
    assert not curve_batched.batchable(bn_model, digits.train_x[:2])
    c = curve(sa, sb, model=bn_model, dataset=digits, num_points=3, batched=True)
    assert c.info["bn_reset"] and len(c.test_loss) == 3

    net = DataDependent()
    assert not curve_batched.batchable(net, digits.train_x[:2])
    state = net.state_dict()
    c = curve(state, {k: v + 0.1 for k, v in state.items()}, model=net, dataset=digits, num_points=3)
    assert len(c.train_acc) == 3


def test_interpolating_a_model_with_itself_is_flat(digits):
    model, sa, _ = _pair("mlp", (1, 8, 8), depth=1, width=16)
    c = curve(sa, sa, model=model, dataset=digits, num_points=5)
    for m in METRICS:
        assert len(set(c.metric(m))) == 1, m


def test_interpolated_batchnorm_statistics_are_batched_too(digits):
    """With bn="interpolate" nothing is re-estimated, so a BN model's t-grid is batched as well."""
    model, sa, sb = _pair("mlp", (1, 8, 8), depth=2, width=16, batchnorm=True)
    sb = {k: v * 1.5 if k.endswith("running_var") else v for k, v in sb.items()}  # distinct statistics
    assert curve_batched.batchable(model, digits.train_x[:2], frozen_batchnorm=True)
    batched = curve(sa, sb, model=model, dataset=digits, num_points=5, bn="interpolate")
    _assert_same(batched, curve(sa, sb, model=model, dataset=digits, num_points=5, bn="interpolate", batched=False))
    assert batched.test_loss != curve(sa, sb, model=model, dataset=digits, num_points=5).test_loss  # reset differs
