"""Issue 30, item 9: every JSON file stardomain writes is strict JSON.

The demo's results.json held bare ``NaN`` (the prediction interval of two tied regular models), which
JavaScript's ``JSON.parse`` and most other parsers reject. Non-finite numbers are now written as ``null``
(``stardomain._util.strictjson``: the record around it says why), with ``allow_nan=False``; the report renders
null as it rendered NaN, and files written before (bare NaN) still read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from report_helpers import tied_fusion_results

from stardomain._util.fileio import atomic_write_json, json_bytes


def strict_loads(text: str | bytes):
    """What a strict parser (JSON.parse, jq, serde_json ...) accepts: no NaN, Infinity or -Infinity."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


NASTY = {"mean": math.nan, "ci95": [math.nan, math.inf], "deep": {"x": (-math.inf, 1.5)}, "n": 1, "ok": 0.25}


def test_the_one_writer_writes_nan_and_infinities_as_null(tmp_path: Path):
    atomic_write_json(tmp_path / "r.json", NASTY)
    got = strict_loads((tmp_path / "r.json").read_bytes())
    assert got == {"mean": None, "ci95": [None, None], "deep": {"x": [None, 1.5]}, "n": 1, "ok": 0.25}
    assert json_bytes(NASTY) == json_bytes(dict(reversed(list(NASTY.items()))))  # still stable bytes


def test_checkpoint_metadata_with_a_diverged_loss_is_strict_json(tmp_path: Path):
    from stardomain import models
    from stardomain.checkpoints import store

    model = models.create("mlp", 10, (1, 8, 8), depth=1, width=4)
    path = store.save(tmp_path / "m.safetensors", model, {"seed": 0, "metrics": {"train_loss": math.nan, "test_loss": math.inf}})
    meta = strict_loads(path.with_suffix(".json").read_text())
    assert meta["metrics"] == {"train_loss": None, "test_loss": None}
    assert store.read_metadata(path)["metrics"]["train_loss"] is None


def test_a_prediction_interval_of_tied_models_is_null_with_its_reason_and_the_report_reads_it(tmp_path: Path):
    """The demo's case: two regular models at the same accuracy; the interval is undefined, no_verdict says why."""
    from stardomain.report.study_sections import fusion_section

    results = tied_fusion_results()
    atomic_write_json(tmp_path / "results.json", results)
    back = strict_loads((tmp_path / "results.json").read_text())
    test = back["tests"]["fusion"][0]
    assert test["interval"] == [None, None] and "spread is unknown" in test["no_verdict"]
    assert fusion_section(back) == fusion_section(results)  # null renders as NaN did


def test_old_files_with_bare_nan_still_read_and_render(tmp_path: Path):
    from stardomain.report.formatting import fmt, interval, num

    old = tmp_path / "old.json"
    old.write_text('{"interval": [NaN, NaN], "values": {"mean": NaN, "std": NaN, "n": 0}}\n')
    got = json.loads(old.read_text())  # Python's reader, as every stardomain reader uses
    assert math.isnan(got["interval"][0])
    assert interval(got["interval"]) == interval([None, None]) == "[–]"
    assert fmt(got["values"]) == fmt({"mean": None, "std": None, "n": 0}) == "–" and num(None) == "–"


def test_readers_of_numbers_take_null_as_no_number():
    from stardomain.analysis import stats
    from stardomain.report.bma_plot import _mean_std
    from stardomain.report.width_plot import _point

    assert stats.mean_std([1.0, None, 3.0])["n"] == 2
    assert stats.paired_t([1.0, None, 2.0, 4.0], [0.5, 1.0, None, 3.0])["difference"]["n"] == 2
    assert stats.against_population([0.9, 0.8, 0.85], None)["direction"] == 0  # type: ignore[arg-type]
    means, _ = _mean_std([[1.0, None], [3.0, None]])
    assert means[0] == 2.0 and math.isnan(means[1])
    from stardomain.analysis.convergence import convergence_line

    diverged = {"metrics": {"train_acc": 0.1, "train_loss": None}}  # a checkpoint whose loss was NaN, read back
    assert "1 of 2 regular models below" in convergence_line([diverged, {"metrics": {"train_acc": 1.0, "train_loss": 0.01}}])
    summary = {"regular-regular": {"barriers": {"test_loss": {"mean": None, "std": None, "n": 0}}}}
    mean, std, _, n = _point(summary, "regular-regular", "test_loss")
    assert math.isnan(mean) and math.isnan(std) and n == 0


def test_json_on_stdout_and_json_log_lines_are_strict(capsys):
    from stardomain._util.progress import Progress, ProgressConfig
    from stardomain.cli.common import echo_json

    echo_json({"test_loss": math.nan, "gap": math.inf})
    assert strict_loads(capsys.readouterr().out) == {"gap": None, "test_loss": None}
    meter = Progress("train", 2, unit="epoch", progress=ProgressConfig("json"))
    meter.step(train_loss=math.nan)
    meter.step(train_loss=math.inf)
    meter.close()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines and all(isinstance(strict_loads(ln), dict) for ln in lines)


def test_a_leftover_non_number_type_is_a_loud_error_not_an_unreadable_file():
    from stardomain._util.strictjson import dumps

    with pytest.raises(TypeError):
        dumps({"t": torch.tensor(1.0)})  # not JSON at all: refused, never written half
    assert dumps({"x": float("nan")}) == '{"x": null}'
