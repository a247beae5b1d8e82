"""Issue 30, item 7 (a, b): an option another one makes meaningless is refused, and so is an empty example input.

``star.t_constant`` without ``t_sampling: constant`` used to be ignored (the star trained with uniform t), and
``spec --example-input`` with a 0-sample array printed "max |logit difference| 0 (function kept)", exit 0.
Each is now one line, exit 2 in the CLI, before any work, nothing written - in the YAML, the ``star`` command
and ``StarlightConfig`` alike; likewise ``t_beta`` without beta sampling, ``realign_every`` with
``matching: none`` and (``star`` command) ``--matching-samples`` without activation matching.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import assert_one_line_error, run_cli, tiny_config

from stardomain.errors import StardomainError

TRAIN = ["train", "-d", "digits", "-m", "mlp", "-o", "depth=1", "-o", "width=8", "-e", "1", "--subset", "200", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """Two tiny sources: enough for `stardomain star` to start training (which it must not)."""
    from click.testing import CliRunner

    from stardomain.cli import cli

    root = tmp_path_factory.mktemp("meaningless_zoo")
    r = CliRunner().invoke(cli, [*TRAIN, "--n", "2", "--out", str(root / "zoo")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return root / "zoo"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


STAR_CASES = {
    "t-constant-without-constant": (["--t-constant", "0.3"], "--t-constant"),
    "t-constant-default-value-given": (["--t-constant", "0.5", "--t-sampling", "beta"], "--t-constant"),
    "t-beta-without-beta": (["--t-beta", "2", "5", "--t-sampling", "uniform"], "--t-beta"),
    "realign-every-without-matching": (["--realign-every", "3", "--matching", "none"], "--realign-every"),
    "matching-samples-without-activation": (["--matching-samples", "64"], "--matching-samples"),
}


@pytest.mark.parametrize("case", sorted(STAR_CASES))
def test_star_refuses_an_option_another_makes_meaningless(zoo, tmp_path, capsys, case):
    extra, flag = STAR_CASES[case]
    before = _files(zoo)
    out = tmp_path / "star.safetensors"
    r = run_cli(capsys, "star", "--sources", zoo, "--epochs", "1", "--out", out, "--device", "cpu", "-q", *extra)
    assert r.code == 2
    assert_one_line_error(r, flag, "ignored")
    assert not out.exists() and _files(zoo) == before and list(tmp_path.iterdir()) == []


def test_star_accepts_the_options_with_the_setting_that_uses_them(zoo, tmp_path, capsys):
    out = tmp_path / "star.safetensors"
    r = run_cli(
        capsys, "star", "--sources", zoo, "--epochs", "1", "--out", out, "--device", "cpu", "-q",
        "--t-sampling", "constant", "--t-constant", "0.3", "--matching", "none",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert out.exists()


YAML_CASES = {
    "t_constant": ({"t_constant": 0.3}, "star.t_constant"),
    "t_constant-with-beta": ({"t_sampling": "beta", "t_constant": 0.7}, "star.t_constant"),
    "t_beta": ({"t_sampling": "stratified", "t_beta": [2.0, 5.0]}, "star.t_beta"),
    "realign_every": ({"matching": "none", "realign_every": 5}, "star.realign_every"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_a_yaml_star_block_with_a_meaningless_key_is_refused_at_load(tmp_path, capsys, case):
    star, key = YAML_CASES[case]
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(tiny_config("meaningless", star=star)))
    r = run_cli(capsys, "run", tmp_path / "exp.yaml", "--out", tmp_path / "out")
    assert r.code == 2
    assert_one_line_error(r, key, "ignored")
    assert not (tmp_path / "out").exists()


def test_the_yaml_keys_are_accepted_with_the_setting_that_uses_them():
    from stardomain.experiment.config import ExperimentConfig, from_dict

    for star in ({"t_sampling": "constant", "t_constant": 0.3}, {"t_sampling": "beta", "t_beta": [2.0, 5.0]}, {"realign_every": 5}):
        from_dict(ExperimentConfig, tiny_config("ok", star=star))


def test_starlight_config_refuses_them_too():
    from stardomain.starlight import StarlightConfig

    for kwargs, key in (
        ({"t_constant": 0.25}, "t_constant"),
        ({"t_sampling": "uniform", "t_beta": (2.0, 5.0)}, "t_beta"),
        ({"matching": "none", "realign_every": 2}, "realign_every"),
    ):
        with pytest.raises(StardomainError, match=f"starlight: {key} .*ignored") as e:
            StarlightConfig(**kwargs)
        assert "\n" not in str(e.value)
    assert StarlightConfig(t_sampling="constant", t_constant=0.25).t_constant == 0.25


@pytest.mark.parametrize("shape", [(0, 64), (0, 1, 8, 8), ()])
def test_spec_refuses_an_example_input_without_a_sample(tmp_path, capsys, shape):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(shape, dtype=np.float32))
    r = run_cli(capsys, "spec", "mlp", "--in-shape", "1,8,8", "--example-input", path)
    assert r.code == 2 and r.out == ""  # it used to print "max |logit difference| 0 (function kept)", exit 0
    assert_one_line_error(r, "--example-input", "no sample")


def test_the_python_api_refuses_an_empty_example_input_too():
    from stardomain import models
    from stardomain.permute import trace_spec
    from stardomain.permute.spec_report import spec_report

    model = models.create("mlp", 10, (1, 8, 8), depth=1, width=4)
    for call in (lambda: spec_report(model, torch.zeros(0, 1, 8, 8)), lambda: trace_spec(model, torch.zeros(0, 1, 8, 8))):
        with pytest.raises(StardomainError, match="no sample") as e:
            call()
        assert "\n" not in str(e.value)
    assert spec_report(model, torch.zeros(1, 1, 8, 8))["random_permutation"]["kept"]
