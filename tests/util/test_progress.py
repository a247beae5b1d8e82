"""Progress shows up in a log: plain lines when stderr is not a terminal, at the promised cadence."""

from __future__ import annotations

import io
import json
import re

import pytest
from cli_helpers import run_cli

from stardomain._util.progress import Progress, ProgressConfig, format_duration, format_event, resolve
from stardomain.errors import StardomainError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines_of(buf: io.StringIO) -> list[str]:
    return [ln for ln in buf.getvalue().splitlines() if ln.strip()]


def test_a_line_per_epoch_and_one_every_30_s_inside_a_long_epoch():
    clock, buf = FakeClock(), io.StringIO()
    meter = Progress("train seed=3", 4, unit="epoch", progress=ProgressConfig("lines", stream=buf, clock=clock))
    for _ in range(4):
        for b in range(1, 101):  # 100 batches of 1 s: a 100 s epoch
            clock.now += 1.0
            meter.inner(b, 100)
        meter.step(train_loss=0.5)
    lines = lines_of(buf)
    epoch_lines = [ln for ln in lines if "batch" not in ln]
    inner_lines = [ln for ln in lines if "batch" in ln]
    assert len(epoch_lines) == 4
    assert epoch_lines[0].startswith("train seed=3: epoch 1/4 (25%)") and "train_loss=0.5" in epoch_lines[0]
    assert epoch_lines[-1].startswith("train seed=3: epoch 4/4 (100%)") and "ETA 0:00" in epoch_lines[-1]
    # 100 s per epoch -> a line at 30, 60, 90 s of each epoch (the epoch line resets nothing: the cadence is time-based)
    assert 3 * 4 - 1 <= len(inner_lines) <= 3 * 4 + 1
    assert inner_lines[0] == "train seed=3: epoch 1/4, batch 30/100 | elapsed 0:30 | ETA 6:10"
    # never more than 30 s (of the fake clock) without a line
    stamps = [int(m.group(1)) * 60 + int(m.group(2)) for m in (re.search(r"elapsed (\d+):(\d\d)", ln) for ln in lines)]
    assert max(b - a for a, b in zip([0] + stamps, stamps)) <= 30


def test_short_steps_print_only_on_the_interval_and_at_the_end():
    clock, buf = FakeClock(), io.StringIO()
    meter = Progress("interpolation", 21, unit="t", progress=ProgressConfig("lines", stream=buf, clock=clock), each_step=False)
    for _ in meter.wrap(range(21)):
        clock.now += 2.0  # 42 s in all
    lines = lines_of(buf)
    assert lines == ["interpolation: t 15/21 (71%) | elapsed 0:30 | ETA 0:12", "interpolation: t 21/21 (100%) | elapsed 0:42 | ETA 0:00"]
    quick = io.StringIO()  # a loop shorter than the interval says nothing (no noise before a result or an error line)
    for _ in Progress("decoding", 21, progress=ProgressConfig("lines", stream=quick, clock=clock), each_step=False).wrap(range(21)):
        clock.now += 1.0
    assert quick.getvalue() == ""


def test_eta_counts_only_the_steps_done_in_this_session():
    clock, buf = FakeClock(), io.StringIO()
    meter = Progress("train seed=0", 10, unit="epoch", progress=ProgressConfig("lines", stream=buf, clock=clock), initial=8)
    clock.now += 60.0
    meter.step()
    assert lines_of(buf) == ["train seed=0: epoch 9/10 (90%) | elapsed 1:00 | ETA 1:00"]


def test_json_lines_and_off_and_bar():
    clock, buf = FakeClock(), io.StringIO()
    meter = Progress("starlight", 2, unit="epoch", progress=ProgressConfig("json", stream=buf, clock=clock))
    clock.now += 5
    meter.step(interp_train_loss=0.25)
    record = json.loads(buf.getvalue())
    assert record == {
        "event": "progress",
        "what": "starlight",
        "unit": "epoch",
        "done": 1,
        "total": 2,
        "elapsed_s": 5.0,
        "eta_s": 5.0,
        "interp_train_loss": 0.25,
    }
    silent = io.StringIO()
    off = Progress("x", 3, progress=ProgressConfig("off", stream=silent, clock=clock))
    for _ in range(3):
        clock.now += 100
        off.inner(1, 2)
        off.step()
    assert silent.getvalue() == ""
    # auto: a tqdm bar on a terminal (no plain lines), plain lines elsewhere
    tty = FakeTTY()
    bar = Progress("train", 2, unit="epoch", progress=ProgressConfig("auto", stream=tty))
    assert bar.mode == "bar"
    bar.step(loss=0.1)
    bar.close()
    assert "train" in tty.getvalue() and "|" in tty.getvalue()
    assert Progress("train", 2, progress=ProgressConfig("auto", stream=io.StringIO())).mode == "lines"


