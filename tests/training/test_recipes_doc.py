"""docs/recipes.md cannot drift from the code (issue 33, item 2): its tables are parsed and every stardomain value
compared with ``named_recipe`` / ``default_recipe``; ``recipe: paper`` from a YAML and from ``train --recipe`` gives
exactly the table's values."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any

import pytest
from cli_helpers import run_cli
from paths import REPO

from stardomain.errors import StardomainError
from stardomain.experiment.config import ExperimentConfig, from_dict
from stardomain.training.recipe import (
    _EXECUTION_DEFAULTS,
    PAPER_RECIPE,
    RECIPE_DATASETS,
    RECIPE_NAMES,
    Recipe,
    default_recipe,
    named_recipe,
)

DOC = REPO / "docs" / "recipes.md"
RECIPE_FIELDS = [f.name for f in fields(Recipe) if f.name not in _EXECUTION_DEFAULTS]


def _value(cell: str) -> Any:
    """The first `backticked` value of a cell, typed: true/false, an int, a float, else the text."""
    m = re.search(r"`([^`]+)`", cell)
    assert m, f"no `value` in the cell {cell!r}"
    text = m.group(1)
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table of ``text`` as (header cells, rows of cells)."""
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|(\s*-+\s*\|)+$", lines[i + 1]):
            split = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
            header, rows = split(lines[i]), []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(split(lines[i]))
                i += 1
            out.append((header, rows))
        else:
            i += 1
    return out


def _named_table() -> tuple[list[tuple[str, list[str]]], dict[str, list[str]]]:
    """The named-recipe table: its columns as (recipe name, datasets) and its rows by field."""
    tables = [t for t in _tables(DOC.read_text()) if t[0][0] == "field"]
    assert len(tables) == 1, "docs/recipes.md has one table of the named recipes (header 'field | `name` · `dataset` ...')"
    header, rows = tables[0]
    columns = []
    for cell in header[1:]:
        name, *datasets = re.findall(r"`([^`]+)`", cell)
        columns.append((name, datasets))
    return columns, {row[0]: row[1:] for row in rows}


def test_the_named_recipe_table_is_the_code():
    columns, rows = _named_table()
    assert sorted(rows) == sorted(RECIPE_FIELDS), "every recipe field is a row (a new field needs its row)"
    covered = {(name, ds) for name, datasets in columns for ds in datasets}
    assert covered == {(n, ds) for n in RECIPE_NAMES for ds in RECIPE_DATASETS}, "every named recipe of every dataset with one"
    for col, (name, datasets) in enumerate(columns):
        for ds in datasets:
            recipe = named_recipe(ds, name)
            for key, cells in rows.items():
                assert _value(cells[col]) == getattr(recipe, key), (name, ds, key)


def test_every_stardomain_column_is_default_recipe():
    """Each per-architecture table's stardomain column (header: stardomain default (`dataset`... [`optimizer`])):
    every dataset it names gets exactly these values from default_recipe."""
    checked = set()
    for header, rows in _tables(DOC.read_text()):
        if not header[-1].startswith("stardomain default"):
            continue
        names = re.findall(r"`([^`]+)`", header[-1])
        optimizer = next((n for n in names if n in ("sgd", "adam")), "sgd")
        datasets = [n for n in names if n not in ("sgd", "adam")]
        assert datasets and set(datasets) <= set(RECIPE_DATASETS), header[-1]
        for ds in datasets:
            recipe = default_recipe(ds, optimizer)
            compared = 0
            for row in rows:
                if row[0] in RECIPE_FIELDS:  # a row named by its Recipe field (the italic rows are not)
                    assert _value(row[-1]) == getattr(recipe, row[0]), (ds, optimizer, row[0], row[-1])
                    compared += 1
            assert compared == len(RECIPE_FIELDS), f"the table of {ds} lists every recipe field"
            checked.add(ds)
    assert checked == set(RECIPE_DATASETS), "a table for every dataset with a default recipe"


