"""The typed checkpoint metadata (issue 34, typed seams): one Checkpoint for regular models, stars and imported
checkpoints; a missing required key is one line naming the file and the key; unknown keys are kept in raw."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from stardomain.checkpoints import store
from stardomain.checkpoints.meta import Checkpoint, Metrics, SourceRef, read_checkpoint, read_state
from stardomain.checkpoints.provenance import recorded_data
from stardomain.errors import StardomainError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """Two one-epoch MLP sources and a one-epoch star of them."""
    from stardomain.starlight import StarlightConfig, train_star
    from stardomain.training import zoo
    from stardomain.training.loop import default_recipe

    root = tmp_path_factory.mktemp("meta")
    recipe = default_recipe("digits").replace(epochs=1)
    sources = zoo.train_zoo(digits, "mlp", {"depth": 1, "width": 8}, recipe, range(2), root / "zoo", progress=False)
    star = train_star(sources, digits, StarlightConfig(recipe=recipe), root / "star.safetensors", seed=7, progress=False)
    return sources, star


def _copy(path: Path, to: Path, edit) -> Path:
    """A copy of a checkpoint with its JSON edited by ``edit(meta)``."""
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, to)
    meta = json.loads(store.metadata_path(path).read_text())
    edit(meta)
    store.metadata_path(to).write_text(json.dumps(meta))
    return to


def test_a_regular_member_reads_typed(trained):
    sources, _ = trained
    ck = read_checkpoint(sources[0])
    raw = json.loads(store.metadata_path(sources[0]).read_text())
    assert ck.raw == raw and ck.path == sources[0]
    assert ck.kind == "regular" and not ck.is_star and not ck.imported and ck.role == "source"
    assert ck.seed == 0 and ck.dataset == "digits" and ck.data is not None and ck.data["name"] == "digits"
    assert ck.arch.name == "mlp" and ck.arch.num_classes == 10 and ck.arch.in_shape == tuple(raw["arch"]["in_shape"])
    assert ck.arch.record == raw["arch"] and ck.arch.options["width"] == 8
    assert ck.recipe is not None and ck.recipe["epochs"] == 1 and ck.config == raw["config"]
    assert isinstance(ck.metrics, Metrics) and 0.0 <= ck.metrics.test_acc <= 1.0  # type: ignore[operator]
    assert ck.metrics_dict() == raw["metrics"] and len(ck.history) == 1
    assert ck.sha256 == store.content_hash(sources[0]) and ck.sources == () and ck.init is None
    assert recorded_data(ck.raw) == {**raw["data"]} and ck.labelled() == (str(sources[0]), raw)


def test_a_star_reads_typed(trained):
    sources, star = trained
    ck = read_checkpoint(star.path)
    assert ck == star.checkpoint  # typed from the file, or from the writer's dict: the same record
    assert ck.is_star and ck.role == "star" and ck.seed == 7 and ck.init == "fresh"
    assert ck.sources == tuple(SourceRef(f"zoo/{p.name}", store.content_hash(p), s) for s, p in enumerate(sources))
    assert ck.starlight is not None and ck.starlight["matching"] == "weight" and ck.identity == star.meta["identity"]
    assert ck.metrics is not None and ck.metrics.train_loss is not None and isinstance(ck.spec_coverage, float)
    state, again = read_state(star.path)
    assert again == ck and set(state) == {k for k, _ in store.build_model(ck.arch.record).state_dict().items()}


def test_a_plain_state_dict_reads_typed(tmp_path, digits):
    from safetensors.torch import save_file

    from stardomain import models
    from stardomain.checkpoints import plain

    torch.manual_seed(0)
    model = models.create("mlp", digits.num_classes, tuple(digits.in_shape))
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with plain.named_model("mlp", digits):
        ck = read_checkpoint(path)
    assert ck.imported and ck.pretrained is not None and ck.pretrained["kind"] == "state_dict"
    assert ck.kind == "regular" and ck.role == "source" and ck.seed is None and ck.metrics is None and ck.recipe is None
    assert ck.assumed and ck.arch.name == "mlp" and ck.sha256 == store.content_hash(path)
    assert recorded_data(ck.raw)["name"] is None  # no data recorded: --dataset names it


def test_a_save_pretrained_folder_reads_typed(tmp_path):
    pytest.importorskip("transformers")
    from pretrained_helpers import train_and_save

    folder = train_and_save("vit", 0, tmp_path / "vit", steps=1)
    ck = read_checkpoint(folder)
    assert ck.imported and ck.pretrained is not None and ck.pretrained["format"] == "save_pretrained"
    assert ck.arch.name == "hf:pretrained" and ck.seed is None and ck.metrics is None and ck.history == ()
    assert ck.assumed and ck.sha256 == store.content_hash(folder) and ck.path == folder


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda m: m.pop("seed"), "'seed'"),
        (lambda m: m.pop("sources"), "'sources'"),
        (lambda m: m["sources"][0].pop("sha256"), "'sources[0].sha256'"),
        (lambda m: m["metrics"].update(test_acc="high"), "'metrics.test_acc'"),
        (lambda m: m.update(spec_coverage=[1]), "'spec_coverage'"),
    ],
)
def test_a_missing_or_mistyped_key_is_one_line_naming_file_and_key(tmp_path, trained, edit, key):
    _, star = trained
    bad = _copy(star.path, tmp_path / "bad.safetensors", edit)
    with pytest.raises(StardomainError) as e:
        read_checkpoint(bad)
    msg = str(e.value)
    assert "\n" not in msg and str(store.metadata_path(bad)) in msg and key in msg


def test_unknown_keys_are_kept_in_raw_and_nothing_is_written(tmp_path, trained):
    sources, _ = trained
    path = _copy(sources[0], tmp_path / "extra.safetensors", lambda m: m.update(my_note={"by": "hand"}, metrics={"train_loss": None}))
    before = store.metadata_path(path).read_bytes()
    ck = read_checkpoint(path)
    assert ck.raw["my_note"] == {"by": "hand"} and ck.seed == 0
    assert ck.metrics == Metrics() and ck.metrics_dict() == {"train_loss": None}  # null: a diverged loss
    assert all(math.isnan(v) for v in ck.metrics.printable().values())
    assert store.metadata_path(path).read_bytes() == before


def test_of_takes_a_dict_already_read_or_a_checkpoint(trained):
    sources, _ = trained
    ck = read_checkpoint(sources[1])
    assert Checkpoint.of(ck, "elsewhere") is ck
    assert Checkpoint.of(store.read_metadata(sources[1]), sources[1]) == ck


def test_a_training_state_file_is_refused_in_one_line_naming_it(tmp_path):
    """A trainer's resumable state (kind ``...-state``, arch ``{"name": "?"}``) is no checkpoint: it used to be a raw
    KeyError 'num_classes'."""
    from stardomain.training.loop import STATE_KIND
    from stardomain.training.state import save_training_state

    model = torch.nn.Linear(2, 2)
    path = tmp_path / ".seed-0.train-state.safetensors"
    save_training_state(path, kind=STATE_KIND, epoch=1, model=model.state_dict(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    for read in (read_checkpoint, lambda p: read_state(p)[1], lambda p: Checkpoint.of(store.read_metadata(p), p)):
        with pytest.raises(StardomainError) as e:
            read(path)
        assert str(e.value) == f"{path} is a training state file, not a checkpoint; give the model's .safetensors"
