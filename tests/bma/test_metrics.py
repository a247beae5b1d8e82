"""Tests for stardomain.bma.metrics: hand-computed answers plus agreement with torchmetrics / sklearn."""

from __future__ import annotations

import math

import pytest
import torch

from stardomain.bma.metrics import (
    accuracy,
    auroc_correctness,
    brier,
    ece,
    entropy,
    nll,
    summary,
)
from stardomain.errors import StardomainError

tm_cls = pytest.importorskip("torchmetrics.functional.classification")
sk_metrics = pytest.importorskip("sklearn.metrics")


def _onehot(targets: torch.Tensor, c: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(targets, c).double()


def _random_probs(n: int, c: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    logits = torch.randn(n, c, generator=gen, dtype=torch.float64) * 2.0
    return logits.softmax(dim=1).to(dtype)


# --------------------------------------------------------------------------- hand-made cases


def test_perfect_confident_classifier() -> None:
    targets = torch.tensor([0, 2, 1, 2, 0])
    probs = _onehot(targets, 3)  # contains exact zeros: must not produce nan/inf
    assert accuracy(probs, targets) == 1.0
    assert nll(probs, targets) == pytest.approx(0.0, abs=1e-12)
    assert ece(probs, targets) == 0.0
    assert brier(probs, targets) == 0.0
    assert torch.equal(entropy(probs), torch.zeros(5, dtype=torch.float64))
    # All correct: AUROC undefined.
    assert math.isnan(auroc_correctness(probs, targets))
    assert math.isnan(auroc_correctness(probs, targets, "neg_entropy"))


def test_confidently_wrong_nll_is_finite() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([1, 1])
    assert accuracy(probs, targets) == 0.5
    assert nll(probs, targets) == pytest.approx(-math.log(1e-12) / 2)
    assert nll(probs, targets, eps=1e-6) == pytest.approx(-math.log(1e-6) / 2)
    assert math.isfinite(nll(probs, targets))


def test_nll_hand_computed() -> None:
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    targets = torch.tensor([1, 1])
    assert nll(probs, targets) == pytest.approx((-math.log(0.25) - math.log(0.8)) / 2)


def test_brier_hand_computed() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], dtype=torch.float64)
    targets = torch.tensor([0, 2])
    # row 0: 0.09 + 0.04 + 0.01 = 0.14 ; row 1: 0.01 + 0.64 + 0.81 = 1.46
    assert brier(probs, targets) == pytest.approx((0.14 + 1.46) / 2, abs=1e-12)


def test_ece_hand_computed_two_bins() -> None:
    probs = torch.tensor(
        [
            [0.4, 0.3, 0.3],  # conf 0.4 -> bin [0, .5), correct
            [0.4, 0.3, 0.3],  # conf 0.4 -> bin [0, .5), wrong
            [0.8, 0.1, 0.1],  # conf 0.8 -> bin [.5, 1), correct
            [0.05, 0.9, 0.05],  # conf 0.9 -> bin [.5, 1), correct
            [0.7, 0.2, 0.1],  # conf 0.7 -> bin [.5, 1), wrong
        ],
        dtype=torch.float64,
    )
    targets = torch.tensor([0, 1, 0, 1, 2])
    # bin 0: 2/5 * |0.5 - 0.4| = 0.04 ; bin 1: 3/5 * |2/3 - 0.8| = 0.08
    assert ece(probs, targets, n_bins=2) == pytest.approx(0.12, abs=1e-12)
    ref = tm_cls.multiclass_calibration_error(probs, targets, num_classes=3, n_bins=2, norm="l1")
    assert ece(probs, targets, n_bins=2) == pytest.approx(float(ref), abs=1e-6)


def test_ece_bin_edges_follow_torchmetrics() -> None:
    # Bins are [0, .5), [.5, 1) plus a separate bin for conf == 1.0 (torchmetrics convention).
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05], [1.0, 0.0, 0.0]])
    targets = torch.tensor([0, 1, 0])
    # [.5, 1): {0.5 right, 0.9 wrong} -> 2/3 * |0.5 - 0.7| ; {1.0 right} -> 0.
    # (A (0, 1] convention would give 1/3 * 0.5 + 2/3 * 0.45 = 0.4667 instead.)
    assert ece(probs, targets, n_bins=2) == pytest.approx(2 / 3 * 0.2, abs=1e-7)
    ref = tm_cls.multiclass_calibration_error(probs, targets, num_classes=3, n_bins=2, norm="l1")
    assert ece(probs, targets, n_bins=2) == pytest.approx(float(ref), abs=1e-6)


