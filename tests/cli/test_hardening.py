"""Issue 25: every bad input refused in one line before any work, corrupt files healed or named, no temp file left.

The table feeds each bad input through the CLI where a user meets it (YAML keys, ``train`` options,
corrupt files, click usage) and asserts: exactly one stderr line, starting ``error:``, exit code 2,
no unit run (no zoo member, no checkpoint), and nothing written or lost (the folder's files and bytes
are the same before and after). The kill test SIGKILLs ``stardomain run`` at a few moments, resumes it
to completion, lists the run folder (no ``*.tmp``) and compares results.json with an uninterrupted run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml
from cli_helpers import Result, run_cli, tiny_config

BASE = tiny_config("hard", train={"epochs": 2})
TRAIN = ["train", "-d", "digits", "-m", "mlp", "-o", "depth=1", "-o", "width=8", "-e", "1", "--subset", "200", "--device", "cpu", "-q"]
INF, NAN = math.inf, math.nan
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # subprocesses compute like the suite (one thread)


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with its content hash: 'nothing written, nothing lost' is equality."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir") for p in sorted(root.rglob("*"))
    }


def _temps(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """One tiny trained checkpoint (its .safetensors path), copied by the cases that break it."""
    from click.testing import CliRunner

    from stardomain.cli import cli

    root = tmp_path_factory.mktemp("hard_ckpt")
    r = CliRunner().invoke(cli, [*TRAIN, "--seed", "0", "--out", str(root / "zoo")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return root / "zoo" / "seed-0.safetensors"


# -- the table --------------------------------------------------------------------------------------------------


def _yaml(patch: dict, raw: str | bytes | None = None) -> Callable[[Path, Path], list[str]]:
    """A `run` of BASE with ``patch`` on top (or of the raw file text), into a fresh --out folder."""

    def setup(tmp: Path, _ckpt: Path) -> list[str]:
        path = tmp / "bad.yaml"
        if raw is None:
            path.write_text(yaml.safe_dump({**BASE, **patch}))
        else:
            path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
        return ["run", str(path), "--out", str(tmp / "out")]

    return setup


def _studies(**blocks: dict) -> dict:
    return {"studies": {**BASE["studies"], **blocks}}


def _train(*extra: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, _ckpt: [*TRAIN, *extra, "--out", str(tmp / "zoo")]


def _marker(text: str) -> Callable[[Path, Path], list[str]]:
    """A run folder whose experiment.json is damaged: refused, and the folder left exactly as it was."""

    def setup(tmp: Path, _ckpt: Path) -> list[str]:
        (tmp / "bad.yaml").write_text(yaml.safe_dump(BASE))
        (tmp / "out").mkdir()
        (tmp / "out" / "experiment.json").write_text(text)
        return ["run", str(tmp / "bad.yaml"), "--out", str(tmp / "out")]

    return setup


def _out_under_file(command: str) -> Callable[[Path, Path], list[str]]:
    def setup(tmp: Path, _ckpt: Path) -> list[str]:
        (tmp / "a-file").write_text("not a folder\n")
        (tmp / "bad.yaml").write_text(yaml.safe_dump(BASE))
        head = ["run", str(tmp / "bad.yaml")] if command == "run" else TRAIN
        return [*head, "--out", str(tmp / "a-file" / "out")]

    return setup


def _broken_ckpt(edit: Callable[[dict], None] | None = None, truncate: bool = False) -> Callable[[Path, Path], list[str]]:
    """`eval` of a copy of the tiny checkpoint with its metadata edited (or its weights cut short)."""

    def setup(tmp: Path, ckpt: Path) -> list[str]:
        dst = tmp / "ck" / "m.safetensors"
        dst.parent.mkdir()
        shutil.copy(ckpt, dst)
        meta = json.loads(ckpt.with_suffix(".json").read_text())
        if edit is not None:
            edit(meta)
        dst.with_suffix(".json").write_text(json.dumps(meta))
        if truncate:
            dst.write_bytes(ckpt.read_bytes()[:100])
        return ["eval", str(dst), "--device", "cpu"]

    return setup


def _set_option(key: str, value: object) -> Callable[[dict], None]:
    return lambda m: m["arch"]["options"].update({key: value})


CASES: dict[str, tuple[Callable[[Path, Path], list[str]], list[str]]] = {
    # YAML values: ranges, finiteness, types (the key named)
    "seed-negative": (_yaml({"seed": -1}), ["seed: a whole number in [0, 2^31) (got -1)"]),
    "seed-huge": (_yaml({"seed": 2**40}), ["seed: a whole number"]),
    "lr-inf": (_yaml({"train": {"lr": INF}}), ["train.lr: must be a finite number (got inf)"]),
    "lr-nan": (_yaml({"train": {"lr": NAN}}), ["train.lr: must be a finite number"]),
    "lr-negative": (_yaml({"train": {"lr": -0.1}}), ["train.lr: must be > 0"]),
    "lr-as-text": (_yaml({"train": {"lr": "1e-3"}}), ["train.lr: expected a number", "write 1.0e-3"]),
    "epochs-as-text": (_yaml({"train": {"epochs": "2"}}), ["train.epochs: expected an integer, got the text '2'"]),
    "epochs-fraction": (_yaml({"train": {"epochs": 2.5}}), ["train.epochs: expected an integer"]),
    "epochs-zero": (_yaml({"train": {"epochs": 0}}), ["train.epochs: must be >= 1"]),
    "batch-size-zero": (_yaml({"train": {"batch_size": 0}}), ["train.batch_size: must be >= 1"]),
    "momentum-negative": (_yaml({"train": {"momentum": -0.9}}), ["train.momentum: must be in [0, 1)"]),
    "weight-decay-negative": (_yaml({"train": {"weight_decay": -1e-4}}), ["train.weight_decay: must be >= 0"]),
    "weight-decay-inf": (_yaml({"train": {"weight_decay": INF}}), ["train.weight_decay: must be a finite number"]),
    "warmup-negative": (_yaml({"train": {"warmup_epochs": -1}}), ["train.warmup_epochs"]),
    "nesterov-as-text": (_yaml({"train": {"nesterov": "yes"}}), ["train.nesterov: expected true or false"]),
    "train-typo": (_yaml({"train": {"optimiser": "sgd"}}), ["train", "optimiser"]),
    "batch-models-zero": (_yaml({"train": {"epochs": 2, "batch_models": 0}}), ["train.batch_models: must be >= 1"]),
    "star-lr-nan": (_yaml({"star": {"recipe": {"lr": NAN}}}), ["star.recipe.lr: must be a finite number"]),
    "star-mu-inf": (_yaml({"star": {"mu": INF}}), ["star.mu: must be a finite number"]),
    "star-t-beta-inf": (_yaml({"star": {"t_beta": [1.0, INF]}}), ["star.t_beta"]),
    "eval-train-samples-zero": (_yaml({"eval": {"eval_train_samples": 0}}), ["eval.eval_train_samples: must be >= 1"]),
    "eval-test-samples-negative": (_yaml({"eval": {"eval_test_samples": -5}}), ["eval.eval_test_samples: must be >= 1"]),
    "eval-points-one": (_yaml({"eval": {"points": 1}}), ["eval.points"]),
    "subset-tiny": (_yaml({"subset": 5}), ["subset: at least 10"]),
    "top-level-typo": (_yaml({"sorces": 3}), ["unknown key 'sorces'"]),
    # model options: a trial build on the meta device names model.options
    "width-zero": (
        _yaml({"model": {"name": "mlp", "options": {"depth": 1, "width": 0}}}),
        ["model.options: mlp option width must be >= 1"],
    ),
    "depth-negative": (
        _yaml({"model": {"name": "mlp", "options": {"depth": -1, "width": 8}}}),
        ["model.options: mlp option depth must be >= 0"],
    ),
    "width-2-to-40": (
        _yaml({"model": {"name": "mlp", "options": {"depth": 1, "width": 2**40}}}),
        ["model.options: model 'mlp'", "use smaller sizes"],
    ),
    "width-as-text": (_yaml({"model": {"name": "mlp", "options": {"width": "8"}}}), ["model.options: option width='8'", "must be int"]),
    "option-typo": (_yaml({"model": {"name": "mlp", "options": {"widht": 8}}}), ["model.options: 'widht' is not an option of mlp"]),
    # every study block: unknown keys and ranges
    "studies-typo": (_yaml({"studies": {"barrier": True}}), ["studies: unknown key 'barrier'"]),
    "width-depth-typo": (_yaml(_studies(width_depth={"setings": [{"width": 4}]})), ["studies.width_depth: unknown key 'setings'"]),
    "width-depth-width-zero": (
        _yaml(_studies(width_depth={"settings": [{"width": 0}]})),
        ["studies.width_depth.settings[0]: mlp option width"],
    ),
    "width-depth-depth-negative": (
        _yaml(_studies(width_depth={"settings": [{"width": 4}, {"depth": -1}]})),
        ["studies.width_depth.settings[1]: mlp option depth"],
    ),
    "width-depth-sources-one": (_yaml(_studies(width_depth={"settings": [{"width": 4}], "sources": 1})), ["studies.width_depth.sources"]),
    "optimizer-typo": (_yaml(_studies(optimizer={"optimiser": "adam"})), ["studies.optimizer: unknown key 'optimiser'"]),
    "optimizer-held-out-zero": (_yaml(_studies(optimizer={"held_out": 0})), ["studies.optimizer.held_out: must be >= 1"]),
    "optimizer-recipe-lr-inf": (_yaml(_studies(optimizer={"recipe": {"lr": INF}})), ["studies.optimizer.recipe.lr: must be a finite"]),
    "n-sources-typo": (_yaml(_studies(n_sources={"size": [2]})), ["studies.n_sources: unknown key 'size'"]),
    "fusion-mu-inf": (_yaml(_studies(fusion={"sizes": [2], "mu": INF})), ["studies.fusion.mu: must be a finite number"]),
    "fusion-typo": (_yaml(_studies(fusion={"size": [2]})), ["studies.fusion: unknown key 'size'"]),
    "bma-seed-negative": (_yaml(_studies(bma={"seed": -1})), ["studies.bma.seed: must be >= 0"]),
    "bma-typo": (_yaml(_studies(bma={"max_sampels": 3})), ["studies.bma: unknown key 'max_sampels'"]),
    "recipe-study-typo": (_yaml(_studies(recipe={"weight_decays": [0.1]})), ["studies.recipe: unknown key 'weight_decays'"]),
    "recipe-study-wd-negative": (_yaml(_studies(recipe={"weight_decay": [-1.0]})), ["studies.recipe.weight_decay"]),
    # issue 30 (5): a size over the budget, refused at load naming the key, the estimate and the override
    "budget-eval-points": (
        _yaml({"eval": {**BASE["eval"], "points": 10**9}}),
        ["eval.points: the t values of each curve would be 1,000,000,000", "STARDOMAIN_BUDGET=off"],
    ),
    "budget-pairs-per-step": (_yaml({"star": {"pairs_per_step": 10**9}}), ["star.pairs_per_step: the (source, t) pairs of each star step"]),
    "budget-bma-max-samples": (_yaml(_studies(bma={"max_samples": 10**9})), ["studies.bma.max_samples: the BMA's samples would be"]),
    "budget-epochs": (_yaml({"train": {"epochs": 10**12}}), ["train.epochs: the epochs of one training run would be 1,000,000,000,000"]),
    "budget-recipe-grid": (
        _yaml(_studies(recipe={"epochs": list(range(1, 1001)), "weight_decay": [i * 1e-6 for i in range(1000)]})),
        ["studies.recipe: the plan's units (studies.recipe: 1,000,000 cells x 14 units)"],
    ),
    "budget-depth": (
        _yaml({"model": {"name": "mlp", "options": {"depth": 10**6, "width": 8}}}),
        ["model.options: model 'mlp': option depth would be 1,000,000"],
    ),
    "budget-threads": (_yaml({"threads": 4096}), ["threads: 4096 CPU threads on a machine with"]),
    "budget-threads-flag": (lambda tmp, c: [*_yaml({})(tmp, c), "--threads", "4096"], ["threads: 4096 CPU threads on a machine with"]),
    "budget-spec-width": (lambda tmp, _c: ["spec", "mlp", "-o", f"width={2**28}"], ["model 'mlp'", "parameters (over the budget of 1e+10"]),
    "budget-train-epochs": (_train("-e", str(10**12)), ["--epochs: the epochs of each model would be 1,000,000,000,000"]),
    "budget-train-depth": (_train("-o", "depth=1000000"), ["-o/--opt: model 'mlp': option depth would be 1,000,000"]),
    "budget-train-threads": (_train("--threads", "4096"), ["--threads: 4096 CPU threads on a machine with"]),
    "budget-barrier-points": (
        lambda tmp, c: ["barrier", str(c), str(c), "--points", str(10**9)],
        ["--points: t values per curve would be 1,000,000,000"],
    ),
    "budget-refine-steps": (
        lambda tmp, c: ["barrier", str(c), str(c), "--refine", "ste", "--refine-steps", str(10**9)],
        ["--refine-steps: learned-matching steps would be"],
    ),
    "budget-star-pairs-per-step": (
        lambda tmp, c: ["star", "--sources", str(c.parent), "--pairs-per-step", str(10**9), "--out", str(tmp / "s.safetensors")],
        ["--pairs-per-step: (source, t) pairs per step would be"],
    ),
    "budget-star-repeats": (
        lambda tmp, c: ["star", "--sources", str(c.parent), "--repeats", str(10**9), "--out", str(tmp / "s.safetensors")],
        ["--repeats: stars to train would be"],
    ),
    "budget-star-epochs": (
        lambda tmp, c: ["star", "--sources", str(c.parent), "-e", str(10**12), "--out", str(tmp / "s.safetensors")],
        ["--epochs: the star's epochs would be"],
    ),
    "budget-cli-bma-max-samples": (
        lambda tmp, c: ["bma", "--star", str(c), "--max-samples", str(10**9)],
        ["--max-samples: posterior samples would be"],
    ),
    # issue 30 (6): the recipe study's axes typed like their fields, and tags that never collide
    "recipe-study-width-fraction": (
        _yaml(_studies(recipe={"width": [4.5]})),
        ["studies.recipe.width: mlp's option width is a whole number"],
    ),
    "recipe-study-tags-collide": (
        _yaml(_studies(recipe={"weight_decay": [0.0001, 0.00010000001]})),
        ["studies.recipe.weight_decay: 0.0001 and 0.00010000001 print alike (wd0.0001)", "share a tag"],
    ),
    "threads-zero": (_yaml({"threads": 0}), ["threads: torch CPU threads of each unit", "(got 0)"]),
    "threads-as-text": (_yaml({"threads": "2"}), ["threads: expected an integer, got '2'"]),
    "threads-over-ray-reservation": (
        _yaml({"threads": 2, "executor": {"kind": "ray", "cpus_per_unit": 1}}),
        ["executor.cpus_per_unit 1 is below threads 2"],
    ),
    "converged-train-loss-negative": (
        _yaml({"eval": {**BASE["eval"], "converged_train_loss": -0.1}}),
        ["eval.converged_train_loss: a positive loss"],
    ),
    "executor-typo": (_yaml({"executor": {"kindd": "local"}}), ["executor: unknown key 'kindd'"]),
    "executor-workers-zero": (_yaml({"executor": {"workers": 0}}), ["executor.workers"]),
    # the YAML file itself
    "yaml-syntax": (_yaml({}, "name: [unclosed\n"), ["not valid YAML at line"]),
    "yaml-list": (_yaml({}, "- 1\n- 2\n"), ["the top level must be a mapping"]),
    "yaml-binary": (_yaml({}, b"\xff\xfe\x00\x01garbage"), ["not a text file"]),
    # `train` options, refused before any data is read or model trained
    "train-epochs-zero": (_train("-e", "0"), ["--epochs: must be >= 1"]),
    "train-lr-inf": (_train("--lr", "inf"), ["--lr: must be a finite number"]),
    "train-lr-nan": (_train("--lr", "nan"), ["--lr: must be a finite number"]),
    "train-lr-negative": (_train("--lr", "-1"), ["--lr: must be > 0"]),
    "train-weight-decay-negative": (_train("--weight-decay", "-1"), ["--weight-decay: must be >= 0"]),
    "train-batch-size-zero": (_train("--batch-size", "0"), ["--batch-size: must be >= 1"]),
    "train-seed-negative": (_train("--seed", "-1"), ["--seed must be >= 0"]),
    "train-seed-start-negative": (_train("--n", "2", "--seed-start", "-3"), ["--seed-start must be >= 0"]),
    "train-batch-models-zero": (_train("--batch-models", "0"), ["--batch-models must be >= 1"]),
    "train-width-zero": (_train("-o", "width=0"), ["-o/--opt: mlp option width must be >= 1"]),
    "train-depth-negative": (_train("-o", "depth=-1"), ["-o/--opt: mlp option depth must be >= 0"]),
    "train-width-2-to-40": (_train("-o", f"width={2**40}"), ["-o/--opt: model 'mlp'", "use smaller sizes"]),
    "train-option-typo": (_train("-o", "widht=3"), ["unknown option 'widht'"]),
    # `star` options: every range written once, in its field (starlight.config.StarKnobs)
    "star-cli-mu-inf": (
        lambda tmp, c: ["star", "--sources", str(c.parent), "--mu", "inf", "--out", str(tmp / "s.safetensors")],
        ["mu must be a finite number (got inf)"],
    ),
    "star-cli-t-beta-inf": (
        lambda tmp, c: [
            "star",
            "--sources",
            str(c.parent),
            "--t-sampling",
            "beta",
            "--t-beta",
            "1",
            "inf",
            "--out",
            str(tmp / "s.safetensors"),
        ],
        ["t_beta must be two finite positive numbers"],
    ),
    # click's own usage errors: one line with the hint
    "usage-epochs-not-int": (_train("-e", "x"), ["'x' is not a valid integer", "try 'stardomain train -h' for help"]),
    "usage-unknown-option": (_train("--frobnicate"), ["No such option '--frobnicate'", "try 'stardomain train -h'"]),
    "usage-unknown-command": (lambda tmp, _c: ["frobnicate"], ["No such command 'frobnicate'", "try 'stardomain -h'"]),
    "usage-missing-out": (lambda tmp, _c: ["run", str(tmp / "x.yaml")], ["Missing option '--out'", "try 'stardomain run -h'"]),
    # damaged files and unusable paths
    "experiment-json-truncated": (_marker('{"config": {"name": '), ["experiment.json is not valid JSON", "use another --out folder"]),
    "experiment-json-a-list": (_marker("[1, 2]\n"), ["experiment.json is not an experiment record"]),
    "out-under-a-file": (_out_under_file("run"), ["a-file/out", "Not a directory"]),
    "train-out-under-a-file": (_out_under_file("train"), ["a-file/out", "Not a directory"]),
    "ckpt-width-2-to-40": (_broken_ckpt(_set_option("width", 2**40)), ["m.safetensors", "architecture cannot be built"]),
    "ckpt-width-2-to-20": (_broken_ckpt(_set_option("width", 2**20)), ["m.safetensors", "does not fit its architecture"]),
    "ckpt-in-shape-overflow": (_broken_ckpt(lambda m: m["arch"].update(in_shape=[1, 2**40, 2**40])), ["m.safetensors", "cannot be built"]),
    "ckpt-weights-truncated": (_broken_ckpt(truncate=True), ["m.safetensors"]),
}


def test_the_table_holds_at_least_40_bad_inputs() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_before_any_work(case: str, tmp_path: Path, ckpt: Path, capsys) -> None:
    setup, needles = CASES[case]
    args = setup(tmp_path, ckpt)
    before = _snapshot(tmp_path)
    r: Result = run_cli(capsys, *args)
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert r.code == 2, (case, r.code, r.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, r.err)
    for needle in needles:
        assert needle in lines[0], (case, needle, lines[0])
    assert _snapshot(tmp_path) == before, case  # nothing written (no run folder, no zoo member), nothing lost
    assert not list(tmp_path.rglob("zoo/*/seed-*")) and not list(tmp_path.rglob("zoo/seed-*")), case


def test_file_size_limit_is_one_line_and_keeps_what_was_written(tmp_path: Path, ckpt: Path) -> None:
    """ulimit -f during a checkpoint write: one line naming the file, exit 2, the earlier member intact, no temp."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(ckpt.with_suffix(suffix), zoo / f"seed-0{suffix}")
    before = _snapshot(zoo)
    limit = 4096  # bytes: the width-64 checkpoint (~18 kB) cannot be written

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = [*TRAIN[:5], "-o", "depth=1", "-o", "width=64", *TRAIN[9:], "--seed", "1", "--out", str(zoo)]
    r = subprocess.run(
        [sys.executable, "-m", "stardomain.cli", *args], capture_output=True, text=True, env=ENV, timeout=300, preexec_fn=small_files
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "seed-1.safetensors" in lines[0] and "ulimit -f" in lines[0], lines[0]
    assert _snapshot(zoo) == before and not _temps(zoo)


def test_stray_temps_are_matched_by_name_and_age(tmp_path: Path) -> None:
    """Only this project's temp names, in the folders named, and only those older than the run: a concurrent
    writer's fresh temp stays (issue 30: the old-style names ``.x.abc.tmp`` are the user's)."""
    from stardomain._util.fileio import remove_stray_temps

    names = [
        ".stardomain-results.json.ab12cd34.sd.tmp",
        "zoo/main/.stardomain-seed-0.safetensors.x_y9.sd.tmp",
        "claims/.stardomain-u.claim.0123abcd.sd.tmp",
        "zoo/main/.stardomain-.seed-1.train-state.safetensors.k2j3h4g5.sd.tmp",
    ]
    keep = ["notes.tmp", "results.json", ".hidden", "zoo/main/seed-0.json", ".results.json.ab12cd34.tmp", "zoo/.stardomain-a.b1.sd.tmp"]
    for name in [*names, *keep]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (time.time() - 60, time.time() - 60))
    fresh = tmp_path / ".report.md.fresh123.tmp"
    fresh.write_text("being written")
    removed = remove_stray_temps(tmp_path, older_than=time.time() - 5, subfolders=[".", "zoo/main", "claims"])
    assert sorted(str(p.relative_to(tmp_path)) for p in removed) == sorted(names)
    assert fresh.exists() and all((tmp_path / k).exists() for k in keep)


