"""Metrics sinks (issue 35, logging): TensorBoard and Weights & Biases receive the events of events.jsonl.

All offline: TensorBoard's event files are read back with its own EventAccumulator; W&B runs in offline mode and its
run file (OUT/wandb/offline-run-*/run-*.wandb: a LevelDB-style log of wandb's protobuf records, what `wandb sync`
uploads) is read back record by record. A library's tests skip, saying why, where its extra is not installed.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import assert_one_line_error, run_cli, tiny_config
from pytest import approx

from stardomain.errors import StardomainError
from stardomain.experiment.sinks import _metrics, check_options, series_and_step

CONFIG = tiny_config("sinks", train={"epochs": 2}, star={"recipe": {"epochs": 2}})
TRAIN = ["-d", "digits", "-m", "mlp", "-o", "width=8", "-o", "depth=1", "-e", "2", "--subset", "200", "--device", "cpu", "-q"]
NO_TENSORBOARD = "the tensorboard extra is not installed (pip install 'stardomain[tensorboard]')"
NO_WANDB = "the wandb extra is not installed (pip install 'stardomain[wandb]')"


def _run(tmp_path: Path, capsys, *args: str, config: dict | None = None) -> Path:
    path = tmp_path / "sinks.yaml"
    path.write_text(yaml.safe_dump(config or CONFIG))
    out = tmp_path / "out"
    r = run_cli(capsys, "run", path, "--out", out, "-q", *args)
    assert r.code == 0, r.err
    return out


def _events(out: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (out / "events.jsonl").read_text().splitlines()) if e["event"] == kind]


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of the TensorBoard event files in ``folder``: tag -> [(step, value)], read by TensorBoard."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _wandb_records(path: Path) -> list:
    """The protobuf records of a W&B run file: a 7-byte header (':W&B', magic, version), then LevelDB log records
    (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, pending, payloads = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            payloads.append(pending)
    records = []
    for payload in payloads:
        rec = pb.Record()
        rec.ParseFromString(payload)
        records.append(rec)
    return records


def _wandb_history(records: list) -> list[dict]:
    rows = []
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    return rows


# -- what a sink receives of an event (no package needed) --------------------------------------------------------------


def test_each_event_is_a_series_with_a_meaningful_step():
    counts: dict[str, int] = {}
    assert series_and_step("train_epoch", {"zoo": "main", "seed": 3, "epoch": 7}, counts) == ("train_epoch/main/seed-3", "epoch", 7)
    assert series_and_step("train_epoch", {"seed": 3, "epoch": 1}, counts) == ("train_epoch/seed-3", "epoch", 1)  # `train`: no zoo
    assert series_and_step("star_epoch", {"tag": "main-z10", "epoch": 2}, counts) == ("star_epoch/main-z10", "epoch", 2)
    # no epoch: the n-th event of its series (units counted per stage, not over the whole run)
    assert [series_and_step("unit", {"stage": s, "unit": "u"}, counts) for s in ("train", "pairs", "train")] == [
        ("unit/train", "n", 1),
        ("unit/pairs", "n", 1),
        ("unit/train", "n", 2),
    ]
    assert series_and_step("trained", {"zoo": "main", "seed": 0}, counts) == ("trained", "n", 1)


def test_only_numbers_reach_a_sink_nested_ones_flattened():
    fields = {"loss": 0.5, "n": 3, "ok": True, "name": "main", "none": None, "seeds": [1, 2], "seed": 4, "bma": {"k": 2, "tag": "x"}}
    assert dict(_metrics(fields, {"seed"})) == {"loss": 0.5, "n": 3.0, "bma/k": 2.0}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mlflow": True}, "logging: unknown sink 'mlflow'; available: tensorboard, wandb"),
        ({"tensorboard": "yes"}, "logging.tensorboard: true or false"),
        ({"wandb": {"projekt": "x"}}, "logging.wandb: unknown key 'projekt'"),
        ({"wandb": {"mode": "offlin"}}, "logging.wandb.mode: one of online, offline, disabled"),
        ({"wandb": 3}, "logging.wandb: true, false or a mapping"),
        (["tensorboard"], "logging: a mapping"),
    ],
)
def test_the_logging_block_is_checked_key_by_key(options, message):
    with pytest.raises(StardomainError, match=message.replace(".", r"\.").replace("(", r"\(")):
        check_options(options)


