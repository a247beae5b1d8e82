"""The README's Python API block, run verbatim in a temporary folder: the documented API is the real one."""

from __future__ import annotations

import re

from paths import REPO


def test_readme_python_api_block_runs(tmp_path, monkeypatch, capsys) -> None:
    section = (REPO / "README.md").read_text().split("## Python API\n", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, "the Python API section has no python block"
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md:Python API", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and (tmp_path / "runs" / "api" / "star.safetensors").exists()