# -- kill -9 and resume -----------------------------------------------------------------------------------------


def _run_cmd(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "stardomain.cli", "run", str(cfg), "--out", str(out), "-q"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny experiment run once without interruption: (its YAML, its run folder)."""
    root = tmp_path_factory.mktemp("hard_ref")
    cfg = root / "k.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    r = subprocess.run(_run_cmd(cfg, root / "ref"), capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    assert not _temps(root / "ref"), "a clean run left temp files"
    return cfg, root / "ref"


def _plant_stray_temps(out: Path) -> list[Path]:
    """What a kill in the middle of each kind of write leaves (results, figure, checkpoint, claim, train state)."""
    old = time.time() - 30
    planted = [
        out / ".stardomain-results.json.k1ll3d00.sd.tmp",
        out / ".stardomain-barrier_curves.png.k1ll3d01.sd.tmp",
        out / "zoo" / "main" / ".stardomain-seed-1.safetensors.k1ll3d02.sd.tmp",
        out / "claims" / ".stardomain-star_main-z2.claim.00ff.sd.tmp",
        out / "zoo" / "main" / ".stardomain-.seed-0.train-state.safetensors.k1ll3d03.sd.tmp",
        out / "cache" / "pairs" / ".stardomain-abc.json.k1ll3d04.sd.tmp",
    ]
    for p in planted:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a write")
        os.utime(p, (old, old))
    return planted


@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0])
def test_killed_run_resumes_with_no_temp_left_and_identical_results(reference, tmp_path: Path, delay: float) -> None:
    """SIGKILL ``delay`` seconds after the run folder appears (or on start-up, if it never does by then), resume,
    list the folder: no ``*.tmp``; results.json and report.md are the uninterrupted run's bytes."""
    cfg, ref = reference
    out = tmp_path / "killed"
    proc = subprocess.Popen(_run_cmd(cfg, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and not (out / "experiment.json").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if out.exists():
        planted = _plant_stray_temps(out)
    else:
        planted = []
    resumed = subprocess.run(_run_cmd(cfg, out), capture_output=True, text=True, env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    listing = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert not [name for name in listing if name.endswith(".tmp")], listing
    assert not any(p.exists() for p in planted)
    for name in ("results.json", "report.md"):
        got, want = (out / name).read_text(), (ref / name).read_text()
        assert got == want, name + "\n" + "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), n=0))


def test_corrupt_cache_entry_is_recomputed(reference, tmp_path: Path, capsys) -> None:
    """A truncated and a garbage cache JSON (a copy cut short, a bad disk) are recomputed, not a traceback on every re-run."""
    cfg, ref = reference
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    entries = sorted((out / "cache").rglob("*.json"))
    assert len(entries) >= 2
    entries[0].write_text(entries[0].read_text()[:40])
    entries[1].write_bytes(b"\x00\xff not json")
    r = run_cli(capsys, "run", cfg, "--out", out, "-q")
    assert r.code == 0, r.err
    for entry in entries[:2]:
        assert "value" in json.loads(entry.read_text())  # healed
    assert (out / "results.json").read_bytes() == (ref / "results.json").read_bytes()


def test_cache_entry_deleted_before_assembly_is_one_line_then_recomputed(reference, tmp_path: Path) -> None:
    """A cache file that disappears while a run is going (a cleanup script, a user) makes assembly fail in one line
    that says what to do, not 'a bug in stardomain'; the same command then recomputes it, to the same bytes."""
    from stardomain import StardomainError
    from stardomain.experiment.config import load_config
    from stardomain.experiment.pipeline import Experiment

    cfg, ref = reference
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    victim = sorted((out / "cache").rglob("*.json"))[0]
    victim.unlink()
    with pytest.raises(StardomainError) as err:
        Experiment(load_config(cfg), out, progress=False).run(assemble=True)
    msg = str(err.value)
    assert "\n" not in msg and str(victim) in msg and "re-run the same command" in msg
    r = subprocess.run(_run_cmd(cfg, out), capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    assert victim.exists() and (out / "results.json").read_bytes() == (ref / "results.json").read_bytes()
