"""Issue 30 item 6: the recipe study's own inputs, checked when the YAML is read. Nothing trains.

Issue 33: the lr and optimizer axes, checked and named in every tag (tests at the end).

Before: ``studies.recipe.width: [4, 8]`` on the MLP failed ("width=4.0 ... must be int"); two weight decays that
print alike (0.0001 and 0.00010000001) gave one tag, so six models trained before the run died; the MLP's init
axis (``paper`` and ``kaiming`` draw the same weights for it) trained duplicate zoos without a word.
"""

from __future__ import annotations

import pytest
import torch
from cli_helpers import tiny_config

from stardomain import models
from stardomain.errors import StardomainError
from stardomain.experiment.config import experiment_config
from stardomain.experiment.config_checks import nominal_data
from stardomain.experiment.studies.recipe import axis_label, cells, same_runs, tag_collision

BASE = tiny_config("axes")


def _config(recipe: dict, **top: object):
    return experiment_config({**BASE, **top, "studies": {**BASE["studies"], "recipe": recipe}})


def test_the_width_axis_is_typed_like_the_option_it_varies() -> None:
    cfg = _config({"width": [4, 8]})  # the MLP's width counts units: whole numbers
    assert cfg.studies.recipe.width == [4, 8] and all(type(w) is int for w in cfg.studies.recipe.width)
    assert [c.tag for c in cells(cfg, cfg.source_recipe())] == ["rc-e1-paper-sgd-lr0.05-wd0.0005-w4", "rc-e1-paper-sgd-lr0.05-wd0.0005-w8"]
    assert experiment_config(cfg.to_dict()).studies.recipe.width == [4, 8]  # a worker rebuilds the same cells
    assert _config({"width": [4.0, 8.0]}).studies.recipe.width == [4, 8]
    with pytest.raises(StardomainError, match=r"studies.recipe.width: mlp's option width is a whole number \(got 4.5\)"):
        _config({"width": [4.5, 8]})
    with pytest.raises(StardomainError, match="studies.recipe.width: every entry must be > 0 and finite"):
        _config({"width": [float("inf")]})
    rn = _config({"width": [1, 0.5]}, model={"name": "resnet20", "options": {"width": 0.25}})  # a multiplier: floats
    assert rn.studies.recipe.width == [1.0, 0.5] and all(type(w) is float for w in rn.studies.recipe.width)
    assert [c.tag[-3:] for c in cells(rn, rn.source_recipe())] == ["-w1", "0.5"]  # the tags of earlier runs


@pytest.mark.parametrize(
    "recipe, needle",
    [
        ({"weight_decay": [0.0001, 0.00010000001]}, "studies.recipe.weight_decay: 0.0001 and 0.00010000001 print alike (wd0.0001)"),
        ({"weight_decay": [0.0, 1e-9, 1e-12]}, None),  # distinct labels: no collision
        ({"width": [0.5, 0.50000001]}, "studies.recipe.width: 0.5 and 0.50000001 print alike (w0.5)"),
    ],
)
def test_two_cells_never_share_a_tag(recipe: dict, needle: str | None) -> None:
    model = {"name": "resnet20", "options": {"width": 0.25}} if "width" in recipe else BASE["model"]
    if needle is None:
        cfg = _config(recipe, model=model)
        tags = [c.tag for c in cells(cfg, cfg.source_recipe())]
        assert len(set(tags)) == len(tags)
        return
    with pytest.raises(StardomainError) as e:
        _config(recipe, model=model)
    assert needle in str(e.value) and "share a tag" in str(e.value)


def test_labels_of_whole_numbers_are_exact() -> None:
    assert axis_label("width", 1234567) == "w1234567" and axis_label("width", 0.5) == "w0.5"
    assert axis_label("epochs", 12) == "e12" and axis_label("weight_decay", 0.0) == "wd0"
    assert tag_collision("width", [1234567, 1234568]) is None
    assert tag_collision("weight_decay", [0.1, 0.1000000001]) is not None


def test_cells_that_are_the_same_run_are_named() -> None:
    cfg = _config({"init": ["paper", "kaiming", "xavier"], "epochs": [1, 2]})
    assert same_runs(cfg, *nominal_data(cfg)) == [
        ["rc-e1-paper-sgd-lr0.05-wd0.0005-w8", "rc-e1-kaiming-sgd-lr0.05-wd0.0005-w8", "rc-e1-xavier-sgd-lr0.05-wd0.0005-w8"],
        ["rc-e2-paper-sgd-lr0.05-wd0.0005-w8", "rc-e2-kaiming-sgd-lr0.05-wd0.0005-w8", "rc-e2-xavier-sgd-lr0.05-wd0.0005-w8"],
    ]
    # the claim behind it: for the MLP these inits draw the same weights
    built = []
    for init in ("paper", "kaiming", "xavier"):
        torch.manual_seed(0)
        built.append(models.create("mlp", 10, (1, 8, 8), depth=1, width=8, batchnorm=True, init=init).state_dict())
    assert all(torch.equal(built[0][k], b[k]) for b in built[1:] for k in built[0])
    # a CNN: kaiming and xavier differ (its paper init is PyTorch's default, so paper = default)
    rn = _config({"init": ["paper", "kaiming", "xavier", "default"]}, model={"name": "resnet20", "options": {"width": 0.25}})
    assert same_runs(rn, *nominal_data(rn)) == [["rc-e1-paper-sgd-lr0.05-wd0.0005-w0.25", "rc-e1-default-sgd-lr0.05-wd0.0005-w0.25"]]
    single = _config({"init": ["kaiming"]})
    assert same_runs(single, *nominal_data(single)) == []