def test_legacy_arguments_and_validation():
    assert resolve(None).mode == "auto" and resolve(False).mode == "off" and resolve("json").mode == "json"
    with pytest.raises(StardomainError, match="unknown"):
        ProgressConfig("loud")
    with pytest.raises(StardomainError, match="interval"):
        ProgressConfig("lines", interval=0)
    assert format_duration(12) == "0:12" and format_duration(754) == "12:34" and format_duration(5000) == "1:23:20"
    assert format_event("trained", {"zoo": "main", "seed": 3, "seconds": 1.234}) == "trained zoo=main seed=3 in 1.2 s"


def test_train_model_reports_inside_an_epoch_on_a_short_interval(digits):
    """The real training loop calls the meter per batch: with a 1 ms interval every epoch has inner lines."""
    from stardomain import models
    from stardomain.training.loop import default_recipe, train_model

    buf = io.StringIO()
    model = models.create("mlp", 10, (1, 8, 8), width=8, depth=1)
    recipe = default_recipe("digits").replace(epochs=2)
    train_model(model, digits, recipe, seed=0, progress=ProgressConfig("lines", interval=1e-3, stream=buf))
    lines = lines_of(buf)
    assert [ln.split(" |")[0] for ln in lines if "batch" not in ln] == ["train seed=0: epoch 1/2 (50%)", "train seed=0: epoch 2/2 (100%)"]
    assert any(re.match(r"train seed=0: epoch 1/2, batch \d+/\d+ \| elapsed", ln) for ln in lines)


def test_cli_train_prints_epoch_lines_when_stderr_is_a_file(tmp_path, capsys):
    r = run_cli(capsys, "train", "--epochs", "2", "-o", "width=8", "-o", "depth=1", "--subset", "300", "--out", tmp_path / "z")
    assert r.code == 0, r.err
    epoch_lines = [ln for ln in r.err.splitlines() if ln.startswith("train seed=0: epoch")]
    assert [ln.split(" |")[0] for ln in epoch_lines] == ["train seed=0: epoch 1/2 (50%)", "train seed=0: epoch 2/2 (100%)"]
    assert all("elapsed" in ln and "ETA" in ln and "test_acc=" in ln for ln in epoch_lines)
    assert "seed-0.safetensors" in r.out  # the result line stays on stdout


def test_cli_quiet_and_log_json_are_global(tmp_path, capsys):
    base = ["train", "--epochs", "1", "-o", "width=8", "-o", "depth=1", "--subset", "300"]
    r = run_cli(capsys, "--quiet", *base, "--out", tmp_path / "q")
    assert r.code == 0 and "epoch" not in r.err
    r = run_cli(capsys, *base, "-q", "--out", tmp_path / "q2")
    assert r.code == 0 and "epoch" not in r.err
    r = run_cli(capsys, "--log-json", *base, "--out", tmp_path / "j")
    assert r.code == 0, r.err
    records = [json.loads(ln) for ln in r.err.splitlines() if ln.startswith("{")]
    progress = [rec for rec in records if rec["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 1
    assert not [ln for ln in r.err.splitlines() if ln.strip() and not ln.startswith("{")]  # warnings too are JSON
    # a 1-epoch model is not converged: the warning is a record of its own, and --quiet does not hide it
    assert any(rec["event"] == "warning" and "not converged" in rec["message"] for rec in records)
    r = run_cli(capsys, "--quiet", *base, "--out", tmp_path / "q3")
    assert r.code == 0 and r.err.startswith("warning: ") and "not converged" in r.err
