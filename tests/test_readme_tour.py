"""The README's "CLI tour" block, run verbatim, start to end, in a temporary folder.

Whatever the block says is run, line by line, through ``stardomain.cli.main`` (the entry
point). Skipped, with the reason printed: lines whose data is absent (a ``--data-root`` that
does not exist, a downloadable dataset not on this machine), lines that use what a skipped
line would have written, and ``run``/``demo`` (whole experiments: minutes; set
``STARDOMAIN_TOUR_FULL=1`` to run them too). After each command, the figures it wrote are
checked against the models and data they must come from.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import warnings
from pathlib import Path

import pytest
from cli_helpers import run_cli
from paths import REPO

SLOW = {"run", "demo"}
pytestmark = pytest.mark.optional_data  # which lines run depends on the optional data: run again without it (.ci/run)


def tour_lines(readme: Path = REPO / "README.md") -> list[str]:
    """The lines of the first ```bash block under '## CLI tour'."""
    text = readme.read_text()
    section = text.split("\n## CLI tour", 1)
    assert len(section) == 2, "README.md has no '## CLI tour' section"
    block = re.search(r"```bash\n(.*?)```", section[1], re.S)
    assert block, "the CLI tour has no ```bash block"
    return [ln for ln in block.group(1).splitlines() if shlex.split(ln, comments=True)]


def _option(args: list[str], *names: str) -> str | None:
    for i, a in enumerate(args[:-1]):
        if a in names:
            return args[i + 1]
    return None


def _dataset_missing(name: str) -> bool:
    from stardomain import data
    from stardomain.errors import StardomainError

    if data.canonical_name(name) in ("digits", "imagefolder"):
        return False
    try:
        data.load_dataset(name, download=False, subset=10)
    except StardomainError:
        return True
    return False


def _bare_machine_missing(name: str) -> bool:
    """On a fresh machine without optional data only the embedded digits (and image folders, by root) are there."""
    from stardomain import data

    return data.canonical_name(name) not in ("digits", "imagefolder")


def skip_reason(args: list[str], skipped_outputs: list[str], missing=_dataset_missing) -> str | None:
    """Why a tour line cannot run here (None: it runs); ``missing(name)`` says whether a dataset is absent."""
    if args[0] in SLOW and not os.environ.get("STARDOMAIN_TOUR_FULL"):
        return f"`stardomain {args[0]}` runs a whole experiment (minutes); STARDOMAIN_TOUR_FULL=1 runs it"
    root = _option(args, "--data-root")
    if root is not None and not Path(root).expanduser().exists():
        return f"its data folder {root} is not on this machine"
    name = _option(args, "-d", "--dataset")
    if name is not None and missing(name):
        return f"dataset {name} is not on this machine"
    for out in skipped_outputs:
        if any(a == out or a.startswith(out.rstrip("/") + "/") for a in args):
            return f"it uses {out}, written by a skipped line"
    return None


def _meta(path: str | Path) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text())


def check_figures(args: list[str], out: str) -> None:
    """The figures a tour command wrote come from the models and data it was pointed at."""
    cmd = args[0]
    if cmd == "eval" and "--json" in args:
        res, meta = json.loads(out), _meta(args[1])
        assert res["test_acc"] == pytest.approx(meta["metrics"]["test_acc"], abs=1e-6)  # the checkpoint's own number
        assert res["data"]["name"] == meta["data"]["name"] and res["data"]["overridden"] == []
    if cmd == "train":
        folder = Path(_option(args, "--out"))
        role = _option(args, "--role") or "source"
        subset, subset_seed = _option(args, "--subset"), _option(args, "--subset-seed")
        for meta in (json.loads(p.read_text()) for p in folder.glob("seed-*.json")):
            if meta["seed"] in _seeds(args):
                assert meta["role"] == role and meta["data"]["subset"] == (int(subset) if subset else None)
                assert meta["data"]["subset_seed"] == (int(subset_seed or 0) if subset else None)
    if cmd == "barrier":
        meta = _meta(args[1])
        rec = meta["data"]
        if rec["subset"] is not None:  # evaluated (and BN re-estimated) on exactly the recorded subset
            assert f"subset {rec['subset']} (seed {rec['subset_seed']})" in out and f"train n={rec['subset']}" in out
        elif rec["name"] == "digits":
            assert "train n=1437" in out
        assert "(as recorded in the checkpoints)" in out
        if _option(args, "--out"):
            res = json.loads(Path(_option(args, "--out")).read_text())
            assert res["data"]["recorded"] == meta["data"] and res["data"]["overridden"] == []
    if cmd == "star":
        from stardomain.cli import repeat_path

        repeats = int(_option(args, "--repeats") or 1)
        outs = [_option(args, "--out")] if repeats == 1 else [repeat_path(_option(args, "--out"), r) for r in range(repeats)]
        star_seeds = []
        for path in outs:
            meta = _meta(path)
            roles = {_meta(Path(_option(args, "--sources")) / Path(s["path"]).name)["role"] for s in meta["sources"]}
            assert roles == {"source"}, roles  # held-out models never become sources
            seeds = [s["seed"] for s in meta["sources"]]
            assert seeds == sorted(seeds) and meta["seed"] not in seeds and meta["role"] == "star"
            k = _option(args, "--n-sources")
            if k is not None:
                assert len(seeds) == int(k)
            assert f"({_seed_phrase(seeds)} of" in out
            star_seeds.append(meta["seed"])
        assert len(set(star_seeds)) == repeats  # repeated stars have distinct, recorded seeds
    if cmd == "bma" and _option(args, "--out"):
        res, star = json.loads(Path(_option(args, "--out")).read_text()), _meta(_option(args, "--star"))
        assert [m["sha256"] for m in res["sources"]["models"]] == [s["sha256"] for s in star["sources"]]
        assert res["ensemble"]["k"][-1] == min(int(_option(args, "--max-samples") or 20), len(star["sources"]))


