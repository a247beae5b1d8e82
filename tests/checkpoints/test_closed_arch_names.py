"""Issue 30, item 1: a checkpoint can never make stardomain call a function.

A checkpoint's JSON names its architecture (and the data it was trained on). Those names reach only a closed
set: registered builders and datasets, the built-in hf: families, and code the user named (``--plugin``,
YAML ``plugins:``, ``plugins=`` or an import path typed into the Python API), each checked for its signature
before the call. Anything else - ``hf:builtins:print``, ``hf:os:sched_setaffinity``, any attribute of an
already imported module - is refused in one line naming ``--plugin``, and nothing is called.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import assert_one_line_error, run_cli

from stardomain import models
from stardomain._util import plugins
from stardomain.checkpoints import store
from stardomain.errors import StardomainError

DATA = {"name": "digits", "subset": None, "subset_seed": None, "image_size": None}


@pytest.fixture(autouse=True)
def fresh_names(monkeypatch):
    """Each test starts with nothing named (other tests of the session may have passed --plugin)."""
    monkeypatch.setattr(plugins, "_NAMED_MODULES", set(), raising=False)
    monkeypatch.setattr(plugins, "_NAMED_PATHS", set(), raising=False)


@pytest.fixture
def calls(monkeypatch) -> list[tuple]:
    """A module already imported (as os and builtins are) whose functions record every call."""
    seen: list[tuple] = []
    mod = types.ModuleType("sd_probe_mod")

    def boom(*args, **kwargs):
        seen.append((args, kwargs))
        return torch.nn.Linear(64, 10)

    def build(num_classes: int, in_shape: tuple[int, ...], *, width: int = 4) -> torch.nn.Module:
        seen.append(("build", num_classes))
        return models.create("mlp", num_classes, in_shape, depth=1, width=width)  # the checkpoint's own network

    def no_args():
        seen.append(("no_args",))

    mod.boom, mod.build, mod.no_args = boom, build, no_args
    monkeypatch.setitem(sys.modules, "sd_probe_mod", mod)
    return seen


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = models.create("mlp", 10, (1, 8, 8), depth=1, width=4)
    return store.save(tmp_path / "m.safetensors", model, {"seed": 0, "dataset": "digits", "data": DATA})


def _rename(path: Path, name: str, **arch) -> Path:
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["arch"].update({"name": name, "options": {}, **arch})
    meta_path.write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("name", ["hf:sd_probe_mod:boom", "sd_probe_mod:boom", "hf:sd_probe_mod:build", "sd_probe_mod:build"])
def test_a_name_from_a_checkpoint_calls_nothing_nobody_named(ckpt, calls, name):
    _rename(ckpt, name)
    with pytest.raises(StardomainError, match="--plugin sd_probe_mod") as e:
        store.load(ckpt)
    assert "\n" not in str(e.value) and "not named" in str(e.value)
    with pytest.raises(StardomainError, match="--plugin sd_probe_mod"):
        store.build_model(json.loads(ckpt.with_suffix(".json").read_text())["arch"])
    assert calls == []


def test_hf_builtins_print_prints_nothing_and_eval_says_which_plugin(ckpt, capsys):
    _rename(ckpt, "hf:builtins:print")
    r = run_cli(capsys, "eval", ckpt)
    assert r.code == 2 and r.out == ""  # print(10, (1, 8, 8)) used to write "10 (1, 8, 8)"
    assert_one_line_error(r, "builtins:print", "--plugin builtins")


def test_hf_os_sched_setaffinity_is_never_called(ckpt, monkeypatch):
    seen: list[tuple] = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda *a: seen.append(a), raising=False)
    _rename(ckpt, "hf:os:sched_setaffinity", num_classes=os.getpid(), in_shape=[1])
    with pytest.raises(StardomainError, match="--plugin os"):
        store.load(ckpt)
    store.load_state(ckpt)  # reading the weights checks no code nobody named (it used to build the arch to check it)
    with pytest.raises(StardomainError, match="--plugin os"):
        store.build_model(store.read_metadata(ckpt)["arch"])
    assert seen == []


def test_a_registered_name_with_a_foreign_factory_is_not_built_from_it(ckpt, calls):
    _rename(ckpt, "not_registered_here", factory="sd_probe_mod:build")
    with pytest.raises(StardomainError, match="--plugin sd_probe_mod") as e:
        store.load(ckpt)
    assert "\n" not in str(e.value) and calls == []


def test_a_data_record_naming_a_function_calls_nothing(ckpt, calls):
    from stardomain.checkpoints.provenance import load_recorded_data

    meta = store.read_metadata(ckpt)
    meta["data"] = {**DATA, "name": "sd_probe_mod:no_args"}
    meta["dataset"] = "sd_probe_mod:no_args"
    with pytest.raises(StardomainError, match="--plugin sd_probe_mod"):
        load_recorded_data([(str(ckpt), meta)])
    assert calls == []


def test_what_the_user_named_still_builds_after_its_signature_is_checked(ckpt, calls):
    _rename(ckpt, "sd_probe_mod:build", options={"width": 4})
    model = store.load(ckpt, plugins=["sd_probe_mod"])  # named: --plugin sd_probe_mod
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert calls and set(calls) == {("build", 10)}  # the shape check on the meta device, then the model
    calls.clear()
    # a config function whose signature cannot take (num_classes, in_shape) is refused before any call
    with pytest.raises(StardomainError, match=r"takes \(\)") as e:
        models.create("hf:sd_probe_mod:no_args", 10, (1, 8, 8))
    assert "\n" not in str(e.value) and calls == []


def test_an_import_path_typed_into_the_api_names_it_for_its_own_checkpoints(tmp_path, calls):
    model = models.create("sd_probe_mod:build", 10, (1, 8, 8), width=4)  # typed by the caller: named
    path = store.save(tmp_path / "own.safetensors", model, {"seed": 0})
    assert store.load(path)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    assert set(calls) == {("build", 10)}


def test_a_dataset_factory_is_checked_for_its_signature_before_the_call(calls):
    from stardomain import data

    with pytest.raises(StardomainError, match="dataset factory 'sd_probe_mod:build' takes") as e:
        data.load_dataset("sd_probe_mod:build")  # make() gets no arguments; this one needs two
    assert "\n" not in str(e.value) and calls == []


def test_unknown_model_errors_list_the_hf_families():
    with pytest.raises(StardomainError, match="hf:bert, hf:gpt2, hf:vit") as e:
        models.canonical_name("no_such_net")
    assert "plugins:" in str(e.value)


def test_a_yaml_naming_an_hf_config_function_says_it_needs_plugins(tmp_path, monkeypatch, capsys):
    """Item 7c: not "unknown model ... choose one of", but the key to add."""
    from stardomain.experiment.config import load_config

    (tmp_path / "sd_yaml_cfg_mod.py").write_text("def make_config(num_classes, in_shape):\n    raise SystemExit('called')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sd_yaml_cfg_mod", raising=False)
    cfg = {"dataset": "digits", "model": {"name": "hf:sd_yaml_cfg_mod:make_config"}, "train": {"epochs": 1}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(StardomainError) as e:
        load_config(tmp_path / "exp.yaml")
    msg = str(e.value)
    assert "\n" not in msg and "plugins: [sd_yaml_cfg_mod]" in msg and "choose one of" not in msg
    r = run_cli(capsys, "run", tmp_path / "exp.yaml", "--out", tmp_path / "out")
    assert_one_line_error(r, "plugins: [sd_yaml_cfg_mod]")
    assert r.code == 2 and not (tmp_path / "out").exists()