def test_ece_float64_on_float32_edge_matches_torchmetrics() -> None:
    # torchmetrics bins in float32; a float64 confidence equal to the float32 edge 8/15 must
    # land in the upper bin, not share a bin with the 0.5 sample below it.
    edge = torch.linspace(0, 1, 16)[8].item()
    probs = torch.tensor([[edge, (1 - edge) / 2, (1 - edge) / 2], [0.5, 0.25, 0.25]], dtype=torch.float64)
    targets = torch.tensor([0, 1])
    expected = ((1 - edge) + 0.5) / 2
    assert ece(probs, targets) == pytest.approx(expected, abs=1e-12)
    ref = tm_cls.multiclass_calibration_error(probs, targets, num_classes=3, n_bins=15, norm="l1")
    assert ece(probs, targets) == pytest.approx(float(ref), abs=1e-6)


def _ranked_case() -> tuple[torch.Tensor, torch.Tensor]:
    # Confidence strictly increasing; the last three are correct, the first three wrong.
    conf = torch.tensor([0.40, 0.50, 0.60, 0.70, 0.80, 0.90], dtype=torch.float64)
    rest = (1 - conf) / 2
    probs = torch.stack([conf, rest, rest], dim=1)  # class 0 is always the top-1 prediction
    return probs, torch.tensor([1, 1, 1, 0, 0, 0])


def test_auroc_perfect_and_reversed_ranking() -> None:
    probs, targets = _ranked_case()
    assert auroc_correctness(probs, targets, "max_prob") == 1.0
    assert auroc_correctness(probs, targets, "neg_entropy") == 1.0
    assert auroc_correctness(probs, 1 - targets, "max_prob") == 0.0
    assert auroc_correctness(probs, 1 - targets, "neg_entropy") == 0.0


def test_auroc_constant_predictor_is_half() -> None:
    probs = torch.tensor([[0.6, 0.3, 0.1]]).repeat(7, 1)
    targets = torch.tensor([0, 0, 1, 2, 0, 1, 0])
    assert auroc_correctness(probs, targets, "max_prob") == 0.5
    assert auroc_correctness(probs, targets, "neg_entropy") == 0.5


def test_auroc_undefined_when_all_wrong() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    assert math.isnan(auroc_correctness(probs, torch.tensor([1, 1])))


def test_entropy_values() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    assert torch.allclose(entropy(probs), torch.tensor([math.log(2), math.log(3)], dtype=torch.float64))