def test_a_bad_logging_block_is_a_one_line_error_of_run_before_any_work(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "logging": {"wandb": {"projekt": "x"}}}))
    r = run_cli(capsys, "run", path, "--out", tmp_path / "out")
    assert_one_line_error(r, "logging.wandb: unknown key 'projekt'")
    assert not (tmp_path / "out").exists()


# -- refusals: one line, exit 2, before any work -------------------------------------------------------------------------


@pytest.mark.parametrize("sink", ["tensorboard", "wandb"])
def test_a_missing_sink_package_is_a_one_line_refusal_of_every_command(tmp_path, capsys, monkeypatch, sink):
    monkeypatch.setitem(sys.modules, sink, None)  # as if not installed: importlib finds no spec, import fails
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    for args in (
        ["run", path, "--out", tmp_path / "out", "--log", sink],
        ["train", *TRAIN, "--out", tmp_path / "zoo", "--log", sink],
        ["star", "--sources", tmp_path / "zoo", "--out", tmp_path / "star.safetensors", "--log", f"tensorboard,{sink}"],
    ):
        r = run_cli(capsys, *args)
        assert r.code == 2
        assert_one_line_error(r, f"--log {sink}: the {sink} package is not installed", f"pip install 'stardomain[{sink}]'")
    assert list(tmp_path.iterdir()) == [path]  # nothing read, trained or written


def test_an_unknown_sink_is_a_usage_error(tmp_path, capsys):
    r = run_cli(capsys, "train", *TRAIN, "--out", tmp_path / "zoo", "--log", "mlflow")
    assert r.code == 2
    assert_one_line_error(r, "--log", "'mlflow' is no sink; use tensorboard or wandb")
    assert not (tmp_path / "zoo").exists()


# -- TensorBoard ---------------------------------------------------------------------------------------------------------


def test_run_logs_the_events_of_events_jsonl_to_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason=NO_TENSORBOARD)
    out = _run(tmp_path, capsys, "--log", "tensorboard")
    scalars = _tensorboard_scalars(out / "tensorboard")
    epochs = _events(out, "train_epoch")
    assert {(e["zoo"], e["seed"], e["epoch"]) for e in epochs} == {("main", s, k) for s in (0, 1, 1000) for k in (1, 2)}
    for seed in (0, 1, 1000):  # events.jsonl holds each member's history, TensorBoard the same numbers per epoch
        history = json.loads((out / "zoo" / "main" / f"seed-{seed}.json").read_text())["history"]
        mine = [{k: v for k, v in e.items() if k not in ("time", "event", "zoo", "seed")} for e in epochs if e["seed"] == seed]
        assert mine == history
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert scalars[f"train_epoch/main/seed-{seed}/{key}"] == [(h["epoch"], approx(h[key], rel=1e-6)) for h in history]
    stars = _events(out, "star_epoch")
    assert [(e["tag"], e["epoch"]) for e in stars] == [("main-z2", 1), ("main-z2", 2)]
    for key in ("interp_train_loss", "match_objective_mean"):
        assert scalars[f"star_epoch/main-z2/{key}"] == [(e["epoch"], approx(e[key], rel=1e-6)) for e in stars]
    units = _events(out, "unit")
    for stage in {u["stage"] for u in units}:  # per stage, the n-th unit
        mine = [u["seconds"] for u in units if u["stage"] == stage]
        assert scalars[f"unit/{stage}/seconds"] == [(n, approx(seconds, rel=1e-6)) for n, seconds in enumerate(mine, 1)]
    assert not [t for t in scalars if t.rsplit("/", 1)[1] in ("seed", "pid", "epoch", "unit", "host", "status")]  # names, not curves


