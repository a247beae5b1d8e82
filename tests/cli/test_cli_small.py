"""Small things a researcher trips on: --version, info, help text everywhere, align without --out, star --force."""

from __future__ import annotations

import json
import platform

import click
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from click.testing import CliRunner

TINY = ["-d", "digits", "-m", "mlp", "-o", "width=8", "-o", "depth=1", "-e", "1", "--subset", "200", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from stardomain.cli import cli

    out = tmp_path_factory.mktemp("small") / "zoo"
    r = CliRunner().invoke(cli, ["train", *TINY, "--n", "2", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


def test_version_names_stardomain_torch_and_python(capsys):
    r = run_cli(capsys, "--version")
    assert r.code == 0
    line = r.out.strip()
    assert line.startswith("stardomain ") and f"torch {torch.__version__}" in line and f"Python {platform.python_version()}" in line


def test_info_shows_versions_devices_and_solvers(capsys):
    from stardomain.permute.lap import available_lap_solvers

    r = run_cli(capsys, "info")
    assert r.code == 0, r.err
    assert f"torch:    {torch.__version__}" in r.out and f"python:   {platform.python_version()}" in r.out
    devices = next(ln for ln in r.out.splitlines() if ln.startswith("devices:"))
    assert "cpu" in devices and ("cuda:0" in devices) == torch.cuda.is_available()
    solvers = next(ln for ln in r.out.splitlines() if ln.startswith("matching LAP solvers:"))
    assert all(s in solvers for s in available_lap_solvers())


def _walk(cmd: click.Command, path: str):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _walk(sub, f"{path} {name}")


def test_every_command_and_option_has_help_text():
    from stardomain.cli import cli

    missing = []
    for path, cmd in _walk(cli, "stardomain"):
        if not (cmd.help or "").strip():
            missing.append(path)
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip():
                missing.append(f"{path} {p.opts[0]}")
    assert not missing, "no help text: " + ", ".join(missing)
    assert len(list(_walk(cli, "stardomain"))) >= 9  # the walk really visits the commands


def test_align_without_out_prints_and_writes_nothing(zoo, capsys):
    a, b = zoo / "seed-0.safetensors", zoo / "seed-1.safetensors"
    before = sorted(p.name for p in zoo.iterdir())
    r = run_cli(capsys, "align", a, b)
    assert r.code == 0, r.err
    assert "l2" in r.out and "not saved (pass --out to keep it)" in r.out
    r = run_cli(capsys, "align", a, b, "--json")
    result = json.loads(r.out)
    assert result["out"] is None and result["l2_after"] < result["l2_before"]
    assert sorted(p.name for p in zoo.iterdir()) == before


def test_star_refuses_to_overwrite_unless_forced(zoo, tmp_path, capsys):
    out = tmp_path / "star.safetensors"
    base = ["star", "--sources", zoo, "-e", "1", "-q", "--out", out]
    assert run_cli(capsys, *base).code == 0
    first = out.read_bytes(), out.with_suffix(".json").read_bytes()
    r = run_cli(capsys, *base, "--seed", "1")
    assert r.code == 2
    assert_one_line_error(r, str(out), "--force")
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == first  # untouched
    r = run_cli(capsys, *base, "--seed", "1", "--force")
    assert r.code == 0, r.err
    assert out.read_bytes() != first[0]  # a new star (another seed) replaced the old one
    assert json.loads(out.with_suffix(".json").read_text())["metrics"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_demo_final_line_says_what_was_done_and_where_the_report_is(tmp_path):
    from stardomain._util.console import summary_line

    (tmp_path / "stars").mkdir()
    for name in ("main-z4", "main-z2"):
        (tmp_path / "stars" / f"{name}.safetensors").write_bytes(b"")
    results = {
        "models": {"sources": ["seed-0", "seed-1", "seed-2", "seed-3"], "held_out": ["seed-1000"]},
        "barriers": {"summary": {"regular-regular": {"n_pairs": 3}, "star-source": {"n_pairs": 4}}},
        "bma": {},
    }
    line = summary_line(results, tmp_path / "report.md", 75.0)
    assert line == (
        f"done in 1:15: 4 source and 1 held-out models, 2 star models, a barrier study over 7 pairs, a BMA study; "
        f"report: {tmp_path / 'report.md'}"
    )
