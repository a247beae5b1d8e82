"""Cache keys that cannot forget a setting (issue 30, item 3), and execution settings that cannot mislabel a folder
(item 4).

Every field of the experiment config is flipped, one at a time, on a config where every study is on. Each flip must
either change the folder's identity (a folder holding the other value is refused), or change the plan's units or
their keys (so the affected units are recomputed), or be on the short, named lists of fields that never reach a
unit (PRESENTATION_ONLY) or are checked per folder (EXECUTION). Nothing trains: the plan is built and every unit's
key read, with checkpoint hashes stood in by their paths.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import run_cli
from experiment_configs import TINY

from stardomain.checkpoints import store
from stardomain.errors import StardomainError
from stardomain.experiment import Experiment
from stardomain.experiment.config import ExperimentConfig, Studies, from_dict
from stardomain.experiment.folder import EXECUTION_KEYS, PRESENTATION_ONLY, identity_part
from stardomain.experiment.study import registered_studies
from stardomain.experiment.units import unit_keys

BASE: dict[str, Any] = {
    **TINY,
    "model": {"name": "mlp", "options": {"depth": 1, "width": 8, "batchnorm": True}},  # BN: the ablation has units
    "eval": {**TINY["eval"], "bn_ablation": True, "align": "activation"},  # activation: matching_samples is read
    "studies": {
        **TINY["studies"],
        "recipe": {"epochs": [2], "weight_decay": [0.0001], "sources": 2, "held_out": 1},
        "optimizer": {**TINY["studies"]["optimizer"], "recipe": {"lr": 0.01}, "star_recipe": {"epochs": 1}},
    },
}

# one other valid value for every field (dotted path); a field missing here fails the coverage test below
FLIPS: dict[str, Any] = {
    "name": "renamed",
    "dataset": "file-or-other",  # identity: compared on the dicts (another dataset needs another base)
    "subset": 500,
    "data_root": "/elsewhere",
    "image_size": 32,
    "stream": True,
    "device": "meta",
    "threads": 2,
    "seed": 1,
    "model.name": "resnet20",
    "model.options": {"depth": 2, "width": 8, "batchnorm": True},
    "model.init": "kaiming",
    "train": {"epochs": 4},
    "recipe": "paper",  # the named recipe `train` overrides (written train: {recipe: paper}): lr, batch size, ...
    "sources": 2,
    "held_out": 1,
    "star.recipe": {"epochs": 3},
    "star.mu": 0.5,
    "star.t_sampling": "beta",
    "star.t_beta": ("with", [2.0, 2.0], {"star.t_sampling": "beta"}),  # meaningless (refused) without its sampling
    "star.t_constant": ("with", 0.25, {"star.t_sampling": "constant"}),
    "star.epochs_factor": "identity",  # excludes star.recipe.epochs: compared on the dicts
    "star.pairs_per_step": 2,
    "star.realign_every": 5,
    "star.matching": "activation",
    "star.symmetry": "orthogonal",
    "star.fusion_loss": "paper",  # reaches the fusion study's stars (mu > 0); the main star (mu = 0) ignores it
    "star.init": "source",
    "star.repeats": 2,
    "eval.points": 7,
    "eval.bn_samples": 128,
    "eval.eval_train_samples": 100,
    "eval.eval_test_samples": 50,
    "eval.align": "weight",
    "eval.symmetry": "orthogonal",
    "eval.max_pairs": 1,
    "eval.max_star_source_pairs": 1,
    "eval.matching_samples": 64,
    "eval.star_acc_margin": 0.05,
    "eval.near_zero_tolerance": 0.1,
    "eval.metric": "test_loss",
    "eval.bn_ablation": False,
    "eval.converged_train_acc": 0.9,
    "eval.converged_train_loss": 0.01,
    "studies.barriers": False,
    "studies.distances": False,
    "studies.n_sources.sizes": [3],  # drops |Z| = 2 (3 is the main star's own)
    "studies.bma.max_samples": 3,
    "studies.bma.seed": 1,
    "studies.fusion.sizes": [3],
    "studies.fusion.mu": 2.0,
    "studies.width_depth.settings": [{"width": 6}],
    "studies.width_depth.sources": 3,
    "studies.width_depth.held_out": 2,
    "studies.optimizer.optimizer": "sgd",
    "studies.optimizer.recipe": {"lr": 0.02},
    "studies.optimizer.star_recipe": {"epochs": 2},
    "studies.optimizer.sources": 3,
    "studies.optimizer.held_out": 2,
    "studies.recipe.epochs": [3],
    "studies.recipe.init": ["kaiming"],
    "studies.recipe.weight_decay": [0.001],
    "studies.recipe.lr": [0.02],
    "studies.recipe.optimizer": ["adam"],
    "studies.recipe.width": [6],
    "studies.recipe.sources": 3,
    "studies.recipe.held_out": 2,
    "logging": {"tensorboard": True},
    "plugins": ["json"],
    "allow_unpermuted": True,
    "executor": {"kind": "ray"},
    "batch_models": 2,
}
# the plan fields a flip may leave alone: where units run (never a result) and the batch_models grouping (the
# same runs; each member records it was batched)
NOT_IN_KEYS = {"batch_models"}


def leaves(cls: type, prefix: str = "") -> list[str]:
    """Every field of a config dataclass, nested blocks (also optional ones) opened, mappings as one leaf."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if tp is Studies:  # the main study's switches, then every registered study's settings (a new study's too)
            out += [f"{prefix}studies.barriers", f"{prefix}studies.distances"]
            out += [leaf for s in registered_studies() if s.settings for leaf in leaves(s.settings, f"{prefix}studies.{s.yaml_name()}.")]
            continue
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or ([tp] if dataclasses.is_dataclass(tp) else [])
        opened = inner and f.name != "executor"  # the executor block is one leaf: where units run, dropped from to_dict
        out += leaves(inner[0], f"{prefix}{f.name}.") if opened else [prefix + f.name]
    return out