def test_train_and_star_log_each_epoch_to_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason=NO_TENSORBOARD)
    zoo = tmp_path / "zoo"
    r = run_cli(capsys, "train", *TRAIN, "--n", "2", "--batch-models", "2", "--out", zoo, "--log", "tensorboard")
    assert r.code == 0, r.err
    assert not (zoo / "events.jsonl").exists()  # every epoch is in each member's .json: train keeps no events.jsonl
    scalars = _tensorboard_scalars(zoo / "tensorboard")
    for seed in (0, 1):  # trained in one batched pass: each member its own curve
        history = json.loads((zoo / f"seed-{seed}.json").read_text())["history"]
        assert len(history) == 2
        for key in ("train_loss", "test_acc"):
            assert scalars[f"train_epoch/seed-{seed}/{key}"] == [(h["epoch"], approx(h[key], rel=1e-6)) for h in history]
    star = tmp_path / "stars" / "star.safetensors"
    r = run_cli(capsys, "star", "--sources", zoo, "--epochs", "2", "--out", star, "-q", "--log", "tensorboard")
    assert r.code == 0, r.err
    history = json.loads(star.with_suffix(".json").read_text())["history"]
    scalars = _tensorboard_scalars(star.parent / "tensorboard")
    assert scalars["star_epoch/star/interp_train_loss"] == [  # the star's tag: its checkpoint's name
        (h["epoch"], approx(h["interp_train_loss"], rel=1e-6)) for h in history
    ]


# -- Weights & Biases (offline) ------------------------------------------------------------------------------------------


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B with no network and nothing written outside tmp_path."""
    wandb = pytest.importorskip("wandb", reason=NO_WANDB)
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_CODE": "true"}.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home" / key.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return wandb


def test_run_logs_the_same_events_to_wandb_offline(tmp_path, capsys, wandb_offline):
    config = {**CONFIG, "logging": {"wandb": {"project": "stardomain-tests", "mode": "offline", "tags": ["test"]}}}  # the YAML key
    out = _run(tmp_path, capsys, config=config)
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list((out / "wandb").rglob("*"))
    records = _wandb_records(runs[0])
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "exit" in kinds  # finished: the run was closed
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "sinks" and run.project == "stardomain-tests"
    assert json.loads(next(i.value_json for i in run.config.update if i.key == "dataset")) == "digits"  # the config rides along
    axes = {r.metric.glob_name: r.metric.step_metric for r in records if r.WhichOneof("record_type") == "metric" and r.metric.glob_name}
    assert axes["train_epoch/main/seed-0/*"] == "train_epoch/main/seed-0/epoch" and axes["unit/pairs/*"] == "unit/pairs/n"
    rows = _wandb_history(records)
    for e in _events(out, "train_epoch"):  # each epoch event is one row, its values exactly (JSON doubles both ways)
        prefix = f"train_epoch/main/seed-{e['seed']}"
        row = next(r for r in rows if r.get(f"{prefix}/epoch") == e["epoch"])
        assert {k: row[f"{prefix}/{k}"] for k in ("train_loss", "train_acc", "test_loss", "test_acc")} == {
            k: e[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")
        }
    star_rows = [r for r in rows if "star_epoch/main-z2/epoch" in r]
    assert [(r["star_epoch/main-z2/epoch"], r["star_epoch/main-z2/interp_train_loss"]) for r in star_rows] == [
        (e["epoch"], e["interp_train_loss"]) for e in _events(out, "star_epoch")
    ]
    units = _events(out, "unit")
    assert [r["unit/pairs/seconds"] for r in rows if "unit/pairs/n" in r] == [u["seconds"] for u in units if u["stage"] == "pairs"]


def test_a_wandb_init_failure_is_one_line(tmp_path, capsys, wandb_offline, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("api_key not configured (no-tty)\ncall wandb.login(key=[your_api_key])")

    monkeypatch.setattr(wandb_offline, "init", refuse)
    r = run_cli(capsys, "train", *TRAIN, "-e", "1", "--out", tmp_path / "zoo", "--log", "wandb")
    assert_one_line_error(r, "--log wandb: wandb.init failed (api_key not configured", "wandb login", "WANDB_MODE=offline")
