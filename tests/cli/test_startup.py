"""The CLI starts without the heavy libraries (issue 35): ``--help``, every command's ``--help`` and a usage
error import none of torch, transformers, ray, matplotlib, scipy or numpy; only a command's body does.

Each check runs in a fresh interpreter (this test process has imported torch long ago). Which modules a
run loaded is read from ``python -X importtime``: it lists every module imported, whatever the exit path
(``--help`` and usage errors leave through ``sys.exit``), with no hook to install. No wall time is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "ray", "matplotlib", "scipy", "numpy")
COMMANDS = ("spec", "train", "eval", "align", "barrier", "star", "bma", "run", "demo", "info")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


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
    r = _run("-X", "importtime", "-m", "stardomain.cli", *args)
    assert r.returncode in (0, 2), r.stderr[-2000:]
    assert _heavy_imported(r.stderr) == [], f"`stardomain {' '.join(args)}` imported {_heavy_imported(r.stderr)}"