def flipped(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(data))
    *head, last = path.split(".")
    node = out
    for k in head:
        node = node.setdefault(k, {})
    node[last] = value
    return out


def keys_of(data: dict[str, Any], out: Path) -> dict[str, Any]:
    """The plan's unit keys; ``out``'s parent is the run folder of all of them (paths are part of the keys)."""
    return unit_keys(Experiment(from_dict(ExperimentConfig, data), out.parent / "run"))


@pytest.fixture
def hashes_are_paths(monkeypatch):
    """Nothing is trained: a checkpoint's content hash is stood in by its path."""
    monkeypatch.setattr(store, "content_hash", lambda p: f"hash:{Path(p).name}")


def test_every_config_field_has_a_flip():
    fields = set(leaves(ExperimentConfig))
    assert fields - set(FLIPS) == set(), "add the new field to FLIPS (and decide whether it reaches a unit)"
    assert set(FLIPS) - fields == set()


def test_every_field_changes_the_identity_or_its_units_keys_or_is_named(tmp_path, hashes_are_paths):
    base_dict = from_dict(ExperimentConfig, BASE).to_dict()
    base_keys = keys_of(BASE, tmp_path / "base")
    outcome: dict[str, str] = {}
    for path, value in FLIPS.items():
        top = path.split(".")[0]
        if isinstance(value, tuple) and value[0] == "with":  # a field that needs another one set: compared with it set
            _, value, also = value
            base = BASE
            for other, v in also.items():
                base = flipped(base, other, v)
            data = flipped(base, path, value)
            assert identity_part(from_dict(ExperimentConfig, data).to_dict()) != identity_part(
                from_dict(ExperimentConfig, base).to_dict()
            ) or keys_of(data, tmp_path / "x") != keys_of(base, tmp_path / "x"), path
            outcome[path] = "identity or keys"
            continue
        if path in PRESENTATION_ONLY or path in EXECUTION_KEYS or top == "executor":
            # named fields: flipping them must leave every unit and its key alone (else the list lies)
            if path in ("device", "executor", "logging"):  # another device or a sink's package: not on this machine
                outcome[path] = "named"
                continue
            assert keys_of(flipped(BASE, path, value), tmp_path / path) == base_keys, f"{path} is named as reaching no unit, yet it does"
            outcome[path] = "named"
            continue
        if value == "identity" or path in ("dataset", "data_root", "image_size", "stream", "model.name", "subset"):
            changed = flipped(base_dict, path, value if value != "identity" else 2.0)
            assert identity_part(changed) != identity_part(base_dict), f"{path} is part of the folder identity"
            outcome[path] = "identity"
            continue
        data = flipped(BASE, path, value)
        if identity_part(from_dict(ExperimentConfig, data).to_dict()) != identity_part(base_dict):
            outcome[path] = "identity"
            continue
        keys = keys_of(data, tmp_path / path.replace("/", "_"))
        if keys.keys() != base_keys.keys():
            outcome[path] = "units"
        elif any(keys[u] != base_keys[u] for u in keys):
            outcome[path] = "keys"
        else:
            assert path in NOT_IN_KEYS, f"{path} reaches no unit key and is on no named list: its change would reuse old results"
            outcome[path] = "named"
    assert outcome["eval.eval_test_samples"] == "keys"  # the field the hand-written pair key forgot
    assert outcome["eval.bn_samples"] == "keys" and outcome["eval.points"] == "keys"


