"""Errors that name the difference: every mismatch and every broken metadata file is one line, exit 2, nothing written.

Fed through the CLI where the user meets them (eval, align, barrier, star, bma): a metadata file
without ``arch.num_classes``, one that is not JSON, one with a wrong type, weights that do not fit
their architecture (names the first tensor), and pairs / zoos / stars of different architectures
(names the option: "width 8 vs 16").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli
from click.testing import CliRunner

from stardomain._util.diff import describe_difference, first_difference, state_mismatch
from stardomain.checkpoints import store

TINY = ["-d", "digits", "-m", "mlp", "-o", "depth=1", "-e", "1", "--subset", "200", "--device", "cpu", "-q"]


def _cli_ok(*args: object) -> None:
    from stardomain.cli import cli

    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output


def _copy_ckpt(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def _edit_meta(path: Path, edit) -> Path:
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """zoo8/ (two width-8 sources), w16/ (one width-16 model), star.safetensors from zoo8, and broken copies."""
    root = tmp_path_factory.mktemp("errors")
    _cli_ok("train", *TINY, "-o", "width=8", "--n", 2, "--out", root / "zoo8")
    _cli_ok("train", *TINY, "-o", "width=16", "--seed", 5, "--out", root / "w16")
    _cli_ok("star", "--sources", root / "zoo8", "-e", 1, "--device", "cpu", "-q", "--out", root / "star.safetensors")
    good = root / "zoo8" / "seed-0.safetensors"
    bad = root / "bad"
    cases = {
        "no-classes": _edit_meta(_copy_ckpt(good, bad / "no-classes.safetensors"), lambda m: m["arch"].pop("num_classes")),
        "wrong-type": _edit_meta(_copy_ckpt(good, bad / "wrong-type.safetensors"), lambda m: m["arch"].update(num_classes="ten")),
        "not-json": _copy_ckpt(good, bad / "not-json.safetensors"),
        "no-shape": _edit_meta(_copy_ckpt(good, bad / "no-shape.safetensors"), lambda m: m["arch"].pop("in_shape")),
    }
    cases["not-json"].with_suffix(".json").write_text('{"arch": {"name": "mlp", ')
    # weights of the width-16 model under the width-8 model's metadata (a consistent hash: only the shapes are wrong)
    state16, _ = store.load_state(root / "w16" / "seed-5.safetensors")
    meta8 = store.read_metadata(good)
    meta8.pop("sha256")
    cases["shape"] = store.save(bad / "shape.safetensors", state16, meta8)
    return root, cases


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# case -> (the file the message must name, as a suffix of the checkpoint's stem; what else it must say)
META_NEEDLES = {
    "no-classes": (".json", ["arch.num_classes"]),
    "wrong-type": (".json", ["arch.num_classes", "'ten'"]),
    "not-json": (".json", ["not valid JSON"]),
    "no-shape": (".json", ["arch.in_shape"]),
    "shape": (".safetensors", ["tensor 'layers.0.weight' has shape (16, 64) but the architecture needs (8, 64)"]),
}


@pytest.mark.parametrize("case", sorted(META_NEEDLES))
def test_broken_checkpoint_is_one_line_in_every_command(ckpts, case, capsys):
    root, cases = ckpts
    bad = cases[case]
    good = root / "zoo8" / "seed-1.safetensors"
    out = root / "out"
    # a zoo holding the broken member, for star; a star with broken metadata, for bma
    zoo_dir = root / f"zoo-{case}"
    if not zoo_dir.exists():
        _copy_ckpt(good, zoo_dir / "seed-1.safetensors")
        _copy_ckpt(bad, zoo_dir / "seed-0.safetensors")
    star_copy = root / f"star-{case}.safetensors"
    if not star_copy.exists():
        _copy_ckpt(root / "star.safetensors", star_copy)
        if case == "shape":  # star metadata, width-16 weights
            meta = store.read_metadata(star_copy)
            meta.pop("sha256")
            store.save(star_copy, store.load_state(root / "w16" / "seed-5.safetensors")[0], meta)
        else:
            shutil.copy(bad.with_suffix(".json"), star_copy.with_suffix(".json"))
            if case != "not-json":  # keep the star's own identity, with the same breakage
                star_meta = json.loads((root / "star.json").read_text())
                broken = json.loads(bad.with_suffix(".json").read_text())
                star_meta["arch"] = broken["arch"]
                star_copy.with_suffix(".json").write_text(json.dumps(star_meta))
    before = _files(root)
    suffix, said = META_NEEDLES[case]
    needles, zoo_needles, star_needles = ([f"{stem}{suffix}", *said] for stem in (bad.stem, "seed-0", star_copy.stem))
    commands = [
        (["eval", bad], needles),
        (["align", bad, good, "--out", out / "aligned.safetensors"], needles),
        (["align", good, bad, "--out", out / "aligned.safetensors"], needles),
        (["barrier", good, bad, "--points", "3", "--out", out / "curve.json", "--plot", out / "curve.png"], needles),
        (["star", "--sources", zoo_dir, "-e", "1", "-q", "--out", out / "star.safetensors"], zoo_needles),
        (
            [
                "bma",
                "--star",
                star_copy,
                "--sources",
                root / "zoo8",
                "--max-samples",
                "2",
                "--out",
                out / "bma.json",
                "--plot",
                out / "bma.png",
            ],
            star_needles,
        ),
    ]
    for args, needles in commands:
        r = run_cli(capsys, *args)
        assert r.code == 2, (args, r.err)
        assert_one_line_error(r, *needles)
        assert r.err.startswith("error: ")
    assert _files(root) == before  # nothing written, nothing touched
    assert not out.exists()


def test_different_architectures_name_the_option(ckpts, capsys):
    root, _ = ckpts
    a, b = root / "zoo8" / "seed-0.safetensors", root / "w16" / "seed-5.safetensors"
    mixed = root / "mixed"
    _copy_ckpt(a, mixed / "seed-0.safetensors")
    _copy_ckpt(b, mixed / "seed-5.safetensors")
    out = root / "out2"
    before = _files(root)
    for args in (["align", a, b, "--out", out / "x.safetensors"], ["barrier", a, b, "--points", "3", "--out", out / "c.json"]):
        r = run_cli(capsys, *args)
        assert r.code == 2
        assert_one_line_error(r, "different architectures", "width 8 vs 16")
    r = run_cli(capsys, "star", "--sources", mixed, "-e", "1", "-q", "--out", out / "s.safetensors")
    assert r.code == 2
    assert_one_line_error(r, "width 8", "width 16")
    r = run_cli(
        capsys, "bma", "--star", root / "star.safetensors", "--other-sources", root / "w16", "--max-samples", "2", "--out", out / "b.json"
    )
    assert r.code == 2
    assert_one_line_error(r, "width")
    r = run_cli(capsys, "star", "--sources", root / "zoo8", "--init", b, "-e", "1", "-q", "--out", out / "s.safetensors")
    assert r.code == 2  # an --init of another width: named, not a raw load_state_dict error
    assert_one_line_error(r, f"--init {b}", "does not fit", "tensor 'layers.0.weight' has shape (16, 64)", "drop --init")
    assert _files(root) == before and not out.exists()


def test_retraining_into_a_folder_of_another_run_names_the_option(ckpts, capsys):
    root, _ = ckpts
    before = _files(root)
    r = run_cli(capsys, "train", *TINY, "-o", "width=8", "--lr", "0.2", "--n", "2", "--out", root / "zoo8")
    assert r.code == 2
    assert_one_line_error(r, "already holds a different run", "recipe.lr 0.05 there", "recipe.lr 0.2 requested")
    assert _files(root) == before


def test_difference_helpers():
    a = {"name": "mlp", "num_classes": 10, "in_shape": [1, 8, 8], "options": {"width": 16, "depth": 2}}
    assert describe_difference(a, {**a, "options": {"width": 32, "depth": 2}}) == "width 16 vs 32"
    assert describe_difference(a, {**a, "options": {"width": 16, "depth": 3}}) == "depth 2 vs 3"
    assert describe_difference(a, {**a, "num_classes": 100}) == "classes 10 vs 100"
    assert describe_difference(a, {**a, "in_shape": [3, 32, 32]}) == "input shape (1, 8, 8) vs (3, 32, 32)"
    # the architecture name comes first even when options differ too
    assert describe_difference(a, {**a, "name": "vgg11", "options": {}}) == "architecture mlp vs vgg11"
    assert describe_difference({"dataset": "digits"}, {"dataset": "mnist"}, what="zoo") == "zoo: dataset digits vs mnist"
    assert describe_difference({"recipe": {"lr": 0.1}}, {"recipe": {"lr": 0.1, "epochs": 3}}) == "recipe.epochs (not set) vs 3"
    assert describe_difference(a, dict(a)) is None and first_difference([1, 8, 8], (1, 8, 8)) is None

    class T:
        def __init__(self, *shape):
            self.shape = shape

    assert (
        state_mismatch({"w": T(2, 3), "b": T(2)}, {"w": T(4, 3), "b": T(2)})
        == "tensor 'w' has shape (4, 3) but the architecture needs (2, 3)"
    )
    assert state_mismatch({"w": T(2, 3), "b": T(2)}, {"w": T(2, 3)}) == "tensor 'b' is missing"
    assert state_mismatch({"w": T(2, 3)}, {"w": T(2, 3), "x": T(1), "y": T(1)}) == "unexpected tensor 'x' (and 1 more)"
    assert state_mismatch({"w": T(2, 3)}, {"w": T(2, 3)}) is None
