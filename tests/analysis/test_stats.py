"""Statistics behind the report's verdicts: a clear difference gets its verdict, overlap does not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from stardomain.analysis import stats
from stardomain.experiment.pairs import endpoints, regular_pairs

RNG = np.random.default_rng(1)
LOW = list(0.10 + 0.01 * RNG.standard_normal(8))
HIGH = list(0.30 + 0.01 * RNG.standard_normal(8))
WIDE_A = [0.10, 0.30, 0.20, 0.25, 0.15]
WIDE_B = [0.12, 0.28, 0.22, 0.18, 0.26]


def test_mean_std_is_sample_std_with_n():
    ms = stats.mean_std([1.0, 2.0, 3.0, float("nan"), None])
    assert ms == {"mean": 2.0, "std": 1.0, "n": 3}  # ddof=1: population std would be 0.816
    assert stats.mean_std([4.0]) == {"mean": 4.0, "std": 0.0, "n": 1}
    assert stats.mean_std([])["n"] == 0


def test_clear_difference_gets_the_verdict_both_ways():
    r = stats.compare(LOW, HIGH, seed=0)
    assert r["direction"] == -1 and r["ci95"][1] < 0 and r["welch"]["p"] < 1e-6
    assert stats.verdict(r, "below", "above") == "below"
    assert stats.verdict(stats.compare(HIGH, LOW, seed=0), "below", "above") == "above"


def test_overlapping_samples_are_not_significant():
    r = stats.compare(WIDE_A, WIDE_B, seed=0)
    assert r["direction"] == 0 and r["ci95"][0] < 0 < r["ci95"][1]
    assert stats.verdict(r, "below", "above") == stats.NOT_SIGNIFICANT


def test_single_value_groups_are_never_significant():
    # one pair each: no spread is known, so even a large gap is not a verdict
    r = stats.compare([0.0], [1.0], seed=0)
    assert math.isnan(r["welch"]["p"]) and r["direction"] == 0


def test_welch_matches_scipy_and_bootstrap_is_seeded():
    w = stats.welch(WIDE_A, HIGH)
    ref = sps.ttest_ind(WIDE_A, HIGH, equal_var=False)
    assert w["t"] == pytest.approx(ref.statistic) and w["p"] == pytest.approx(ref.pvalue)
    assert stats.bootstrap_diff_ci(WIDE_A, WIDE_B, seed=3) == stats.bootstrap_diff_ci(WIDE_A, WIDE_B, seed=3)
    assert stats.bootstrap_diff_ci(WIDE_A, WIDE_B, seed=3) != stats.bootstrap_diff_ci(WIDE_A, WIDE_B, seed=4)


def test_near_zero_is_a_test_against_the_tolerance():
    tight = [0.001, 0.004, 0.002, 0.003]
    assert stats.verdict(stats.near_zero(tight, 0.05), "near 0", "above") == "near 0"
    assert stats.near_zero(HIGH, 0.05)["direction"] == 1
    # small mean but too few / too spread values: the upper bound is not below the tolerance
    assert stats.near_zero([0.0, 0.09], 0.05)["direction"] == 0
    assert stats.near_zero([0.001], 0.05)["direction"] == 0


def test_one_model_against_a_population_uses_the_prediction_interval():
    accs = [0.80, 0.81, 0.79, 0.80, 0.82]
    assert stats.against_population(accs, 0.90)["direction"] == 1
    assert stats.against_population(accs, 0.70)["direction"] == -1
    # above the mean (and the mean's CI) but within where one more regular model could land
    r = stats.against_population(accs, 0.825)
    assert r["direction"] == 0 and r["interval"][0] < 0.825 < r["interval"][1]
    # two regular models with the same accuracy (347/360 each, as in the demo's |Z| = 2 row) give no spread to
    # test against: a zero-width interval must not call a fused star at 350/360 "better"
    tie = stats.against_population([347 / 360, 347 / 360], 350 / 360)
    assert tie["direction"] == 0 and all(math.isnan(v) for v in tie["interval"]) and "spread is unknown" in tie["no_verdict"]
    assert "no_verdict" not in stats.against_population(accs, 0.90)


def test_paired_bootstrap_detects_a_clear_paired_difference():
    x = np.random.default_rng(0).standard_normal(200)
    mean = lambda w: (w @ x) / w.sum(axis=1)  # noqa: E731  (weighted mean under each resample)
    r = stats.paired_bootstrap(lambda w: mean(w) + 0.5 - mean(w), 200, seed=0, n_boot=300)  # a constant paired gap
    assert r["direction"] == 1 and r["ci95"][0] == pytest.approx(0.5)
    r = stats.paired_bootstrap(mean, 200, seed=0, n_boot=300)
    assert r["direction"] == 0 and r["ci95"][0] < 0 < r["ci95"][1]
    assert r == stats.paired_bootstrap(mean, 200, seed=0, n_boot=300)
    assert stats.bootstrap_counts(50, 7, seed=1).sum(axis=1).tolist() == [50.0] * 7


def test_weighted_metrics_equal_the_metrics_on_the_resampled_items():
    import torch

    from stardomain.bma import metrics

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(120, 5, generator=g), 1)
    probs = torch.round(probs * 20) / 20 + 1e-3  # ties in the confidence score
    probs = (probs / probs.sum(1, keepdim=True)).double()
    y = torch.randint(0, 5, (120,), generator=g)
    conf, pred = probs.max(1)
    bins = (torch.bucketize(conf.float(), torch.linspace(0, 1, 16), right=True) - 1).clamp(0, 15).numpy()
    idx = np.random.default_rng(3).integers(0, 120, 120)
    w = np.bincount(idx, minlength=120)[None].astype(float)
    auc = stats.weighted_auroc(conf.numpy(), (pred == y).numpy(), w)[0]
    assert auc == pytest.approx(metrics.auroc_correctness(probs[idx], y[idx]), abs=1e-12)
    ece = stats.weighted_ece(bins, conf.numpy(), (pred == y).numpy(), w, 16)[0]
    assert ece == pytest.approx(metrics.ece(probs[idx], y[idx]), abs=1e-12)


def test_regular_pairs_are_disjoint_first_then_a_seeded_sample():
    models = [f"seed-{i}" for i in range(6)]
    pairs = regular_pairs(models, 5, seed=0)
    assert pairs[:3] == [("seed-0", "seed-1"), ("seed-2", "seed-3"), ("seed-4", "seed-5")]
    assert len(set(pairs)) == 5 and all(a != b for a, b in pairs)
    assert regular_pairs(models, 5, seed=0) == pairs
    assert {p for s in range(5) for p in regular_pairs(models, 5, seed=s)[3:]} != set(pairs[3:])  # a sample, not a prefix
    assert regular_pairs(models, 2, seed=0) == [("seed-0", "seed-1"), ("seed-2", "seed-3")]
    assert len(regular_pairs(models, 100, seed=0)) == 15  # every pair once, never more


def test_a_star_below_its_sources_is_flagged():
    src = [{"test_acc": 0.88, "test_loss": 0.4}, {"test_acc": 0.90, "test_loss": 0.35}]
    poor = endpoints({"test_acc": 0.736, "test_loss": 0.9}, src, [], margin=0.01)
    assert poor["star_below_sources"] and poor["star_acc_gap"] == pytest.approx(0.154)
    good = endpoints({"test_acc": 0.885, "test_loss": 0.4}, src, src, margin=0.01)
    assert not good["star_below_sources"] and good["held_out"]["test_acc"]["n"] == 2
