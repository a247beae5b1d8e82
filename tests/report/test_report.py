"""report.md from synthetic results: verdicts only where the tests allow them, flags, BN wording, determinism."""

from __future__ import annotations

import json
import random

import pytest
from report_helpers import tied_fusion_results

from stardomain.analysis.stats import NOT_SIGNIFICANT
from stardomain.experiment.config import ExperimentConfig
from stardomain.experiment.pairs import endpoints, pair_record
from stardomain.experiment.study import compute_tests
from stardomain.experiment.summary import summarize_groups
from stardomain.report.markdown import write_report


def _pair(a: str, b: str, barrier: float) -> dict:
    curve = {
        "t": [0.0, 0.5, 1.0],
        "test_loss": [0.5, 0.5 + barrier, 0.5],
        "test_acc": [0.9, 0.9 - barrier / 10, 0.9],
        "train_loss": [0.4, 0.4 + barrier, 0.4],
        "train_acc": [0.95, 0.95 - barrier / 10, 0.95],
        "info": {},
    }
    return {
        "a": a,
        "b": b,
        "l2": 10.0 + barrier,
        "l2_aligned": 8.0 + barrier,
        "curve": curve,
        "barriers": {"train_loss": barrier, "train_acc": barrier / 10, "test_loss": barrier, "test_acc": barrier / 10},
    }


def synthetic(rr: list[float], ss: list[float], sh: list[float], star_acc: float = 0.90, has_bn: bool = False) -> dict:
    """A results.json with only the barrier and distance studies, its tests computed as the pipeline does."""
    cfg = ExperimentConfig(name="synthetic", sources=len(ss), held_out=len(sh)).to_dict()
    src = [f"seed-{i}" for i in range(len(ss))]
    held = [f"seed-{1000 + i}" for i in range(len(sh))]
    groups = {
        "regular-regular": [_pair(f"seed-{i}", f"seed-{i + 1}", b) for i, b in enumerate(rr)],
        "star-source": [_pair("star", s, b) for s, b in zip(src, ss)],
        "star-held-out": [_pair("star", h, b) for h, b in zip(held, sh)],
    }
    summary = summarize_groups(groups)
    member = {"test_acc": 0.90, "test_loss": 0.40}
    ep = endpoints({"test_acc": star_acc, "test_loss": 0.42}, [member] * len(src), [member] * len(held), margin=0.01)
    results = {
        "schema_version": 2,
        "name": "synthetic",
        "config": cfg,
        "recipe": {"optimizer": "sgd", "lr": 0.1, "epochs": 3},
        "dataset": {"name": "digits", "train": 1437, "test": 360, "in_shape": [1, 8, 8], "num_classes": 10},
        "models": {
            "sources": src,
            "held_out": held,
            "regular_test_acc": {"mean": 0.9, "std": 0.0, "n": len(src)},
            "star": "stars/x",
            "star_seed": 123,
            "star_recipe": {"optimizer": "sgd", "lr": 0.1, "epochs": 3},
            "star_metrics": {"test_acc": star_acc},
            "has_batchnorm": has_bn,
        },
        "endpoints": ep,
        "barriers": {
            "groups": groups,
            "summary": summary,
            "pairs": {g: pair_record([(p["a"], p["b"]) for p in v], "rule", len(v)) for g, v in groups.items()},
        },
        "distances": {
            g: {
                "l2": s["l2"],
                "l2_aligned": s["l2_aligned"],
                "n_pairs": s["n_pairs"],
                "values": {k: s["values"][k] for k in ("l2", "l2_aligned")},
            }
            for g, s in summary.items()
        },
    }
    results["tests"] = compute_tests(results)
    return json.loads(json.dumps(results))


def verdict_lines(report: str) -> list[str]:
    return [ln for ln in report.splitlines() if ln.startswith(("- star–", "- regular–"))]  # not the "- star θ⋆ – …" pair lists


CLEAR = dict(rr=[0.40, 0.42, 0.38, 0.41, 0.39, 0.43], ss=[0.001, 0.003, 0.002, 0.002, 0.001, 0.002], sh=[0.10, 0.12, 0.11, 0.09, 0.10])
OVERLAP = dict(rr=[0.05, 0.40, 0.20, 0.30, 0.10], ss=[0.0, 0.09, 0.01, 0.08, 0.02], sh=[0.10, 0.35, 0.15, 0.30, 0.20])


