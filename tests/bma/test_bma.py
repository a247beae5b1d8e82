"""Star-domain BMA, deep-ensemble baseline and fusion table (paper Section 4) on tiny digits MLPs."""

from __future__ import annotations

import math

import pytest
import torch

from stardomain.bma import core as bma
from stardomain.bma import metrics
from stardomain.bma.fusion import fusion_row
from stardomain.errors import StardomainError
from stardomain.models import create
from stardomain.report.bma_plot import plot_bma

IN_SHAPE = (1, 8, 8)


def _train(digits, seed: int, **options):
    from stardomain.training.loop import default_recipe, train_model

    torch.manual_seed(seed)
    model = create("mlp", digits.num_classes, IN_SHAPE, width=32, depth=2, **options)
    train_model(model, digits, default_recipe("digits").replace(epochs=5), seed=seed, progress=False)
    return model


@pytest.fixture(scope="module")
def mlps(digits):
    """Three MLPs (64-32-32-10) trained from different seeds; returns (scratch model, [states])."""
    states = [{k: v.detach().clone() for k, v in _train(digits, s).state_dict().items()} for s in range(3)]
    return create("mlp", digits.num_classes, IN_SHAPE, width=32, depth=2), states


@pytest.fixture(scope="module")
def bn_mlp(digits):
    model = _train(digits, 7, batchnorm=True)
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _assert_metrics_close(a: dict, b: dict, tol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if math.isnan(a[name]):
            assert math.isnan(b[name]), name
        else:
            assert a[name] == pytest.approx(b[name], abs=tol), name


def _curve_at(result: dict, i: int) -> dict:
    return {name: values[i] for name, values in result["metrics"].items()}


# -- predictions ----------------------------------------------------------------------------------
def test_predict_probs_is_softmax_and_leaves_model_alone(digits, mlps):
    model, states = mlps
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probs = bma.predict_probs(model, states[0], digits.test_x, batch_size=100)
    assert probs.shape == (len(digits.test_x), digits.num_classes)
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-5)
    assert _same_state(model.state_dict(), before)

    reference = create("mlp", digits.num_classes, IN_SHAPE, width=32, depth=2)
    reference.load_state_dict(states[0])
    reference.eval()
    with torch.no_grad():
        expected = torch.softmax(reference(digits.test_x), dim=1)
    assert torch.allclose(probs, expected, atol=1e-6)
    # batching does not change the answer
    assert torch.allclose(bma.predict_probs(model, states[0], digits.test_x, batch_size=7), probs, atol=1e-6)


def test_predict_probs_rejects_a_state_of_another_architecture(digits, mlps):
    model, _ = mlps
    other = create("mlp", digits.num_classes, IN_SHAPE, width=16, depth=1).state_dict()
    with pytest.raises(StardomainError, match="does not match the model"):
        bma.predict_probs(model, other, digits.test_x)


# -- sampling -------------------------------------------------------------------------------------
def test_samples_reproducible_prefix_stable_and_seed_dependent():
    a = bma.sample_star_domain(5, 20, seed=3)
    assert a == bma.sample_star_domain(5, 20, seed=3)
    assert bma.sample_star_domain(5, 8, seed=3) == a[:8]
    assert bma.sample_star_domain(5, 20, seed=4) != a
    assert all(isinstance(n, int) and 0 <= n < 5 for n, _ in a)
    assert all(isinstance(t, float) and 0.0 <= t <= 1.0 for _, t in a)
    assert len({n for n, _ in bma.sample_star_domain(3, 60, seed=0)}) == 3  # every source gets drawn
    assert bma.sample_star_domain(2, 0, seed=0) == []
    with pytest.raises(StardomainError):
        bma.sample_star_domain(0, 5, seed=0)


# -- star-domain BMA ------------------------------------------------------------------------------
def test_bma_of_one_model_is_that_model(digits, mlps):
    """All sources = the star: every interpolation is the same model, so BMA changes nothing."""
    model, states = mlps
    s = states[0]
    result = bma.star_domain_bma(model, s, [s, s, s], digits, max_samples=5, seed=1, return_probs=True)
    assert result["k"] == [1, 2, 3, 4, 5]
    assert len(result["samples"]) == 5
    expected = bma.predict_probs(model, s, digits.test_x)
    assert torch.allclose(result["probs"], expected, atol=1e-6)
    single = bma.single_model(model, s, digits)
    for i in range(5):
        _assert_metrics_close(_curve_at(result, i), single)


