"""The star's three views agree (issue 34: one schema per concept).

The YAML ``star:`` block (StarConfig), StarlightConfig and the options of ``stardomain star`` are derived from one
declaration (stardomain.starlight.config: each field's default, help, range check and views). Every setting is an
option of the command and a key of the block with the same default, or is marked as the other views' only; every
option of the command is a setting or one of the CLI's own (paths, data, device).
"""

from __future__ import annotations

import dataclasses

import click
import pytest

from stardomain.cli import cli
from stardomain.errors import StardomainError
from stardomain.experiment.config_blocks import StarConfig
from stardomain.starlight.config import CLI, CONFIG, KNOBS, VIEWS, YAML, StarKnobs, StarlightConfig, default_of, settings

# the options of `stardomain star` that are no star setting: where the sources, the data and the star are, how to run
CLI_ONLY = {
    "sources_dir", "n_sources", "dataset", "subset", "subset_seed", "model_name", "epochs", "lr", "weight_decay", "seed",
    "init_path", "out_path", "force", "allow_unpermuted", "data_root", "device", "threads", "log_sinks", "quiet",
}  # fmt: skip


def _plain(value: object) -> object:
    return list(value) if isinstance(value, (list, tuple)) else value


def _all_settings() -> dict[str, dataclasses.Field]:
    """Every setting by name, recipe left out: the one concept each view holds its own way (a Recipe; the YAML's
    overrides of the sources' recipe; the CLI's --epochs/--lr/--weight-decay)."""
    found: dict[str, dataclasses.Field] = {}
    for cls in (StarlightConfig, StarConfig):
        for f in settings(cls):
            if f.name == "recipe":
                assert f.metadata["views"] == ({CONFIG} if cls is StarlightConfig else {YAML})
                continue
            assert found.get(f.name, f) is f, f"{f.name} is declared twice: declare it once, in StarKnobs"
            found[f.name] = f
    return found


def _star_params() -> dict[str, click.Parameter]:
    command = cli.commands["star"]
    return {p.name: p for p in command.params if p.name is not None}


def test_every_field_of_both_dataclasses_is_a_declared_setting():
    for cls in (StarlightConfig, StarConfig):
        plain = [f.name for f in dataclasses.fields(cls) if "views" not in f.metadata]
        assert plain == [], f"{cls.__name__} fields without setting(...): {plain}"
    assert {f.name for f in settings(StarKnobs)} == set(KNOBS)
    for f in _all_settings().values():
        assert f.metadata["views"] and f.metadata["views"] <= set(VIEWS), f.name
        assert f.metadata["help"].strip(), f"{f.name} has no help"


def test_each_view_holds_exactly_the_settings_marked_for_it():
    every = _all_settings()
    for cls, view in ((StarlightConfig, CONFIG), (StarConfig, YAML)):
        held = {f.name for f in settings(cls)} - {"recipe"}
        assert held == {n for n, f in every.items() if view in f.metadata["views"]}, cls.__name__
    params = _star_params()
    cli_settings = {n for n, f in every.items() if CLI in f.metadata["views"]}
    assert cli_settings <= set(params), f"settings missing from `star`: {sorted(cli_settings - set(params))}"
    extra = set(params) - cli_settings - CLI_ONLY
    assert extra == set(), f"`star` options that are neither a setting nor marked the CLI's own: {sorted(extra)}"
    assert not (cli_settings & CLI_ONLY)
    for name in KNOBS:  # the knobs are in all three views
        assert every[name].metadata["views"] == set(VIEWS), name


def test_the_views_share_names_defaults_and_help():
    every, params = _all_settings(), _star_params()
    for name, f in every.items():
        default = _plain(default_of(f))
        if YAML in f.metadata["views"]:
            assert _plain(getattr(StarConfig(), name)) == default, name
        if CONFIG in f.metadata["views"]:
            assert _plain(getattr(StarlightConfig(), name)) == default, name
        if CLI in f.metadata["views"]:
            p = params[name]
            assert isinstance(p, click.Option)
            assert p.opts == ["--" + name.replace("_", "-")], p.opts
            assert _plain(p.default) == default, name
            assert p.help == f.metadata["help"], name
            if f.metadata["choices"] is not None:
                assert isinstance(p.type, click.Choice) and set(p.type.choices) == set(f.metadata["choices"]), name


@pytest.mark.parametrize(
    "name, bad, yaml_error, config_error",
    [
        ("mu", -1.0, "star.mu: must be >= 0 (got -1.0)", "starlight: mu must be >= 0 (got -1.0)"),
        ("pairs_per_step", 0, "star.pairs_per_step: must be >= 1 (got 0)", "starlight: pairs_per_step must be >= 1 (got 0)"),
        ("t_constant", 1.5, "star.t_constant: must be in [0, 1] (got 1.5)", "starlight: t_constant must be in [0, 1] (got 1.5)"),
        ("matching", "magic", "star.matching: must be one of weight, activation, none", "starlight: matching must be one of"),
    ],
)
def test_a_range_is_checked_once_and_worded_by_each_view(name, bad, yaml_error, config_error):
    extra = {"t_sampling": "constant"} if name == "t_constant" else {}
    for cls, error in ((StarConfig, yaml_error), (StarlightConfig, config_error)):
        with pytest.raises(StardomainError) as e:
            cls(**{name: bad, **extra})
        assert str(e.value).startswith(error), str(e.value)


def test_the_cli_refuses_a_bad_value_before_any_work(capsys, tmp_path):
    from cli_helpers import run_cli

    for args, message in (
        (["--repeats", "0"], "--repeats must be >= 1 (got 0)"),
        (["--mu", "-1"], "starlight: mu must be >= 0 (got -1.0)"),
        (["--pairs-per-step", "0"], "starlight: pairs_per_step must be >= 1 (got 0)"),
    ):
        r = run_cli(capsys, "star", "--sources", tmp_path / "no-zoo", "--out", tmp_path / "s.safetensors", *args)
        assert r.code == 2 and message in r.err, (args, r.err)