def test_the_same_run_warning_is_one_line(capsys) -> None:
    from stardomain.experiment.runner import _warn_same_runs

    _warn_same_runs(_config({"init": ["paper", "kaiming"], "weight_decay": [0.0, 0.001]}))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: studies.recipe: cells "), lines
    assert (
        "rc-e1-paper-sgd-lr0.05-wd0-w8 = rc-e1-kaiming-sgd-lr0.05-wd0-w8; rc-e1-paper-sgd-lr0.05-wd0.001-w8 = rc-e1-kaiming-sgd-lr0.05-wd0.001-w8 are the same run"
        in lines[0]
    )
    _warn_same_runs(_config({"init": ["paper"]}))
    assert capsys.readouterr().err == ""


def test_lr_and_optimizer_axes_reach_the_cells_and_their_tags() -> None:
    cfg = _config({"lr": [0.05, 0.1], "optimizer": ["sgd", "adam"], "weight_decay": [0.0005, 0.005]})
    cs = cells(cfg, cfg.source_recipe())
    assert len(cs) == 8 and len({c.tag for c in cs}) == 8
    for c in cs:  # every axis is in the tag, and the recipe trains what the tag says
        v = c.values
        assert c.tag == f"rc-e1-paper-{v['optimizer']}-lr{v['lr']:g}-wd{v['weight_decay']:g}-w8"
        assert (c.recipe.optimizer, c.recipe.lr, c.recipe.weight_decay) == (v["optimizer"], v["lr"], v["weight_decay"])
        assert c.star_recipe.lr == c.recipe.lr and c.star_recipe.optimizer == c.recipe.optimizer  # the star trains like its cell
    adam = [c for c in cs if c.values["optimizer"] == "adam"]
    assert all(not c.recipe.nesterov for c in adam)  # Adam takes its own defaults, then the axis's lr
    # without an lr axis, another optimizer takes its own default lr (SGD's 0.05 would not be Adam's)
    only = _config({"optimizer": ["sgd", "adam"]})
    assert [c.recipe.lr for c in cells(only, only.source_recipe())] == [0.05, 1e-3]
    assert [c.tag for c in cells(only, only.source_recipe())] == [
        "rc-e1-paper-sgd-lr0.05-wd0.0005-w8",
        "rc-e1-paper-adam-lr0.001-wd0.0005-w8",
    ]
    assert experiment_config(cfg.to_dict()).studies.recipe.lr == [0.05, 0.1]  # a worker rebuilds the same cells


@pytest.mark.parametrize(
    "recipe, needle",
    [
        ({"lr": [0.1, 0.1]}, "studies.recipe.lr: an entry is repeated"),
        ({"lr": [0.0]}, "studies.recipe.lr: every entry must be > 0 and finite"),
        ({"lr": [0.1, 0.10000000001]}, "studies.recipe.lr: 0.1 and 0.10000000001 print alike (lr0.1)"),
        ({"optimizer": ["sgd", "rmsprop"]}, "studies.recipe.optimizer: sgd or adam (got 'rmsprop')"),
        ({"optimizer": ["adam", "adam"]}, "studies.recipe.optimizer: an entry is repeated"),
    ],
)
def test_bad_lr_and_optimizer_axes_are_refused_in_one_line(recipe: dict, needle: str) -> None:
    with pytest.raises(StardomainError) as e:
        _config(recipe)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("axis, values, fixed", [("lr", [0.05, 0.1], 0.2), ("optimizer", ["sgd", "adam"], "sgd")])
def test_a_star_recipe_that_fixes_a_varied_axis_is_refused(axis: str, values: list, fixed: object) -> None:
    with pytest.raises(StardomainError) as e:
        _config({axis: values}, star={"recipe": {axis: fixed}})
    msg = str(e.value)
    assert msg.startswith(f"studies.recipe.{axis} varies every cell's {axis}, but star.recipe.{axis} fixes") and "\n" not in msg
    _config({"weight_decay": [0.0005, 0.005]}, star={"recipe": {axis: fixed}})  # an axis not varied: the override stands
