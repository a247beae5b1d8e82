"""Figure 5 and report.md's BMA section: the AUROC is named (misclassification detection) and defined, NLL and ECE
stand beside it, and the bootstrap intervals are drawn and stated -- and results without intervals still render."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from stardomain.bma.core import _Curves
from stardomain.report.bma_plot import AUROC_DEFINITION, PLOT_PANELS, bma_figure, plot_bma
from stardomain.report.study_sections import bma_section

N_TEST, N_BOOT, SEED = 300, 200, 3


def _curve(k: int, seed: int) -> dict[str, Any]:
    """A BMA curve computed as bma_study computes it, from synthetic probabilities that sharpen with K."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(4, (N_TEST,), generator=g)
    noise = torch.randn(N_TEST, 4, generator=g)
    curves = _Curves(N_TEST, N_BOOT, SEED)
    for i in range(1, k + 1):
        logits = noise + (0.5 + 0.2 * i) * torch.nn.functional.one_hot(y, 4)
        curves.record(torch.softmax(logits.double(), dim=1), y)
    return curves.into({"k": list(range(1, k + 1)), "samples": [[0, 0.5]] * k})


def _study() -> dict[str, Any]:
    star_domain, ensemble = _curve(5, 0), _curve(3, 1)
    point = {name: values[0] for name, values in ensemble["metrics"].items()}
    return {"star_domain": star_domain, "ensemble": ensemble, "star": point, "single": point}


def _without_intervals(study: dict[str, Any]) -> dict[str, Any]:
    """A results.json BMA section as written before the intervals existed."""
    old = copy.deepcopy(study)
    for key in ("star_domain", "ensemble"):
        old[key].pop("ci")
        old[key].pop("bootstrap")
    return old


def _texts(fig: Any) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    for legend in fig.legends:
        parts += [t.get_text() for t in legend.get_texts()]
    return "\n".join(parts)


def _band_count(fig: Any) -> int:
    from matplotlib.collections import PolyCollection

    return sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


def test_curves_store_one_interval_per_k_and_metric() -> None:
    c = _curve(4, 0)
    assert set(c["ci"]) == set(c["metrics"])
    assert all(len(c["ci"][name]) == 4 for name in c["ci"])
    assert c["bootstrap"] == {
        "method": "percentile bootstrap over test samples",
        "level": 0.95,
        "resamples": N_BOOT,
        "n_test": N_TEST,
        "seed": SEED,
    }


def test_figure_names_the_auroc_and_shows_nll_and_ece() -> None:
    fig = bma_figure(_study())
    text = _texts(fig)
    assert "misclassification" in text and AUROC_DEFINITION in text
    assert "OOD" not in text and "ID vs" not in text
    assert [ax.get_title() for ax in fig.axes] == list(PLOT_PANELS.values())
    assert {"nll", "ece", "auroc_max_prob", "auroc_neg_entropy", "accuracy"} == set(PLOT_PANELS)
    assert f"95% bootstrap interval over the {N_TEST} test images ({N_BOOT} resamples)" in text


def test_figure_draws_a_bootstrap_band_for_each_curve_in_each_panel() -> None:
    assert _band_count(bma_figure(_study())) == 2 * len(PLOT_PANELS)


def test_old_results_without_intervals_still_plot_without_bands(tmp_path: Path) -> None:
    old = _without_intervals(_study())
    fig = bma_figure(old)
    assert _band_count(fig) == 0 and "bootstrap" not in _texts(fig)
    assert plot_bma(old, tmp_path / "bma.png").read_bytes()[:4] == b"\x89PNG"


def test_several_runs_get_std_bands_not_bootstrap_bands() -> None:
    fig = bma_figure([_study(), _study()])
    text = _texts(fig)
    assert "± 1 std over 2 runs" in text and "bootstrap" not in text


def test_report_section_defines_the_auroc_and_states_the_intervals(tmp_path: Path) -> None:
    figures: list[str] = []
    lines = bma_section({"bma": _study(), "tests": {}}, tmp_path, figures)
    text = "\n".join(lines)
    assert AUROC_DEFINITION + "." in text
    assert "| misclassification AUROC (max prob) | misclassification AUROC (neg. entropy) |" in text
    assert "| NLL | ECE |" in text
    assert f"95% bootstrap interval over the {N_TEST} test images, {N_BOOT} resamples" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| star-domain BMA |"))
    assert row.count("[") == 6  # every metric of the curve's last K has its interval
    assert "OOD" not in text
    assert figures == ["bma.png"] and (tmp_path / "bma.png").exists()


def test_report_section_of_old_results_has_no_intervals(tmp_path: Path) -> None:
    text = "\n".join(bma_section({"bma": _without_intervals(_study()), "tests": {}}, tmp_path, []))
    assert AUROC_DEFINITION in text and "bootstrap interval" not in text and "[" not in text.split("![")[0]
