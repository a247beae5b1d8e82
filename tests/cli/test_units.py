"""One convention for accuracy units (issue 35): people read percent and pp, programs get fractions.

The CLI's lines and its progress lines show accuracies as ``97.22%`` and accuracy barriers as ``1.23 pp``,
never as a bare fraction (``acc 0.97``); ``--json``, ``--log-json`` and the Python API give fractions in [0, 1].
"""

from __future__ import annotations

import json
import math
import re

import pytest
from cli_helpers import run_cli

from stardomain._util.units import is_accuracy, pct, pp, value_text

TINY = ["-d", "digits", "-m", "mlp", "-o", "width=8", "-o", "depth=1", "--epochs", "2"]
PERCENT = re.compile(r"\d+\.\d+%")
# an accuracy-named value with its number: 'test_acc=97.22%', 'acc=0.97', 'test acc 1.23 pp', 'train_acc 0.5'
ACC_VALUE = re.compile(r"\b(\w*acc\w*)[= ](-?(?:\d+(?:\.\d+)?|nan))(%| pp)?")


def bare_fractions(text: str) -> list[str]:
    """Every accuracy in ``text`` printed without its unit (% or pp)."""
    return [m.group(0) for m in ACC_VALUE.finditer(text) if m.group(3) is None]


def test_the_checker_catches_a_bare_fraction():
    """The checker below would pass vacuously if it never matched: it flags the old forms and passes the new ones."""
    assert bare_fractions("train seed=0: epoch 1/2 | test_acc=0.9722") == ["test_acc=0.9722"]
    assert bare_fractions("barriers: test acc 0.05, train acc 0.01") == ["acc 0.05", "acc 0.01"]
    assert bare_fractions("test_acc=97.22% (train_acc=100.00%); test acc 1.23 pp, acc=nan%") == []


def test_units_helpers():
    assert pct(0.9722) == "97.22%" and pct(1.0) == "100.00%" and pct(0.99, 1) == "99.0%"
    assert pp(0.0512) == "5.12 pp" and pp(0.0) == "0.00 pp"
    assert pct(None) == "nan%" and pct(math.nan) == "nan%" and pp(None) == "nan pp"
    assert is_accuracy("test_acc") and is_accuracy("acc") and is_accuracy("accuracy") and is_accuracy("star_test_acc")
    assert not is_accuracy("test_loss") and not is_accuracy("accumulate")
    assert value_text("test_acc", 0.9722) == "97.22%" and value_text("train_loss", 0.41234) == "0.4123"
    assert value_text("seed", 3) == "3" and value_text("zoo", "main") == "main"


def test_train_eval_barrier_print_percent_and_pp(tmp_path, capsys):
    zoo = tmp_path / "zoo"
    r = run_cli(capsys, "train", *TINY, "--n", "2", "--out", zoo)  # not quiet: stderr (a file here) gets progress lines
    assert r.code == 0, r.err
    epoch_lines = [ln for ln in r.err.splitlines() if "epoch " in ln and "test_acc=" in ln]
    assert len(epoch_lines) == 4, r.err  # 2 members x 2 epochs
    assert all(re.search(r"test_acc=\d+\.\d+%", ln) for ln in epoch_lines), epoch_lines
    member_lines = [ln for ln in r.out.splitlines() if "test_acc=" in ln]
    assert len(member_lines) == 2 and all(len(PERCENT.findall(ln)) == 2 for ln in member_lines), r.out
    assert bare_fractions(r.out + r.err) == [], r.out + r.err

    a, b = zoo / "seed-0.safetensors", zoo / "seed-1.safetensors"
    r = run_cli(capsys, "eval", a)
    assert r.code == 0, r.err
    assert re.search(r"acc=\d+\.\d+%", r.out) and bare_fractions(r.out + r.err) == [], r.out

    r = run_cli(capsys, "barrier", a, b, "--points", "3", "--out", tmp_path / "c.json")
    assert r.code == 0, r.err
    assert re.search(r"test acc -?\d+\.\d+ pp, .*train acc -?\d+\.\d+ pp", r.out), r.out
    assert bare_fractions(r.out + r.err) == [], r.out + r.err
    saved = json.loads((tmp_path / "c.json").read_text())  # the file a program reads: fractions
    assert all(0 <= saved["barriers"][k] <= 1 for k in ("test_acc", "train_acc")), saved["barriers"]
    shown = re.search(r"test acc (-?\d+\.\d+) pp", r.out)
    assert shown and float(shown.group(1)) == pytest.approx(100 * saved["barriers"]["test_acc"], abs=0.006)


def test_machine_output_keeps_fractions(tmp_path, capsys):
    """``--log-json`` progress records and ``eval --json`` carry fractions: the percent is for people only."""
    r = run_cli(capsys, "--log-json", "train", *TINY, "--seed", "0", "--out", tmp_path)
    assert r.code == 0, r.err
    records = [json.loads(ln) for ln in r.err.splitlines() if ln.startswith("{")]
    accs = [rec["test_acc"] for rec in records if rec.get("event") == "progress" and "test_acc" in rec]
    assert len(accs) == 2 and all(isinstance(x, float) and 0 <= x <= 1 for x in accs), records
    r = run_cli(capsys, "eval", tmp_path / "seed-0.safetensors", "--json")
    assert r.code == 0, r.err
    assert 0 <= json.loads(r.out)["test_acc"] <= 1