def test_clear_differences_get_their_verdicts(tmp_path):
    report = write_report(synthetic(**CLEAR), tmp_path).read_text()
    lines = verdict_lines(report)
    assert any("regular–regular barrier" in ln and "above the tolerance" in ln for ln in lines)
    assert any("star–source barrier" in ln and ln.endswith(": near 0") for ln in lines)
    assert any("star–held-out is below regular–regular" in ln and "Welch p" in ln for ln in lines)
    assert any("closer to held-out" in ln for ln in lines)
    assert NOT_SIGNIFICANT not in report and "not comparable" not in report


def test_overlapping_samples_get_no_verdict(tmp_path):
    report = write_report(synthetic(**OVERLAP), tmp_path).read_text()
    lines = [ln for ln in verdict_lines(report) if "star–" in ln]
    assert len(lines) == 3 and all(NOT_SIGNIFICANT in ln for ln in lines)
    assert "below regular–regular" not in report and ": near 0" not in report


def test_a_poor_star_is_flagged_beside_every_barrier_verdict(tmp_path):
    res = synthetic(**CLEAR, star_acc=0.736)
    assert res["endpoints"]["star_below_sources"] and res["tests"]["barriers"]["comparable"] is False
    report = write_report(res, tmp_path).read_text()
    star_lines = [ln for ln in verdict_lines(report) if ln.startswith("- star–") and "barrier" in ln]
    assert len(star_lines) == 2 and all("not comparable" in ln and "16.40 pp below" in ln for ln in star_lines)
    assert "below regular–regular" not in report and ": near 0" not in report
    assert "| star θ⋆ | 1 | 73.60 | 0.420 |" in report  # the endpoints sit beside the barriers


def test_the_flag_names_the_poor_repeat_not_repeat_0():
    """With repeats the flag is raised by ANY poor star; its wording must name that star and its gap,
    never repeat 0's (which may sit above its sources: 'the star is -0.33 pp below' was printed)."""
    from stardomain.report.markdown import flag_reason, flag_text

    ep = {
        "star_acc_gap": -0.0033,
        "margin": 0.01,
        "star_below_sources": True,
        "stars_below_sources": [False, False, True],
        "star_acc_gaps": [-0.0033, 0.002, 0.0161],
    }
    reason = flag_reason(ep)
    assert "1 of 3 stars" in reason and "repeat 2, 1.61 pp" in reason and "-0.33" not in reason
    old = {k: v for k, v in ep.items() if k != "star_acc_gaps"}  # results written before the gaps were recorded
    assert "repeats 2" in flag_reason(old) and "-0.33" not in flag_reason(old)
    assert flag_text({**ep, "star_below_sources": False}) == ""
    single = {"star_acc_gap": 0.164, "margin": 0.01, "star_below_sources": True}
    assert "the star is 16.40 pp below" in flag_reason(single)


@pytest.mark.parametrize("has_bn", [False, True])
def test_batchnorm_sentence_only_for_models_with_batchnorm(tmp_path, has_bn):
    report = write_report(synthetic(**CLEAR, has_bn=has_bn), tmp_path).read_text()
    assert ("BatchNorm statistics are re-estimated" in report) is has_bn
    assert ("no BatchNorm" in report) is (not has_bn)


def test_report_depends_only_on_results_content(tmp_path):
    res = synthetic(**OVERLAP)
    a = write_report(res, tmp_path / "a").read_bytes()

    def shuffled(obj):
        if isinstance(obj, dict):
            items = list(obj.items())
            random.Random(0).shuffle(items)
            return {k: shuffled(v) for k, v in items}
        return [shuffled(v) for v in obj] if isinstance(obj, list) else obj

    assert write_report(shuffled(res), tmp_path / "b").read_bytes() == a


def test_fusion_row_against_tied_regular_models_has_no_verdict():
    """Two regular models at the same accuracy give a zero-width interval: the row says why there is no verdict,
    where a star at any other accuracy used to be called 'better'."""
    from stardomain.report.study_sections import fusion_section

    res = tied_fusion_results()
    text = "\n".join(fusion_section(res))
    assert "no verdict: the regular models all score the same" in text and "better" not in text
