"""Checkpoints: round trip, atomic writes, corrupt and foreign files rejected with one-line errors."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from stardomain import models
from stardomain.checkpoints import store
from stardomain.errors import StardomainError


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return models.create("resnet20", 10, (3, 32, 32), width=1)


def test_round_trip_rebuilds_same_function(tmp_path):
    m = _model()
    # non-trivial BN statistics so buffers matter
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
    path = store.save(tmp_path / "a", m, {"dataset": "cifar10", "seed": 0})
    assert path.name == "a.safetensors" and (tmp_path / "a.json").exists()
    loaded = store.load(path)
    x = torch.randn(4, 3, 32, 32)
    m.eval()
    assert torch.equal(loaded(x), m(x))
    assert loaded.meta["arch"]["name"] == "resnet20" and loaded.meta["seed"] == 0
    assert not loaded.training
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_content_hash_and_discovery(tmp_path):
    a = store.save(tmp_path / "z" / "seed-0", _model(0), {})
    b = store.save(tmp_path / "z" / "sub" / "seed-1", _model(1), {})
    (tmp_path / "z" / "incomplete.safetensors").write_bytes(b"xx")  # no JSON: not complete
    assert store.find_checkpoints(tmp_path / "z") == sorted([a, b])
    assert store.find_checkpoints(tmp_path / "z", recursive=False) == [a]  # a zoo folder: its direct children only
    assert store.content_hash(a) != store.content_hash(b)
    assert store.content_hash(a) == store.read_metadata(a)["sha256"]


def test_truncated_checkpoint_is_rejected(tmp_path):
    path = store.save(tmp_path / "m", _model(), {})
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(StardomainError, match="corrupt or truncated"):
        store.load(path)
    # without the hash check the safetensors parser itself must refuse it cleanly
    meta = json.loads((tmp_path / "m.json").read_text())
    del meta["sha256"]
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(StardomainError, match="corrupt or truncated"):
        store.load(path)


def test_pickle_disguised_as_checkpoint_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    (tmp_path / "evil.json").write_text(json.dumps({"arch": {"name": "mlp", "num_classes": 10, "in_shape": [1, 8, 8], "options": {}}}))
    with pytest.raises(StardomainError, match="corrupt"):
        store.load(path)


def test_bad_metadata(tmp_path):
    path = store.save(tmp_path / "m", _model(), {})
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["arch"]["name"] = "transformer9000"
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(StardomainError, match="unknown to this stardomain version; known: .*resnet20"):
        store.load(path)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(StardomainError, match="not valid JSON"):
        store.load(path)
    (tmp_path / "m.json").unlink()
    with pytest.raises(StardomainError, match="no metadata file"):
        store.load(path)
    with pytest.raises(StardomainError, match="not found"):
        store.load(tmp_path / "nope.safetensors")


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = store.save(tmp_path / "m", _model(0), {"tag": "first"})
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.atomic_write_bytes(path, b"new content")
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