def test_running_average_equals_explicit_average(digits, mlps):
    from stardomain.barrier.interpolate import lerp_state

    model, states = mlps
    star, sources = states[0], states[1:]
    k = 4
    result = bma.star_domain_bma(model, star, sources, digits, max_samples=k, seed=5, return_probs=True)
    samples = bma.sample_star_domain(len(sources), k, seed=5)
    assert result["samples"] == [[n, t] for n, t in samples]
    total = torch.zeros(len(digits.test_x), digits.num_classes, dtype=torch.float64)
    for i, (n, t) in enumerate(samples):
        total += bma.predict_probs(model, lerp_state(star, sources[n], t), digits.test_x)
        _assert_metrics_close(_curve_at(result, i), metrics.summary(total / (i + 1), digits.test_y), tol=1e-6)
    assert torch.allclose(result["probs"], (total / k).float(), atol=1e-6)
    # same seed, same curve; another seed, other samples
    again = bma.star_domain_bma(model, star, sources, digits, max_samples=k, seed=5)
    assert again["metrics"] == result["metrics"]
    assert bma.star_domain_bma(model, star, sources, digits, max_samples=k, seed=6)["samples"] != result["samples"]


def test_bma_gives_the_model_back_unchanged(digits, mlps):
    model, states = mlps
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    bma.star_domain_bma(model, states[0], states[1:], digits, max_samples=2)
    assert model.training
    assert _same_state(model.state_dict(), before)


def test_bn_statistics_are_reestimated_for_every_sample(digits, bn_mlp, monkeypatch):
    """Stored BN statistics that are garbage must not matter: each sample's are re-estimated."""
    from stardomain.barrier import bn

    model, good = bn_mlp
    assert bn.has_batchnorm(model)
    garbage = {k: v.clone() for k, v in good.items()}
    for key, value in garbage.items():
        if key.endswith("running_mean"):
            value.add_(25.0)
        elif key.endswith("running_var"):
            value.mul_(1e-4)

    real_reset = bn.reset_bn
    used: list[dict[str, torch.Tensor]] = []

    def spy(m, x, *args, **kwargs):
        out = real_reset(m, x, *args, **kwargs)
        used.append({k: v.clone() for k, v in m.state_dict().items() if "running" in k})
        return out

    monkeypatch.setattr(bn, "reset_bn", spy)
    k = 3
    from_garbage = bma.star_domain_bma(model, garbage, [garbage, garbage], digits, max_samples=k, seed=0)
    assert len(used) == k  # one re-estimation per posterior sample
    for stats in used:
        assert any(not torch.allclose(stats[name], garbage[name]) for name in stats)
    from_good = bma.star_domain_bma(model, good, [good, good], digits, max_samples=k, seed=0)
    assert len(used) == 2 * k
    for i in range(k):
        _assert_metrics_close(_curve_at(from_garbage, i), _curve_at(from_good, i), tol=1e-5)
    # without the reset the garbage statistics would have ruined the model
    broken = bma.single_model(model, garbage, digits)["accuracy"]
    assert from_garbage["metrics"]["accuracy"][0] > broken + 0.2
    assert from_garbage["metrics"]["accuracy"][0] > 0.7


def test_models_without_bn_are_not_reset(digits, mlps, monkeypatch):
    from stardomain.barrier import bn

    def fail(*args, **kwargs):
        raise AssertionError("reset_bn called for a model without BatchNorm")

    monkeypatch.setattr(bn, "reset_bn", fail)
    model, states = mlps
    bma.star_domain_bma(model, states[0], states[1:], digits, max_samples=2)


# -- baselines ------------------------------------------------------------------------------------
def test_ensemble_of_one_is_the_single_model(digits, mlps):
    model, states = mlps
    result = bma.ensemble_bma(model, states, digits, max_members=1)
    assert result["k"] == [1]
    assert result["samples"] == [[0, 1.0]]
    _assert_metrics_close(_curve_at(result, 0), bma.single_model(model, states[0], digits), tol=1e-9)


def test_ensemble_curve_is_the_average_of_the_first_k(digits, mlps):
    model, states = mlps
    result = bma.ensemble_bma(model, states, digits, return_probs=True)
    assert result["k"] == [1, 2, 3]
    probs = [bma.predict_probs(model, s, digits.test_x) for s in states]
    for k in (2, 3):
        avg = torch.stack(probs[:k]).double().mean(0)
        _assert_metrics_close(_curve_at(result, k - 1), metrics.summary(avg, digits.test_y))
    assert torch.allclose(result["probs"], torch.stack(probs).mean(0), atol=1e-6)
    with pytest.raises(StardomainError, match="only 3 source"):
        bma.ensemble_bma(model, states, digits, max_members=4)


def test_bma_study_has_all_parts(digits, mlps):
    model, states = mlps
    study = bma.bma_study(model, states[0], states[1:], digits, max_samples=4, seed=2)
    assert study["star_domain"]["k"] == [1, 2, 3, 4]
    assert study["ensemble"]["k"] == [1, 2]  # min(max_samples, number of sources)
    assert study["star"] == bma.single_model(model, states[0], digits)
    assert study["single"] == bma.single_model(model, states[1], digits)
    for part in ("star_domain", "ensemble"):
        assert set(study[part]["metrics"]) == set(study["star"])
        assert all(len(v) == len(study[part]["k"]) for v in study[part]["metrics"].values())


