"""Files a user can share: every file stardomain writes gets the user's normal mode, atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli

from stardomain._util import fileio
from stardomain.checkpoints import store

RUN = {
    "name": "modes",
    "dataset": "digits",
    "subset": 300,
    "seed": 0,
    "device": "cpu",
    "model": {"name": "mlp", "options": {"depth": 1, "width": 8}},
    "train": {"epochs": 1},
    "sources": 2,
    "held_out": 1,
    "star": {"recipe": {"epochs": 1}},
    "eval": {"points": 3, "max_pairs": 1, "bn_samples": 64},
    "studies": {"barriers": True, "distances": True, "n_sources": {"sizes": [2]}, "bma": {"max_samples": 2}},
}


@pytest.fixture
def umask():
    """Run the test under a chosen umask, restored afterwards (os.umask is process-wide)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_helpers_follow_the_umask_and_leave_no_temp_file(tmp_path, umask):
    umask(0o022)
    a = fileio.atomic_write_bytes(tmp_path / "a.bin", b"x")
    b = fileio.atomic_write_json(tmp_path / "sub" / "b.json", {"z": 1, "a": [1, 2]})
    c = fileio.atomic_write_text(tmp_path / "c.md", "# é\n")
    assert [mode(p) for p in (a, b, c)] == [0o644] * 3
    assert b.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "z": 1\n}\n' and c.read_text(encoding="utf-8") == "# é\n"
    umask(0o077)  # a private umask stays private: the mode is the umask's, not a hard-coded 0644
    assert mode(fileio.atomic_write_bytes(tmp_path / "p.bin", b"x")) == 0o600
    umask(0o002)
    assert mode(fileio.atomic_write_bytes(tmp_path / "g.bin", b"x")) == 0o664
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]


def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path):
    target = fileio.atomic_write_bytes(tmp_path / "keep.txt", b"old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fileio.atomic_write_with(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_figures_are_png_plus_pdf(tmp_path, umask):
    from matplotlib.figure import Figure

    from stardomain.report.plots import save_figure

    umask(0o022)
    fig = Figure()
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    png = save_figure(fig, tmp_path / "f.png")
    pdf = png.with_suffix(".pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert mode(png) == mode(pdf) == 0o644
    first = pdf.read_bytes()
    save_figure(fig, tmp_path / "f.png")
    assert pdf.read_bytes() == first  # no timestamp in the PDF: a re-run gives the same bytes


def test_every_file_of_a_small_run_is_0644(tmp_path, capsys, umask):
    """Checkpoints, JSON, report.md, PNG, PDF, cache and events.jsonl of `run`, plus every CLI output."""
    umask(0o022)
    cfg = tmp_path / "modes.yaml"
    cfg.write_text(yaml.safe_dump(RUN))
    run_dir = tmp_path / "run"
    r = run_cli(capsys, "-q", "run", cfg, "--out", run_dir)
    assert r.code == 0, r.err
    zoo = run_dir / "zoo" / "main"
    a, b = sorted(zoo.glob("seed-*.safetensors"))[:2]
    star = next((run_dir / "stars").glob("*.safetensors"))
    cli_out = tmp_path / "cli"
    for args in (
        ["train", "-o", "width=8", "-o", "depth=1", "-e", "1", "--subset", "100", "--seed", "7", "--out", cli_out / "zoo"],
        ["align", a, b, "--out", cli_out / "aligned.safetensors"],
        ["barrier", a, b, "--points", "3", "--out", cli_out / "curve.json", "--plot", cli_out / "curve.png"],
        ["star", "--sources", zoo, "-e", "1", "--out", cli_out / "star.safetensors"],
    ):
        res = run_cli(capsys, "-q", *args)
        assert res.code == 0, (args, res.err)
    res = run_cli(
        capsys,
        "-q",
        "bma",
        "--star",
        cli_out / "star.safetensors",
        "--max-samples",
        "2",
        "--out",
        cli_out / "bma.json",
        "--plot",
        cli_out / "bma.png",
    )
    assert res.code == 0, res.err

    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != cfg]
    names = {p.name for p in files}
    for expected in (
        "results.json",
        "report.md",
        "events.jsonl",
        "experiment.json",
        "barrier_curves.png",
        "barrier_curves.pdf",
        "bma.png",
        "bma.pdf",
        "curve.png",
        "curve.pdf",
        "curve.json",
        "bma.json",
        "aligned.safetensors",
        "aligned.json",
        "star.safetensors",
        "seed-7.safetensors",
        "seed-0.json",
        star.name,
    ):
        assert expected in names, expected
    assert any(p.parent.parent.name == "cache" for p in files)  # the evaluation cache is there too
    wrong = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files if mode(p) != 0o644}
    assert not wrong, wrong
    assert store.load(star).meta["kind"] == "star"
