"""The demo's results.json and report.md are byte-identical to the recorded run (docs/demo_digest.json names its commit).

Float results are bit-exact for one torch build on one CPU instruction set, so the comparison runs where the
platform matches the recording (docs/demo_digest.json) and is skipped, saying why, elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from paths import REPO

RECORD = json.loads((REPO / "docs" / "demo_digest.json").read_text())


def _platform() -> dict[str, str]:
    vendor = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        vendor = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("vendor_id")), "")
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_vendor": vendor,
        "machine": platform.machine(),
    }


@pytest.mark.slow
def test_demo_results_and_report_are_byte_identical_to_the_recorded_run(tmp_path: Path, capsys) -> None:
    here, want = _platform(), RECORD["platform"]
    if here != want:
        pytest.skip(f"the recorded demo digest is for {want}; this machine is {here}")
    r = run_cli(capsys, "-q", "demo", "--out", tmp_path / "demo")
    assert r.code == 0, r.err
    for name in ("results.json", "report.md"):
        assert hashlib.sha256((tmp_path / "demo" / name).read_bytes()).hexdigest() == RECORD[name], name
