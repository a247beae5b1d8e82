"""Installing stardomain beside a user's own torch leaves that torch in place (issue 17, item 1).

A real CUDA build of torch is gigabytes, so a fresh venv gets a stand-in: a ``torch`` distribution
with only metadata, at a version the user might have. The fresh venv sees this environment's other
packages through a ``.pth`` file (its own site-packages comes first, so the stand-in shadows the
real torch), and pip runs offline (``--no-index``, no build isolation, no user/site pip config):
what its ``--dry-run --report`` would install is exactly what installing stardomain would change.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fake_dist_info(site: Path, version: str) -> None:
    """An installed ``torch`` that is nothing but metadata, as pip sees a distribution."""
    info = site / f"torch-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def _fake_wheel(folder: Path, version: str) -> Path:
    """A minimal ``torch`` wheel pip could pick up from ``--find-links`` (the negative control)."""
    path = folder / f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("torch/__init__.py", "")
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def _project_copy(dest: Path) -> Path:
    """The real pyproject.toml with just enough package for setuptools to build its metadata."""
    dest.mkdir()
    shutil.copy(REPO / "pyproject.toml", dest)
    shutil.copy(REPO / "README.md", dest)
    (dest / "src" / "stardomain").mkdir(parents=True)
    shutil.copy(REPO / "src" / "stardomain" / "__init__.py", dest / "src" / "stardomain")
    return dest


def _fresh_venv(root: Path, torch_version: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, capture_output=True)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    _fake_dist_info(site, torch_version)
    # this environment's numpy, scipy, setuptools, ... after the venv's own site-packages
    (site / "zz_outer_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _dry_run(tmp_path: Path, torch_version: str, find_links: Path) -> subprocess.CompletedProcess[str]:
    python = _fresh_venv(tmp_path / "venv", torch_version)
    project = _project_copy(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no machine-wide caps or constraints: only pyproject.toml decides
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "--dry-run",
        "--report",
        str(tmp_path / "report.json"),
        "--quiet",
        "--no-index",
        "--find-links",
        str(find_links),
        "--no-build-isolation",
        "-e",
        str(project),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def _installs(tmp_path: Path) -> dict[str, str]:
    report = json.loads((tmp_path / "report.json").read_text())
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}


@pytest.fixture
def offered(tmp_path: Path) -> Path:
    """A find-links folder offering torch 2.13.0, the version CI pins: pip takes it if it must."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    _fake_wheel(folder, "2.13.0")
    return folder


def test_install_keeps_a_newer_torch_in_the_range(tmp_path: Path, offered: Path) -> None:
    result = _dry_run(tmp_path, "2.15.0", offered)
    assert result.returncode == 0, result.stderr
    installs = _installs(tmp_path)
    assert "stardomain" in installs
    assert "torch" not in installs, f"pip would replace the user's torch 2.15.0 with {installs.get('torch')}"


def test_install_replaces_a_torch_below_the_range(tmp_path: Path, offered: Path) -> None:
    """The negative control: the same dry run does report a torch outside the range, so the test above can fail."""
    result = _dry_run(tmp_path, "2.12.0", offered)
    assert result.returncode == 0, result.stderr
    assert _installs(tmp_path).get("torch") == "2.13.0"


def test_ci_and_readme_install_with_the_constraints_file() -> None:
    """CI and the README's test command pin the local CPU wheel; pyproject itself only gives a range."""
    constraints = (REPO / ".ci" / "constraints.txt").read_text().split()
    assert "torch==2.13.0" in constraints
    for where in (REPO / ".ci" / "run", REPO / "README.md"):
        installs = [line for line in where.read_text().splitlines() if "pip install" in line and '-e ".[test' in line]
        assert installs and all("-c .ci/constraints.txt" in line for line in installs), (where.name, installs)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch>=2.13,<3"' in pyproject and "torch==" not in pyproject