def test_curves_carry_deterministic_bootstrap_intervals(digits, mlps):
    model, states = mlps
    study = bma.bma_study(model, states[0], states[1:], digits, max_samples=3, seed=2, n_boot=200)
    for part in ("star_domain", "ensemble"):
        r = study[part]
        assert r["bootstrap"] == {
            "method": "percentile bootstrap over test samples",
            "level": 0.95,
            "resamples": 200,
            "n_test": len(digits.test_y),
            "seed": 2,
        }
        assert set(r["ci"]) == set(r["metrics"])
        for name, pairs in r["ci"].items():
            assert len(pairs) == len(r["k"]), name
            for (lo, hi), value in zip(pairs, r["metrics"][name]):
                if name in ("accuracy", "nll", "brier"):  # means over samples: the point lies inside
                    assert lo <= value <= hi, name
                assert math.isnan(lo) or lo <= hi, name
    again = bma.bma_study(model, states[0], states[1:], digits, max_samples=3, seed=2, n_boot=200)
    assert again["star_domain"]["ci"] == study["star_domain"]["ci"] and again["ensemble"]["ci"] == study["ensemble"]["ci"]
    plain = bma.star_domain_bma(model, states[0], states[1:], digits, max_samples=2, n_boot=0)
    assert "ci" not in plain and "bootstrap" not in plain
    with pytest.raises(StardomainError, match="n_boot"):
        bma.ensemble_bma(model, states, digits, n_boot=-1)


# -- fusion ---------------------------------------------------------------------------------------
def test_fusion_row_numbers_are_consistent(digits, mlps):
    model, states = mlps
    star = states[0]
    row = fusion_row(model, states[1:], star, digits)
    accs = [bma.single_model(model, s, digits)["accuracy"] for s in states[1:]]
    assert row["n_sources"] == 2
    assert row["regular_accs"] == pytest.approx(accs)
    assert row["best_regular_acc"] == max(accs) >= row["regular_acc_mean"]
    assert row["regular_acc_mean"] == pytest.approx(sum(accs) / 2)
    assert row["regular_acc_std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))
    assert row["star_acc"] == pytest.approx(bma.single_model(model, star, digits)["accuracy"])
    ens = bma.ensemble_bma(model, states[1:], digits)["metrics"]["accuracy"][-1]
    assert row["ensemble_acc"] == pytest.approx(ens)
    for key in ("regular_acc_mean", "best_regular_acc", "ensemble_acc", "star_acc"):
        assert 0.0 <= row[key] <= 1.0
    p = sum(t.numel() for t in model.parameters())
    assert row["cost"] == {
        "regular": {"forward_passes": 1, "parameters": p},
        "ensemble": {"forward_passes": 2, "parameters": 2 * p},
        "star": {"forward_passes": 1, "parameters": p},
    }
    one = fusion_row(model, states[:1], star, digits)
    assert one["regular_acc_std"] == 0.0 and one["ensemble_acc"] == pytest.approx(one["regular_acc_mean"])


# -- figure ---------------------------------------------------------------------------------------
def test_plot_bma_writes_a_png(tmp_path, digits, mlps):
    model, states = mlps
    studies = [bma.bma_study(model, states[0], states[1:], digits, max_samples=3, seed=s) for s in (0, 1)]
    for target, result in ((tmp_path / "one" / "bma.png", studies[0]), (tmp_path / "bma_seeds.png", studies)):
        out = plot_bma(result, target)
        assert out == target
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each PNG has its vector PDF beside it, and no temp file is left behind
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["bma.pdf", "bma.png", "bma_seeds.pdf", "bma_seeds.png"]
    assert (tmp_path / "bma_seeds.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(StardomainError):
        plot_bma({"nothing": 1}, tmp_path / "bad.png")


# -- end to end from checkpoints ------------------------------------------------------------------
def test_end_to_end_from_checkpoints(tmp_path, digits):
    from stardomain.checkpoints import store

    paths = [store.save(tmp_path / f"mlp_{s}", _train(digits, 10 + s), {"dataset": "digits", "seed": 10 + s}) for s in range(3)]
    loaded = [store.load_state(p) for p in paths]
    states = [state for state, _ in loaded]
    arch = loaded[0][1]["arch"]
    assert loaded[0][1]["dataset"] == "digits"
    model = create(arch["name"], arch["num_classes"], tuple(arch["in_shape"]), **arch["options"])

    study = bma.bma_study(model, states[0], states[1:], digits, max_samples=6, seed=0)
    assert len(study["star_domain"]["metrics"]["accuracy"]) == 6
    assert all(0.5 < a <= 1.0 for a in study["star_domain"]["metrics"]["accuracy"])
    assert study["ensemble"]["metrics"]["accuracy"][0] == pytest.approx(study["single"]["accuracy"])
    row = fusion_row(model, states[1:], states[0], digits)
    assert row["n_sources"] == 2 and row["best_regular_acc"] >= row["regular_acc_mean"] > 0.5
    assert plot_bma(study, tmp_path / "fig" / "bma.png").stat().st_size > 1000
