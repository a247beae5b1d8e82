"""The CLI starts without the heavy libraries (issue 35): ``--help``, every command's ``--help``, usage errors and
the refusals of option values that need no data import none of torch, transformers, ray, matplotlib, scipy or
numpy; only a command's body does.

Each check runs in a fresh interpreter (this test process has imported torch long ago). Which modules a
run loaded is read from ``python -X importtime``: it lists every module imported, whatever the exit path
(``--help`` and usage errors leave through ``sys.exit``), with no hook to install. No wall time is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "ray", "matplotlib", "scipy", "numpy")
COMMANDS = ("spec", "train", "eval", "align", "barrier", "star", "bma", "run", "demo", "info")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


def _heavy_imported(stderr: str) -> list[str]:
    """Top-level names of the heavy packages among ``-X importtime``'s lines (``import time: self | cum | name``)."""
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    return sorted(names & set(HEAVY))


def test_importing_the_cli_loads_no_heavy_module():
    code = f"import stardomain.cli, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"importing stardomain.cli loaded {r.stdout.strip()}"


def test_the_recipe_imports_without_torch():
    """``train`` checks the recipe values typed before any heavy import: stardomain.training.recipe stays torch-free."""
    code = f"import stardomain.training.recipe, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    r = _run("-c", code)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_the_importtime_reading_sees_torch():
    """The reading below would pass vacuously if it never saw an import: it does see torch when torch is imported."""
    r = _run("-X", "importtime", "-c", "import torch")
    assert "torch" in _heavy_imported(r.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        *[[c, "--help"] for c in COMMANDS],
        ["train", "--frobnicate"],  # a click usage error
        ["barrier", "--points"],  # an option without its value
        ["star", "--t-sampling", "sideways", "--sources", ".", "--out", "s.safetensors"],  # a bad choice
    ],
    ids=lambda a: " ".join(a),
)
def test_help_and_usage_errors_load_no_heavy_module(args, tmp_path):
    r = _run("-X", "importtime", "-m", "stardomain.cli", *args, cwd=tmp_path)
    assert r.returncode in (0, 2), r.stderr[-2000:]
    assert _heavy_imported(r.stderr) == [], f"`stardomain {' '.join(args)}` imported {_heavy_imported(r.stderr)}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--out", "zoo", "--n", "0"], "--n must be >= 1 (got 0)"),
        (["train", "--out", "zoo", "--seed", "0", "--n", "2"], "give either --seed"),
        (["train", "--out", "zoo", "--subset-seed", "3"], "give --subset N too"),
        (["train", "--out", "zoo", "-e", str(10**12)], "--epochs: the epochs of each model would be"),
        (["train", "--out", "zoo", "--threads", "4096"], "--threads: 4096 CPU threads"),
        (["train", "--out", "zoo", "-e", "0"], "--epochs: must be >= 1 (got 0)"),
        (["train", "--out", "zoo", "--lr", "inf"], "--lr: must be a finite number"),
        (["barrier", "a.safetensors", "b.safetensors", "--points", "1"], "--points must be >= 2 to include both end points (got 1)"),
        (["barrier", "a.safetensors", "b.safetensors", "--refine", "ste"], "--refine ste refines an alignment"),
        (
            ["align", "a.safetensors", "b.safetensors", "--method", "activation", "--matching-samples", "0"],
            "--matching-samples must be >= 1",
        ),
        (["star", "--sources", "zoo", "--out", "s.safetensors", "--repeats", "0"], "--repeats must be >= 1 (got 0)"),
        (["star", "--sources", "zoo", "--out", "s.safetensors", "--t-constant", "0.3"], "--t-constant sets the fixed t"),
        (["bma", "--star", "s.safetensors", "--max-samples", "0"], "--max-samples must be >= 1 (got 0)"),
        (["bma", "--star", "s.safetensors", "--matching-samples", "0"], "--matching-samples must be >= 1 (got 0)"),
        (["bma", "--star", "s.safetensors", "--align", "weight", "--matching-samples", "64"], "which --align weight never uses"),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, list) else "",
)
def test_option_refusals_that_need_no_data_load_no_heavy_module(args, message, tmp_path):
    """Checked by :func:`stardomain.cli.common.checked_first` before the command body (and torch): one line, exit 2."""
    r = _run("-X", "importtime", "-m", "stardomain.cli", *args, cwd=tmp_path)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1 and message in errors[0], r.stderr[-2000:]
    assert _heavy_imported(r.stderr) == [], f"`stardomain {' '.join(args)}` imported {_heavy_imported(r.stderr)}"
