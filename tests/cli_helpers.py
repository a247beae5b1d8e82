"""Run the ``stardomain`` CLI in-process (fast) or as a real subprocess (exit codes, signals)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

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
    return subprocess.run([sys.executable, "-m", "stardomain.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def assert_one_line_error(result, *needles: str) -> None:
    err = result.err if isinstance(result, Result) else result.stderr
    code = result.code if isinstance(result, Result) else result.returncode
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