@pytest.mark.parametrize("dataset", ["cifar10", "digits"])
def test_recipe_paper_from_yaml_is_the_table(dataset):
    columns, rows = _named_table()
    col = next(i for i, (name, datasets) in enumerate(columns) if name == "paper" and dataset in datasets)
    want = {key: _value(cells[col]) for key, cells in rows.items()}
    cfg = from_dict(ExperimentConfig, {"dataset": dataset, "train": {"recipe": "paper"}})
    assert cfg.source_recipe().to_dict() == want
    assert cfg.star_recipe(cfg.source_recipe(), cfg.star.recipe).to_dict() == want  # the star trains like its sources
    # the name is recorded where it was written, and a worker rebuilding the config gets the same recipe
    assert cfg.to_dict()["train"] == {"recipe": "paper"}
    assert from_dict(ExperimentConfig, cfg.to_dict()).source_recipe() == cfg.source_recipe()
    # the paper's CIFAR values, with augmentation only where the data takes it
    assert want == {**PAPER_RECIPE, "augment": dataset == "cifar10"}


def test_recipe_paper_overrides_and_the_default_name():
    cfg = from_dict(ExperimentConfig, {"dataset": "digits", "train": {"recipe": "paper", "epochs": 3, "nesterov": False}})
    assert cfg.source_recipe() == named_recipe("digits", "paper").replace(epochs=3, nesterov=False)
    plain = from_dict(ExperimentConfig, {"dataset": "digits", "train": {"epochs": 3}})
    assert plain.recipe == "default" and "recipe" not in plain.to_dict()["train"]  # older configs keep their identity
    assert from_dict(ExperimentConfig, {"dataset": "digits", "train": {"recipe": "default", "epochs": 3}}).to_dict() == plain.to_dict()
    # the optimizer study applies the named recipe to its optimizer (Adam at lr 1e-3), with the shared train overrides
    study = {"optimizer": {"optimizer": "adam", "sources": 2, "held_out": 1}}
    opt = from_dict(ExperimentConfig, {"dataset": "digits", "train": {"recipe": "paper", "epochs": 3}, "studies": study})
    assert opt.optimizer_recipe() == named_recipe("digits", "paper", "adam").replace(epochs=3)
    assert (opt.optimizer_recipe().lr, opt.optimizer_recipe().batch_size) == (1e-3, 128)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": {"recipe": "authors"}}, "train.recipe: one of default, paper (got 'authors')"),
        ({"recipe": "paper", "train": {"recipe": "default"}}, "name the recipe once"),
    ],
)
def test_a_bad_recipe_name_is_refused_in_one_line(data, message):
    with pytest.raises(StardomainError, match=re.escape(message)):
        from_dict(ExperimentConfig, {"dataset": "digits", **data})


def test_own_data_trains_with_recipe_paper_without_epochs(tmp_path):
    """`recipe: paper` chooses the paper's 200 epochs: data without a default recipe is not refused."""
    import numpy as np

    path = tmp_path / "blobs.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.normal(size=(40, 4)).astype("float32"), y_train=np.arange(40) % 2,
             x_test=rng.normal(size=(10, 4)).astype("float32"), y_test=np.arange(10) % 2)  # fmt: skip
    with pytest.raises(StardomainError, match="or train: {recipe: paper}"):
        from_dict(ExperimentConfig, {"dataset": f"file:{path}", "model": {"name": "mlp"}})
    cfg = from_dict(ExperimentConfig, {"dataset": f"file:{path}", "model": {"name": "mlp"}, "train": {"recipe": "paper"}})
    assert cfg.source_recipe().epochs == 200 and cfg.source_recipe().lr == 0.1


def test_train_recipe_paper_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "zoo"
    args = ["train", "-d", "digits", "-m", "mlp", "-o", "width=4", "-o", "depth=1", "--device", "cpu", "-q", "--out", out]
    r = run_cli(capsys, *args, "--recipe", "paper", "-e", "1")
    assert r.code == 0, r.err
    recorded = json.loads((out / "seed-0.json").read_text())["recipe"]
    assert recorded == named_recipe("digits", "paper").replace(epochs=1).to_dict()
    assert (recorded["lr"], recorded["batch_size"], recorded["augment"]) == (0.1, 128, False)
    r = run_cli(capsys, *args, "--recipe", "authors")
    assert r.code == 2 and "'authors' is not one of 'default', 'paper'" in r.err
