"""Curves along (1-t)·A + t·B, barriers (Eq. 1-2), pair reports."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stardomain import StardomainError
from stardomain.barrier import Curve, barrier_profile, barriers, curve, evaluate_pair
from stardomain.barrier.bn import reset_bn


def bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def toy_data(n_train: int = 256, n_test: int = 128) -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(4, 1, 8, 8, generator=g)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(4, (n,), generator=g)
        return protos[y] + 0.7 * torch.randn(n, 1, 8, 8, generator=g), y

    (trx, tr_y), (tex, te_y) = make(n_train), make(n_test)
    return SimpleNamespace(train_x=trx, train_y=tr_y, test_x=tex, test_y=te_y)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, lr: float = 0.05) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def own_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def pair():
    ds = toy_data()
    a = fit(bn_net(1), ds.train_x, ds.train_y, 2, 1)
    b = fit(bn_net(2), ds.train_x, ds.train_y, 2, 2)
    return ds, a, b


# --------------------------------------------------------------------------- barriers from curves


def test_barrier_formula_on_a_hand_made_curve():
    c = Curve(t=[0.0, 0.5, 1.0], train_loss=[1.0, 3.0, 2.0], train_acc=[0.9, 0.5, 0.8], test_loss=[1.0, 0.5, 1.0], test_acc=[0.7, 0.9, 0.7])
    b = barriers(c)
    assert b["train_loss"] == pytest.approx(1.5)  # 3 - (0.5 * 1 + 0.5 * 2)
    assert b["train_acc"] == pytest.approx(0.35)  # 0.85 - 0.5
    assert b["test_loss"] == 0.0 and b["test_acc"] == 0.0  # below the line: the end points win
    assert barrier_profile(c.t, c.train_loss) == pytest.approx([0.0, 1.5, 0.0])


def test_barriers_need_both_end_points():
    with pytest.raises(StardomainError, match="t=0 to t=1"):
        barriers(Curve(t=[0.0, 0.5], test_loss=[1.0, 2.0]))
    assert barriers(Curve(t=[0.0, 1.0], test_loss=[1.0, 2.0])) == {"test_loss": 0.0}


def test_barrier_of_a_diverged_curve_is_nan_or_inf():
    b = barriers(Curve(t=[0.0, 0.5, 1.0], test_loss=[1.0, float("nan"), 1.0], train_loss=[1.0, float("inf"), 1.0]))
    assert math.isnan(b["test_loss"]) and b["train_loss"] == math.inf


def test_curve_json_roundtrip():
    c = Curve(t=[0.0, 1.0], test_loss=[1.0, 2.0], test_acc=[0.5, 0.25], info={"bn_samples": 3})
    back = Curve.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c


# --------------------------------------------------------------------------- curves


def test_model_with_itself_has_flat_curve_and_zero_barrier(pair):
    ds, a, _ = pair
    s = a.state_dict()
    c = curve(s, s, model=a, dataset=ds, num_points=7, bn_batch_size=64)
    for m in ("train_loss", "train_acc", "test_loss", "test_acc"):
        values = c.metric(m)
        assert len(values) == 7 and len(set(values)) == 1, m
    assert barriers(c) == {"train_loss": 0.0, "train_acc": 0.0, "test_loss": 0.0, "test_acc": 0.0}


def test_curve_end_points_equal_each_model_after_its_own_bn_reset(pair):
    ds, a, b = pair
    sa, sb = a.state_dict(), b.state_dict()
    c = curve(sa, sb, model=a, dataset=ds, num_points=5, bn_batch_size=64)
    for model, i in ((a, 0), (b, -1)):
        m = bn_net(0)
        m.load_state_dict(model.state_dict())
        reset_bn(m, ds.train_x, batch_size=64)
        for split in ("train", "test"):
            loss, acc = own_metrics(m, getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y"))
            assert c.metric(f"{split}_loss")[i] == pytest.approx(loss, rel=1e-5, abs=1e-6)
            assert c.metric(f"{split}_acc")[i] == pytest.approx(acc)
    assert c.info["bn_samples"] == len(ds.train_x) and c.info["bn_reset"]


def test_curve_leaves_the_callers_model_alone(pair):
    ds, a, b = pair
    a.train()
    before = {k: v.clone() for k, v in a.state_dict().items()}
    curve(a.state_dict(), b.state_dict(), model=a, dataset=ds, num_points=3, bn_batch_size=64)
    assert a.training
    assert all(torch.equal(v, before[k]) for k, v in a.state_dict().items())
    a.eval()


def test_folding_does_not_change_the_curve(pair):
    ds, a, b = pair
    sa, sb = a.state_dict(), b.state_dict()
    c1 = curve(sa, sb, model=a, dataset=ds, num_points=3, bn_batch_size=64)
    c2 = curve(sa, sb, model=a, dataset=ds, num_points=3, bn_batch_size=64, fold_bn=False, batch_size=1000)
    assert c1.test_loss == pytest.approx(c2.test_loss, rel=1e-5)
    assert c1.train_acc == pytest.approx(c2.train_acc)


def test_bn_sample_count_changes_statistics_and_barrier(pair):
    ds, a, b = pair
    sa, sb = a.state_dict(), b.state_dict()
    full = curve(sa, sb, model=a, dataset=ds, num_points=5, bn_batch_size=32, splits=("test",))
    few = curve(sa, sb, model=a, dataset=ds, num_points=5, bn_samples=64, bn_batch_size=32, splits=("test",))
    assert few.info["bn_samples"] == 64 and full.info["bn_samples"] == 256
    assert not full.train_loss and full.test_loss
    assert barriers(full)["test_loss"] != barriers(few)["test_loss"]
    assert max(abs(u - v) for u, v in zip(full.test_loss, few.test_loss)) > 1e-4


def test_eval_train_subset_and_errors(pair):
    ds, a, b = pair
    c = curve(a.state_dict(), b.state_dict(), model=a, dataset=ds, num_points=2, eval_train_samples=100, bn_batch_size=64)
    assert c.info["eval_train_samples"] == 100 and c.info["bn_samples"] == 256
    with pytest.raises(StardomainError, match="split"):
        curve(a.state_dict(), b.state_dict(), model=a, dataset=ds, splits=("val",))
    with pytest.raises(StardomainError):
        curve(a.state_dict(), bn_net(0)[:3].state_dict(), model=a, dataset=ds)


def test_curve_without_batchnorm_skips_reset():
    ds = toy_data(64, 32)
    torch.manual_seed(0)
    a = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
    torch.manual_seed(1)
    b = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
    c = curve(a.state_dict(), b.state_dict(), model=a, dataset=ds, num_points=3)
    assert not c.info["bn_reset"] and c.info["bn_samples"] == 0
    assert c.test_loss[0] == pytest.approx(own_metrics(a, ds.test_x, ds.test_y)[0], rel=1e-6)


# --------------------------------------------------------------------------- real data: alignment lowers the barrier


def test_weight_matching_lowers_the_fashion_mnist_barrier(fashion_small):
    from stardomain.models import create

    ds = fashion_small
    x, y = ds.train_x[:4000], ds.train_y[:4000]
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(fit(create("mlp", 10, ds.in_shape, depth=2, width=64), x, y, epochs=2, seed=seed, lr=0.02))
    sa, sb = models[0].state_dict(), models[1].state_dict()
    test_only = SimpleNamespace(train_x=x, train_y=y, test_x=ds.test_x[:4000], test_y=ds.test_y[:4000])
    plain = evaluate_pair(sa, sb, model=models[0], dataset=test_only, align="none", points=11)
    aligned = evaluate_pair(sa, sb, model=models[0], dataset=test_only, align="weight", points=11)
    assert plain.l2_aligned == plain.l2 and plain.match_objective is None and "match_objective" not in plain.record()
    assert aligned.l2_aligned < aligned.l2 and aligned.function_check is not None
    assert aligned.barriers["test_loss"] < plain.barriers["test_loss"]
    assert plain.barriers["test_loss"] > 0.01  # there was a barrier to lower
    # the aligned B is the same function: its end point of the curve is unchanged
    assert aligned.curve.test_loss[-1] == pytest.approx(plain.curve.test_loss[-1], rel=1e-5)


def test_an_empty_split_is_an_error_not_a_zero_loss():
    from stardomain.barrier import evaluate_splits

    lin = torch.nn.Linear(3, 2)
    with pytest.raises(StardomainError, match="test split is empty"):
        evaluate_splits(
            lin,
            {"train": (torch.randn(4, 3), torch.zeros(4, dtype=torch.long)), "test": (torch.randn(0, 3), torch.zeros(0, dtype=torch.long))},
            batch_size=2,
        )


def test_curve_takes_the_states_first_and_refuses_the_old_order_in_one_line(pair):
    ds, a, b = pair
    with pytest.raises(StardomainError, match=r"curve got a .* as positional argument 1; the argument order is curve\(state_a, state_b"):
        curve(a, a.state_dict(), b.state_dict(), ds)