def test_eval_test_samples_changes_every_pair_key(tmp_path, hashes_are_paths):
    base = keys_of(BASE, tmp_path / "a")
    other = keys_of(flipped(BASE, "eval.eval_test_samples", 50), tmp_path / "b")
    pairs = [u for u in base if u.startswith("pair/")]
    assert pairs and all(other[u] != base[u] for u in pairs)
    assert all(other[u] == base[u] for u in base if u.startswith(("train/", "star/")))  # the models stay


def test_weight_matching_pairs_do_not_depend_on_matching_samples(tmp_path, hashes_are_paths):
    weight = flipped(BASE, "eval.align", "weight")
    a = keys_of(weight, tmp_path / "a")
    b = keys_of(flipped(weight, "eval.matching_samples", 64), tmp_path / "b")
    assert {u: k for u, k in a.items() if u.startswith("pair/")} == {u: k for u, k in b.items() if u.startswith("pair/")}


SMALL = {**TINY, "studies": {"barriers": True, "distances": False}, "sources": 2, "held_out": 1, "train": {"epochs": 1}}


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_finished_folder_refuses_other_threads_in_one_line(tmp_path, capsys):
    """Item 4: a folder finished with 1 thread, re-run with --threads 2, kept the 1-thread numbers and recorded 2."""
    config = write_config(tmp_path / "exp.yaml", SMALL)
    out = tmp_path / "run"
    assert run_cli(capsys, "run", config, "--out", out, "-q").code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = run_cli(capsys, "run", config, "--out", out, "-q", "--threads", "2")
    assert res.code == 2 and res.err.count("\n") == 1, res.err
    assert "computed with threads 1" in res.err and "--threads 1" in res.err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing written
    assert run_cli(capsys, "run", config, "--out", out, "-q", "--threads", "1").code == 0  # the same setting finishes it


def test_an_empty_or_unstarted_folder_takes_any_threads(tmp_path):
    from stardomain.experiment.folder import check_same_execution

    (tmp_path / "zoo").mkdir()
    check_same_execution({"execution": {"threads": 1, "device": "cpu"}}, {"threads": 2, "device": "cpu"}, tmp_path)
    (tmp_path / "zoo" / "m.safetensors").write_bytes(b"x")
    with pytest.raises(StardomainError, match="computed with threads 1"):
        check_same_execution({"execution": {"threads": 1, "device": "cpu"}}, {"threads": 2, "device": "cpu"}, tmp_path)
    with pytest.raises(StardomainError, match="computed with device cuda"):
        check_same_execution({"execution": {"threads": 1, "device": "cuda"}}, {"threads": 1, "device": "cpu"}, tmp_path)
    # a folder from before the execution record: its config's threads is what it was computed with
    with pytest.raises(StardomainError, match="computed with threads 1"):
        check_same_execution({"config": {"threads": 1}}, {"threads": 2, "device": "cpu"}, tmp_path)
