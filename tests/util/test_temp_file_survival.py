"""Issue 30, item 2: the temp-file cleanup removes stardomain's own temps only, never a user's file.

Temp files are ``.stardomain-<target>.<random>.sd.tmp``; the cleanup looks only into the exact folders a command
writes (never a walk of the tree below, never through a symlink below the output folder, a symlinked ``--out``
itself being the output folder) and leaves the old naming (``.<name>.<random>.tmp``) alone. The tests plant
user files of every look-alike name, backdated so that their age never protects them, run ``stardomain run``,
``train`` and ``star`` (the smallest settings) and check every one survives, byte for byte, while a temp a
killed stardomain left in the output folder is still removed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import tiny_config
from click.testing import CliRunner

HOUR_AGO = time.time() - 3600
TRAIN = ["train", "-d", "digits", "-m", "mlp", "-o", "depth=1", "-o", "width=8", "-e", "1", "--subset", "200", "--device", "cpu", "-q"]


def _cli(*args: object) -> None:
    from stardomain.cli import cli

    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output


def _plant(root: Path, names: list[str]) -> dict[Path, bytes]:
    """User files at ``root / name``, backdated an hour (older than any run): their paths and contents."""
    files = {}
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"the user's {name}\n".encode())
        os.utime(p, (HOUR_AGO, HOUR_AGO), follow_symlinks=False)
        files[p] = p.read_bytes()
    return files


def _symlink(link: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


def _assert_survived(files: dict[Path, bytes]) -> None:
    gone = sorted(str(p) for p, data in files.items() if not p.is_file() or p.read_bytes() != data)
    assert not gone, f"user files deleted or changed: {gone}"


def _assert_removed(paths: list[Path]) -> None:
    left = [str(p) for p in paths if os.path.lexists(p)]
    assert not left, f"stardomain's own stray temps left: {left}"


# every old-style look-alike of issue 30 (and of stardomain's own files before the new naming: left alone)
OLD_STYLE = [".thesis.tex.x9.tmp", "sub/.notes.txt.ab12cd.tmp", "notes/.draft.md.k3j2.tmp", "notes/deep/.a.b.c_d.tmp"]
# the new pattern, but in folders stardomain does not own (below the output folder)
NEW_STYLE_ELSEWHERE = [
    "sub/.stardomain-notes.txt.ab12cd34.sd.tmp",
    "notes/.stardomain-results.json.ab12cd34.sd.tmp",
    "notes/deep/.stardomain-seed-0.safetensors.k3j2h4g5.sd.tmp",
]
# outside the output folder, reached through a symlink inside it
THROUGH_LINK = [".stardomain-results.json.ab12cd34.sd.tmp", ".stardomain-seed-0.safetensors.ab12cd34.sd.tmp", ".thesis.tex.x9.tmp"]


# -- the helper itself ---------------------------------------------------------------------------------------------


def test_remove_stray_temps_stays_in_the_named_folders(tmp_path: Path) -> None:
    from stardomain._util.fileio import is_temp_name, remove_stray_temps, temp_path

    out, elsewhere = tmp_path / "other", tmp_path / "elsewhere"
    user = _plant(out, [*OLD_STYLE, *NEW_STYLE_ELSEWHERE, ".results.json.ab12cd34.tmp", "zoo/.stardomain-x.ab12.sd.tmp"])
    user |= _plant(elsewhere, THROUGH_LINK)
    _symlink(out / "ext", elsewhere)
    _symlink(out / "claims", elsewhere)  # an owned name, but a symlink out of the folder: never entered
    (out / ".stardomain-report.md.ab12cd34.sd.tmp").symlink_to(elsewhere / ".thesis.tex.x9.tmp")  # a symlink: kept
    link = tmp_path / "link"
    link.symlink_to(out, target_is_directory=True)
    own = [temp_path(out / "results.json", "k1ll3d00"), temp_path(out / "zoo" / "main" / "seed-0.safetensors", "x_y9")]
    _plant(tmp_path, [str(p.relative_to(tmp_path)) for p in own])

    removed = remove_stray_temps(link, time.time(), subfolders=[".", "claims", "ext/..", "zoo/main", "/etc", "missing"])
    assert sorted(p.name for p in removed) == sorted(p.name for p in own)
    _assert_removed(own)
    _assert_survived(user)
    assert os.path.islink(out / ".stardomain-report.md.ab12cd34.sd.tmp")
    # a name is a temp of target t only when exactly prefix(t) + random + suffix
    assert is_temp_name(".stardomain-seed-0.safetensors.ab_12.sd.tmp", ["seed-0.safetensors"])
    assert not is_temp_name(".stardomain-seed-0.safetensors.json.ab12.sd.tmp", ["seed-0.safetensors"])
    assert not is_temp_name(".seed-0.safetensors.ab12cd34.tmp")


# -- the commands --------------------------------------------------------------------------------------------------


def test_run_through_a_symlinked_out_deletes_no_user_file(tmp_path: Path) -> None:
    """``stardomain run exp.yaml --out link`` (issue 30 deleted other/.thesis.tex.x9.tmp and other/sub/...)."""
    other, elsewhere = tmp_path / "other", tmp_path / "elsewhere"
    user = _plant(other, [*OLD_STYLE, *NEW_STYLE_ELSEWHERE, ".results.json.ab12cd34.tmp", ".report.md.k3j2h4g5.tmp"])
    user |= _plant(elsewhere, THROUGH_LINK)
    _symlink(other / "ext", elsewhere)
    _symlink(other / "zoo" / "mine", elsewhere)  # a symlinked folder where zoos live: never entered
    own = [other / ".stardomain-results.json.k1ll3d00.sd.tmp", other / "claims" / ".stardomain-train_main_seed-0.claim.00ff.sd.tmp"]
    _plant(tmp_path, [str(p.relative_to(tmp_path)) for p in own])  # what a killed run left: removed
    link = tmp_path / "link"
    link.symlink_to(other, target_is_directory=True)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config("survive")))

    _cli("run", cfg, "--out", link, "-q")
    assert (other / "results.json").is_file()
    _assert_survived(user)
    _assert_removed(own)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[Path, bytes], list[Path]]:
    """``stardomain train --n 2 --out plink`` (plink -> proj, a folder holding the user's files): (proj, user, own)."""
    root = tmp_path_factory.mktemp("survive_train")
    proj, elsewhere = root / "proj", root / "elsewhere"
    user = _plant(
        proj, [*OLD_STYLE, *NEW_STYLE_ELSEWHERE, ".seed-0.safetensors.ab12cd34.tmp", "..seed-1.train-state.safetensors.ab12cd34.tmp"]
    )
    user |= _plant(elsewhere, THROUGH_LINK)
    _symlink(proj / "ext", elsewhere)
    own = [proj / ".stardomain-seed-0.safetensors.k1ll3d00.sd.tmp", proj / ".stardomain-.seed-1.train-state.json.k1ll3d01.sd.tmp"]
    _plant(root, [str(p.relative_to(root)) for p in own])
    (root / "plink").symlink_to(proj, target_is_directory=True)
    _cli(*TRAIN, "--n", "2", "--out", root / "plink")
    return proj, user, own


def test_train_deletes_no_user_file(trained) -> None:
    """``stardomain train ... --out proj`` (issue 30 deleted proj/notes/.draft.md.k3j2.tmp)."""
    proj, user, own = trained
    assert (proj / "seed-1.safetensors").is_file()
    _assert_survived(user)
    _assert_removed(own)


def test_star_deletes_no_user_file(trained, tmp_path: Path) -> None:
    """``stardomain star --out slink/star.safetensors``: only the star's own temps in the star's own folder go."""
    zoo, _, _ = trained
    sdir, elsewhere = tmp_path / "sdir", tmp_path / "elsewhere"
    user = _plant(
        sdir,
        [
            *OLD_STYLE,
            *NEW_STYLE_ELSEWHERE,
            ".star.safetensors.ab12cd34.tmp",  # the old naming of the star's own temp: left alone
            ".stardomain-thesis.tex.ab12cd34.sd.tmp",  # the new pattern, but not one of the star's files
            "sub/.stardomain-star.safetensors.ab12cd34.sd.tmp",  # the star's name, in a subfolder
        ],
    )
    user |= _plant(elsewhere, [*THROUGH_LINK, ".stardomain-star.safetensors.ab12cd34.sd.tmp"])
    _symlink(sdir / "ext", elsewhere)
    own = [sdir / ".stardomain-star.safetensors.k1ll3d00.sd.tmp", sdir / ".stardomain-star.json.k1ll3d01.sd.tmp"]
    _plant(tmp_path, [str(p.relative_to(tmp_path)) for p in own])
    (tmp_path / "slink").symlink_to(sdir, target_is_directory=True)

    _cli("star", "--sources", zoo, "-e", "1", "--device", "cpu", "-q", "--out", tmp_path / "slink" / "star.safetensors")
    assert (sdir / "star.safetensors").is_file()
    _assert_survived(user)
    _assert_removed(own)
