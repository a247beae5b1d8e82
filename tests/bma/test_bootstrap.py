"""Bootstrap intervals over test samples of the BMA metrics (Figure 5's bands): exact at unit weights, a
reference AUROC under resampling weights, deterministic, containing the point, narrowing with n."""

from __future__ import annotations

import math

import pytest
import torch

from stardomain.bma import bootstrap, metrics
from stardomain.errors import StardomainError

sk_metrics = pytest.importorskip("sklearn.metrics")


def _synthetic(n: int, seed: int = 0, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of a useful but imperfect classifier (about 70% correct): every metric is defined and
    confidence carries information about correctness, as in a real BMA."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g)
    logits[torch.arange(n), y] += 1.8 * torch.rand(n, generator=g) + 0.5
    return torch.softmax(logits.double(), dim=1), y


def _with_ties(probs: torch.Tensor) -> torch.Tensor:
    """Some rows repeated exactly, so scores tie across correct and wrong samples."""
    out = probs.clone()
    out[1:40:3] = out[0]
    return out


def test_unit_weights_give_exactly_the_summary_numbers() -> None:
    probs, y = _synthetic(500)
    probs = _with_ties(probs)
    weighted = bootstrap.weighted_summary(probs, y, torch.ones(1, len(y), dtype=torch.float64))
    point = metrics.summary(probs, y)
    assert set(weighted) == set(point)
    for name, value in point.items():
        assert float(weighted[name][0]) == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("confidence", ["max_prob", "neg_entropy"])
def test_weighted_auroc_matches_sklearn_with_sample_weights(confidence: str) -> None:
    probs, y = _synthetic(400, seed=1)
    probs = _with_ties(probs)
    counts = bootstrap.resample_counts(len(y), 5, seed=3)
    got = bootstrap.weighted_summary(probs, y, counts.double())[f"auroc_{confidence}"]
    conf, pred = probs.max(dim=1)
    score = conf if confidence == "max_prob" else -metrics.entropy(probs)
    correct = (pred == y).numpy()
    for row in range(len(counts)):
        ref = sk_metrics.roc_auc_score(correct, score.numpy(), sample_weight=counts[row].numpy())
        assert float(got[row]) == pytest.approx(ref, abs=1e-12)


def test_resample_counts_are_resamples_and_depend_only_on_the_seed() -> None:
    counts = bootstrap.resample_counts(50, 20, seed=7)
    assert counts.shape == (20, 50) and torch.all(counts.sum(1) == 50) and torch.all(counts >= 0)
    assert torch.equal(counts, bootstrap.resample_counts(50, 20, seed=7))
    assert not torch.equal(counts, bootstrap.resample_counts(50, 20, seed=8))
    torch.manual_seed(123)  # the global generator plays no part
    assert torch.equal(counts, bootstrap.resample_counts(50, 20, seed=7))
    with pytest.raises(StardomainError, match="resamples"):
        bootstrap.resample_counts(50, 0, seed=0)


def test_interval_contains_the_point_estimate() -> None:
    probs, y = _synthetic(1000, seed=2)
    ci = bootstrap.intervals(probs, y, bootstrap.resample_counts(len(y), 500, seed=0))
    point = metrics.summary(probs, y)
    for name, (lo, hi) in ci.items():
        assert lo < point[name] < hi, name


def test_interval_is_deterministic_for_a_seed() -> None:
    probs, y = _synthetic(300, seed=4)
    a = bootstrap.intervals(probs, y, bootstrap.resample_counts(len(y), 200, seed=5))
    assert a == bootstrap.intervals(probs, y, bootstrap.resample_counts(len(y), 200, seed=5))
    assert a != bootstrap.intervals(probs, y, bootstrap.resample_counts(len(y), 200, seed=6))


def test_chunking_does_not_change_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    probs, y = _synthetic(300, seed=4)
    counts = bootstrap.resample_counts(len(y), 200, seed=5)
    whole = bootstrap.intervals(probs, y, counts)
    monkeypatch.setattr(bootstrap, "_CELLS_PER_CHUNK", 300 * 7)  # 7 resamples per chunk
    chunked = bootstrap.intervals(probs, y, counts)
    assert chunked.keys() == whole.keys()
    for name in whole:
        assert chunked[name] == pytest.approx(whole[name], abs=1e-12), name


def test_interval_narrows_as_the_test_set_grows() -> None:
    widths = {}
    for n in (100, 2000):
        probs, y = _synthetic(n, seed=9)
        ci = bootstrap.intervals(probs, y, bootstrap.resample_counts(n, 500, seed=0))
        widths[n] = {name: hi - lo for name, (lo, hi) in ci.items()}
    for name in widths[100]:
        assert widths[2000][name] < 0.6 * widths[100][name], name  # ~ 1/sqrt(20) ≈ 0.22 expected


def test_an_auroc_undefined_in_every_resample_is_nan() -> None:
    y = torch.arange(4).repeat(5)
    probs = torch.nn.functional.one_hot(y, 4).double() * 0.9 + 0.025  # every prediction correct
    ci = bootstrap.intervals(probs, y, bootstrap.resample_counts(len(y), 50, seed=0))
    assert all(math.isnan(v) for v in ci["auroc_max_prob"])
    assert ci["accuracy"] == [1.0, 1.0]


def test_weights_must_match_the_test_set() -> None:
    probs, y = _synthetic(30)
    with pytest.raises(StardomainError, match="test samples"):
        bootstrap.intervals(probs, y, bootstrap.resample_counts(31, 10, seed=0))