def test_summary_keys_and_values() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = _random_probs(50, 4, gen, torch.float32)
    targets = torch.randint(0, 4, (50,), generator=gen)
    out = summary(probs, targets)
    assert set(out) == {"accuracy", "nll", "ece", "brier", "auroc_max_prob", "auroc_neg_entropy"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["nll"] == nll(probs, targets)
    assert out["auroc_neg_entropy"] == auroc_correctness(probs, targets, "neg_entropy")


# --------------------------------------------------------------------------- reference agreement


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_bins", [1, 2, 10, 15])
def test_ece_matches_torchmetrics_random(dtype: torch.dtype, n_bins: int) -> None:
    gen = torch.Generator().manual_seed(n_bins)
    n, c = 2000, 10
    probs = _random_probs(n, c, gen, dtype)
    # Add exact ties, exact bin edges and exact one-hot rows.
    probs[:100] = probs[100:200]
    probs[200:220] = torch.nn.functional.one_hot(torch.randint(0, c, (20,), generator=gen), c).to(dtype)
    probs[220:240] = torch.full((c,), 1.0 / c, dtype=dtype)
    edges = torch.linspace(0, 1, n_bins + 1)
    for i, e in enumerate(edges[1:-1].tolist()):
        if e >= 1.0 / c:  # make a row whose max is exactly an edge value (float32)
            row = torch.full((c,), (1.0 - e) / (c - 1))
            row[0] = e
            probs[240 + i] = row.to(dtype)
    targets = torch.randint(0, c, (n,), generator=gen)
    targets[:500] = probs[:500].argmax(dim=1)  # mix of right and wrong
    ref = tm_cls.multiclass_calibration_error(probs, targets, num_classes=c, n_bins=n_bins, norm="l1")
    assert ece(probs, targets, n_bins=n_bins) == pytest.approx(float(ref), abs=1e-6)


@pytest.mark.parametrize("confidence", ["max_prob", "neg_entropy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_torchmetrics_and_sklearn_with_ties(confidence: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n, c = 1500, 5
    probs = _random_probs(n, c, gen, torch.float64)
    # Heavy ties: quantise to a coarse grid, and duplicate whole rows.
    probs = (probs * 8).round()
    probs[:, 0] += 1.0  # keep every row non-zero
    probs = probs / probs.sum(dim=1, keepdim=True)
    probs[: n // 3] = probs[n // 3 : 2 * (n // 3)]
    targets = torch.randint(0, c, (n,), generator=gen)
    targets[: n // 2] = probs[: n // 2].argmax(dim=1)

    correct = probs.argmax(dim=1).eq(targets)
    score = probs.max(dim=1).values if confidence == "max_prob" else -entropy(probs)
    assert score.unique().numel() < n // 4  # the test really has ties
    # torchmetrics sigmoid-squashes scores outside [0, 1]; map monotonically into [0, 1] first.
    score01 = (score - score.min()) / (score.max() - score.min())
    ref_tm = float(tm_cls.binary_auroc(score01, correct.long(), thresholds=None))
    ref_sk = float(sk_metrics.roc_auc_score(correct.numpy(), score.numpy()))
    got = auroc_correctness(probs, targets, confidence)  # type: ignore[arg-type]
    assert got == pytest.approx(ref_sk, abs=1e-6)
    assert got == pytest.approx(ref_tm, abs=1e-6)


def test_auroc_matches_sklearn_continuous_float32() -> None:
    gen = torch.Generator().manual_seed(7)
    probs = _random_probs(3000, 10, gen, torch.float32)
    targets = torch.randint(0, 10, (3000,), generator=gen)
    targets[:1000] = probs[:1000].argmax(dim=1)
    correct = probs.argmax(dim=1).eq(targets).numpy()
    for confidence in ("max_prob", "neg_entropy"):
        score = probs.max(dim=1).values if confidence == "max_prob" else -entropy(probs)
        ref = sk_metrics.roc_auc_score(correct, score.numpy())
        assert auroc_correctness(probs, targets, confidence) == pytest.approx(ref, abs=1e-6)


def test_simple_metrics_match_references() -> None:
    gen = torch.Generator().manual_seed(3)
    probs = _random_probs(1000, 6, gen, torch.float64)
    targets = torch.randint(0, 6, (1000,), generator=gen)
    ref_acc = float(tm_cls.multiclass_accuracy(probs, targets, num_classes=6, average="micro"))
    assert accuracy(probs, targets) == pytest.approx(ref_acc, abs=1e-6)
    ref_nll = sk_metrics.log_loss(targets.numpy(), probs.numpy(), labels=list(range(6)))
    assert nll(probs, targets) == pytest.approx(ref_nll, abs=1e-6)
    expected_brier = ((probs - _onehot(targets, 6)) ** 2).sum(dim=1).mean().item()
    assert brier(probs, targets) == pytest.approx(expected_brier, abs=1e-12)


# --------------------------------------------------------------------------- robustness


def test_inputs_are_validated() -> None:
    probs = torch.full((3, 2), 0.5)
    with pytest.raises(StardomainError):
        accuracy(probs, torch.tensor([0, 1]))
    with pytest.raises(StardomainError):
        nll(probs, torch.tensor([0, 1, 2]))
    with pytest.raises(StardomainError):
        brier(probs[0], torch.tensor([0]))
    with pytest.raises(StardomainError):
        ece(probs, torch.tensor([0, 1, 1]), n_bins=0)
    with pytest.raises(StardomainError):
        auroc_correctness(probs, torch.tensor([0, 1, 1]), "entropy")  # type: ignore[arg-type]
    with pytest.raises(StardomainError):
        accuracy(torch.empty(0, 2), torch.empty(0, dtype=torch.long))
    with pytest.raises(StardomainError):
        accuracy(probs, torch.tensor([0.0, 1.0, 1.0]))


def test_requires_grad_input_and_dtype_result() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], requires_grad=True)
    targets = torch.tensor([0, 0, 1])
    out = summary(probs, targets)
    assert out["accuracy"] == pytest.approx(1 / 3)
    assert out["auroc_max_prob"] == 1.0  # correct sample has the highest confidence


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(11)
    probs = _random_probs(500, 10, gen, torch.float32)
    targets = torch.randint(0, 10, (500,), generator=gen)
    cpu = summary(probs, targets)
    gpu = summary(probs.cuda(), targets.cuda())
    for key, value in cpu.items():
        assert gpu[key] == pytest.approx(value, abs=1e-6), key
