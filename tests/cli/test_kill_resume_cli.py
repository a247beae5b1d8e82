"""Issue 30, item 8: kill -9 of ``stardomain star`` (and ``train``) mid-run, the same command again: the result is
the uninterrupted run's, and no temp file (nor resume state) is left anywhere in the output folder.

The kill is deterministic: the command runs in a subprocess whose ``os.replace`` SIGKILLs the process at the
second rename of its per-epoch resume state, i.e. with the first state on disk (the re-run resumes from it)
and the second one's temp files fsynced but never renamed: exactly what a kill -9 mid-write leaves. Before
the fix, the star's re-run left ``..star.<hash>.state.safetensors.<rand>.tmp`` for ever.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # subprocesses compute like the suite (one thread)
TRAIN = ["train", "-d", "digits", "-m", "mlp", "-o", "depth=1", "-o", "width=8", "-e", "3", "--subset", "200", "--device", "cpu", "-q"]
STAR = ["-e", "3", "--device", "cpu", "-q"]

# the CLI with os.replace wrapped: SIGKILL itself on the NTH rename onto a path containing MARKER
KILLER = """
import os, signal, sys
real, seen, marker, nth = os.replace, [0], sys.argv[1], int(sys.argv[2])
def replace(src, dst, *args, **kwargs):
    if marker in os.fspath(dst):
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
os.replace = replace
sys.argv = ["stardomain", *sys.argv[3:]]
from stardomain.cli import main
main()
"""


def _cli(*args: object) -> None:
    from stardomain.cli import cli

    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output


def _kill_at(marker: str, nth: int, *args: object) -> None:
    """Run the CLI with ``args`` in a subprocess that is SIGKILLed at the ``nth`` rename onto a ``marker`` path."""
    r = subprocess.run(
        [sys.executable, "-c", KILLER, marker, str(nth), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert r.returncode == -signal.SIGKILL, f"not killed (exit {r.returncode}): {r.stderr}"


def _leftovers(root: Path) -> list[str]:
    """Temp files and resume states anywhere under ``root`` (hidden files included)."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith("tmp") or ".train-state." in p.name or ".state." in p.name
    )


def _same_checkpoint(got: Path, want: Path) -> None:
    assert got.read_bytes() == want.read_bytes(), f"{got} differs from the uninterrupted run's weights"
    meta, ref = (json.loads(p.with_suffix(".json").read_text()) for p in (got, want))
    for key in ("metrics", "history", "identity", "seed"):
        assert meta.get(key) == ref.get(key), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """A zoo of two members and a star of it, each trained without interruption: (zoo folder, star path)."""
    root = tmp_path_factory.mktemp("kill_ref")
    _cli(*TRAIN, "--n", "2", "--out", root / "zoo")
    _cli("star", "--sources", root / "zoo", *STAR, "--out", root / "star" / "star.safetensors")
    return root / "zoo", root / "star" / "star.safetensors"


def test_killed_star_resumes_to_the_same_star_with_no_temp_left(reference, tmp_path: Path) -> None:
    zoo, ref_star = reference
    out = tmp_path / "star" / "star.safetensors"
    args = ["star", "--sources", zoo, *STAR, "--out", out]
    _kill_at(".state.safetensors", 2, *args)
    assert [p for p in out.parent.iterdir() if p.name.endswith(".tmp")], "the kill left no temp: the test tests nothing"
    assert [p for p in out.parent.iterdir() if p.name.endswith(".state.safetensors")], "no state to resume from"
    _cli(*args)
    _same_checkpoint(out, ref_star)
    assert not _leftovers(out.parent), _leftovers(out.parent)


def test_killed_train_resumes_to_the_same_zoo_with_no_temp_left(reference, tmp_path: Path) -> None:
    ref_zoo, _ = reference
    out = tmp_path / "zoo"
    args = [*TRAIN, "--n", "2", "--out", out]
    _kill_at(".train-state.safetensors", 2, *args)
    assert [p for p in out.iterdir() if p.name.endswith(".tmp")], "the kill left no temp: the test tests nothing"
    _cli(*args)
    for seed in (0, 1):
        _same_checkpoint(out / f"seed-{seed}.safetensors", ref_zoo / f"seed-{seed}.safetensors")
    assert not _leftovers(out), _leftovers(out)
