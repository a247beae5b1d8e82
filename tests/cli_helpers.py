"""Run the ``stardomain`` CLI in-process (fast) or as a real subprocess (exit codes, signals)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> Result:
    """Invoke ``stardomain.cli.main`` with ``args`` and capture its exit code and output."""
    from stardomain.cli import main

    old = sys.argv
    sys.argv = ["stardomain", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    return Result(code, cap.out, cap.err)


def run_subprocess(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "stardomain.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def assert_one_line_error(result, *needles: str) -> None:
    err = result.err if isinstance(result, Result) else result.stderr
    code = result.code if isinstance(result, Result) else result.returncode
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def tiny_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The smallest experiment YAML the suite runs (digits, one 8-unit hidden layer, 2 sources, 1 held-out,
    the barrier study only), with top-level keys replaced by ``overrides``: one definition for every test module."""
    base: dict[str, Any] = {
        "name": name,
        "dataset": "digits",
        "seed": 0,
        "device": "cpu",
        "model": {"name": "mlp", "options": {"depth": 1, "width": 8}},
        "train": {"epochs": 1},
        "sources": 2,
        "held_out": 1,
        "eval": {"points": 3, "max_pairs": 1},
        "studies": {"barriers": True, "distances": False},
    }
    return {**base, **overrides}
