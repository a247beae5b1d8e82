"""Issue 33 item 1: the barrier metric the verdicts are judged on is a setting (``eval.metric``), recorded, the ICLR
version's train loss by default, and the verdicts on train and test loss are shown side by side (report.md and the
end of ``stardomain run``). The metric is presentation only: changing it recomputes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_helpers import assert_one_line_error, run_cli, tiny_config

from stardomain import defaults
from stardomain.analysis import verdicts

CFG = tiny_config("metric", sources=3, held_out=2, star={"repeats": 2}, eval={"points": 3, "max_pairs": 2})


def _write(tmp: Path, cfg: dict) -> Path:
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("metric")
    from click.testing import CliRunner

    from stardomain.cli.app import cli

    res = CliRunner().invoke(cli, ["run", str(_write(tmp, CFG)), "--out", str(tmp / "out"), "--quiet"])
    assert res.exit_code == 0, res.output
    return tmp / "out", res.output


def test_the_default_is_the_train_loss_and_it_reaches_results_json(run) -> None:
    out, _ = run
    results = json.loads((out / "results.json").read_text())
    assert defaults.BARRIER_METRIC == "train_loss"
    assert results["config"]["eval"]["metric"] == "train_loss"  # recorded with the config
    t = results["tests"]
    assert t["metric"] == "train_loss" and t["barriers"]["metric"] == "train_loss"
    assert set(t["barriers_by_metric"]) == {"train_loss", "test_loss"}
    assert t["barriers_by_metric"]["train_loss"] == t["barriers"]
    # each side is tested on its own values: the test loss's numbers are the test-loss barriers
    s = results["barriers"]["summary"]["star-source"]
    assert t["barriers_by_metric"]["test_loss"]["star_source_near_zero"]["values"]["mean"] == pytest.approx(
        s["barriers"]["test_loss"]["mean"]
    )
    assert t["barriers"]["star_source_near_zero"]["values"]["mean"] == pytest.approx(s["barriers"]["train_loss"]["mean"])


def test_report_and_console_show_both_metrics_side_by_side(run) -> None:
    out, printed = run
    report = (out / "report.md").read_text()
    assert "Verdicts (train loss barrier, eval.metric;" in report
    assert "| claim | train loss (verdict, eval.metric) | test loss |" in report
    assert "The ICLR version of the paper (v2) builds its findings on the training loss" in report
    row = next(ln for ln in report.splitlines() if ln.startswith("| star–source barrier ≈ 0 |"))
    assert row.count("n = ") == 2  # one verdict with its numbers per metric
    assert "verdicts (train loss | test loss; the verdict is on train loss, eval.metric):" in printed
    assert any(ln.strip().startswith("star–held-out < regular–regular:") and " | " in ln for ln in printed.splitlines())


def test_another_metric_recomputes_nothing_and_changes_the_verdicts(run, tmp_path) -> None:
    import shutil

    from click.testing import CliRunner

    from stardomain.cli.app import cli

    out, _ = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*.safetensors")}
    cfg = {**CFG, "eval": {**CFG["eval"], "metric": "test_loss"}}
    res = CliRunner().invoke(cli, ["run", str(_write(tmp_path, cfg)), "--out", str(copy), "--quiet"])
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*.safetensors")} == before  # no model retrained
    results = json.loads((copy / "results.json").read_text())
    assert results["tests"]["metric"] == "test_loss"
    assert results["tests"]["barriers"] == results["tests"]["barriers_by_metric"]["test_loss"]
    assert "Verdicts (test loss barrier, eval.metric;" in (copy / "report.md").read_text()


def test_verdicts_follow_the_recorded_metric_and_old_records_the_default() -> None:
    assert verdicts.metric_of({"config": {"eval": {"metric": "test_acc"}}}) == "test_acc"
    assert verdicts.metric_of({"config": {"eval": {}}}) == defaults.BARRIER_METRIC


def test_an_unknown_metric_is_refused_in_one_line(tmp_path, capsys) -> None:
    cfg = {**CFG, "eval": {**CFG["eval"], "metric": "loss"}}
    r = run_cli(capsys, "run", _write(tmp_path, cfg), "--out", tmp_path / "out")
    assert r.code == 2
    assert_one_line_error(r, "eval.metric: one of train_loss, test_loss, train_acc, test_acc (got 'loss')")
    assert not (tmp_path / "out").exists()


def test_accuracy_verdicts_are_shown_in_pp() -> None:
    from stardomain.analysis import stats
    from stardomain.report.metrics_side import claim_cell

    t = {"metric": "test_acc", "comparable": True, "star_source_near_zero": stats.near_zero([0.01, 0.02, 0.015], 0.05)}
    cell = claim_cell(t, "star_source_near_zero", "near 0", "NOT near 0")
    assert cell.startswith("near 0: mean 1.500 pp, 95% bounds [") and cell.endswith("pp, n = 3")