def _seeds(args: list[str]) -> list[int]:
    n, start, seed = _option(args, "--n"), _option(args, "--seed-start"), _option(args, "--seed", "-s")
    if n is not None:
        return list(range(int(start or 0), int(start or 0) + int(n)))
    return [int(seed or 0)]


def _seed_phrase(seeds: list[int]) -> str:
    from stardomain.training.zoo import seed_list

    return seed_list(seeds)


def test_readme_cli_tour_runs_verbatim(tmp_path, capsys, monkeypatch):
    lines = tour_lines()
    assert lines and all(shlex.split(ln, comments=True)[0] == "stardomain" for ln in lines)
    monkeypatch.chdir(tmp_path)
    if os.environ.get("STARDOMAIN_TOUR_FULL"):
        shutil.copytree(REPO / "configs", tmp_path / "configs")
    skipped: list[str] = []
    ran = 0
    for line in lines:
        args = [os.path.expanduser(a) if a.startswith("~") else a for a in shlex.split(line, comments=True)[1:]]
        reason = skip_reason(args, skipped)
        if reason is not None:
            warnings.warn(f"README tour line skipped: {line.split('#')[0].strip()} ({reason})", stacklevel=1)
            skipped += [v for v in (_option(args, "--out"),) if v]
            continue
        r = run_cli(capsys, *args)
        assert r.code == 0, f"{line}\n{r.err}"
        check_figures(args, r.out)
        ran += 1
    # every line that runs on a fresh machine without the optional data (digits only) must have run here too
    bare, bare_skipped = 0, []
    for line in lines:
        args = shlex.split(line, comments=True)[1:]
        if skip_reason(args, bare_skipped, missing=_bare_machine_missing) is None:
            bare += 1
        else:
            bare_skipped += [v for v in (_option(args, "--out"),) if v]
    assert bare >= len(lines) // 2, "most of the tour must run on the embedded digits"
    assert ran >= bare, f"only {ran} tour lines ran; {bare} run even without the optional data"
    # run from the repository root, the tour would leave `git status` clean: everything it wrote is ignored
    written = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "configs")]
    assert written and not _not_ignored(written), f"the tour writes files git does not ignore: {_not_ignored(written)[:5]}"


def _not_ignored(paths: list[str]) -> list[str]:
    """Those of ``paths`` (relative to the repository root) that the repository's .gitignore does not ignore."""
    import subprocess

    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    r = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", "--stdin"], input="\n".join(paths), capture_output=True, text=True
    )
    assert r.returncode in (0, 1), r.stderr
    return sorted(set(paths) - set(r.stdout.splitlines()))


def test_the_tour_writes_only_under_runs_tour():
    """Every path a tour line writes (--out, --plot) is under runs/tour/, which git ignores: the checkout stays clean."""
    outputs = []
    for line in tour_lines():
        args = shlex.split(line, comments=True)[1:]
        outputs += [v for v in (_option(args, "--out"), _option(args, "--plot")) if v]
    assert len(outputs) >= 10
    assert [o for o in outputs if not o.startswith("runs/tour/")] == []
    assert _not_ignored([f"{o}/x.safetensors" for o in outputs] + outputs + ["runs/demo/report.md"]) == []
