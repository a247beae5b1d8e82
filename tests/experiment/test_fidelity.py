"""Issue 22: the authors' init per architecture, convergence flagged, the star's budget and matching from YAML,
and the recipe-sensitivity study end to end."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import assert_one_line_error, run_cli, tiny_config
from paths import REPO
from torch import nn

from stardomain.checkpoints import store
from stardomain.errors import StardomainError
from stardomain.models import PAPER_SCHEMES, create
from stardomain.training import zoo
from stardomain.training.loop import default_recipe

SMALL = {
    "mlp": {"width": 64},
    "resnet18": {"width": 0.25},
    "resnet20": {},
    "resnet18_imagenet": {"width": 0.25},
    "vgg11": {"width": 0.5},
    "vgg16": {"width": 0.5},
    "vgg19": {"width": 0.5},
    "densenet40_12": {},
    "wrn": {"depth": 10, "width": 2},
}


def _expected_std(m: nn.Module, scheme: str) -> float | None:
    """The std a layer's weight should have under ``scheme`` (None: the scheme leaves it at PyTorch's default)."""
    w = m.weight
    fan_in = w[0].numel()
    fan_out = w.shape[0] * (w[0][0].numel() if w.dim() > 2 else 1)
    if isinstance(m, nn.Conv2d) and scheme in ("kaiming", "densenet"):
        return math.sqrt(2 / fan_out)  # the authors' N(0, 2/(k*k*out_channels)) = Kaiming-normal fan_out
    if isinstance(m, nn.Conv2d) and scheme == "xavier":
        return math.sqrt(2) * math.sqrt(2 / (fan_in + fan_out))
    return 1 / math.sqrt(3 * fan_in)  # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Kaiming-uniform, a=sqrt(5))


@pytest.mark.parametrize("name", sorted(PAPER_SCHEMES))
def test_paper_init_matches_the_authors_scheme(name: str) -> None:
    """Weight statistics of a freshly built model: every large conv/linear layer's std within 10% of the scheme's
    formula, BatchNorm 1/0, and the biases the scheme zeroes are zero."""
    scheme = PAPER_SCHEMES[name][0]
    torch.manual_seed(0)
    shape = (1, 8, 8) if name == "mlp" else (3, 32, 32)
    model = create(name, 10, shape, **SMALL[name])
    assert model.arch["options"]["init"] == "paper"
    checked = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel() >= 2000:
            want = _expected_std(m, scheme)
            assert abs(m.weight.std().item() / want - 1) < 0.10, (m, m.weight.std().item(), want)
            checked += 1
        if isinstance(m, nn.Conv2d) and m.bias is not None and scheme in ("kaiming", "densenet"):
            assert torch.all(m.bias == 0)
        if isinstance(m, nn.Linear) and scheme == "densenet":
            assert torch.all(m.bias == 0)  # the authors' DenseNet zeroes the classifier's bias
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert checked >= 1


@pytest.mark.parametrize("init, scheme", [("kaiming", "kaiming"), ("default", "default"), ("xavier", "xavier")])
def test_every_scheme_on_resnet20(init: str, scheme: str) -> None:
    torch.manual_seed(0)
    model = create("resnet20", 10, (3, 32, 32), init=init)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() >= 2000]
    for m in convs:
        assert abs(m.weight.std().item() / _expected_std(m, scheme) - 1) < 0.10
    assert model.arch["options"]["init"] == init


def _fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for v in model.state_dict().values():
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def test_kaiming_is_bit_identical_to_the_init_before_it_was_a_choice() -> None:
    """Fingerprints of models built (seed 0) by stardomain before `init` existed: old checkpoints stay what they were."""
    before = {
        ("resnet20", (("width", 0.5),)): "c5e744d16240f720",
        ("vgg11", (("width", 0.25),)): "859024391a0f67ca",
        ("densenet40_12", (("depth", 13), ("growth", 4))): "0d7c42311b1b6dc0",
        ("wrn", (("depth", 10), ("width", 1))): "db4cb00ba863e7ad",
    }
    for (name, opts), fp in before.items():
        torch.manual_seed(0)
        assert _fingerprint(create(name, 10, (3, 32, 32), init="kaiming", **dict(opts))) == fp, name
    torch.manual_seed(0)  # VGG: the authors' init is Kaiming-normal fan_out, so paper and kaiming are the same weights
    assert _fingerprint(create("vgg11", 10, (3, 32, 32), width=0.25)) == before[("vgg11", (("width", 0.25),))]


def test_a_legacy_checkpoint_is_rebuilt_with_the_init_it_was_trained_from() -> None:
    torch.manual_seed(0)
    legacy = {"name": "resnet20", "num_classes": 10, "in_shape": [3, 32, 32], "options": {"width": 0.5}}
    model = store.build_model(legacy)
    assert model.arch["options"]["init"] == "kaiming"
    assert _fingerprint(model) == "c5e744d16240f720"


def test_bad_init_is_one_line() -> None:
    with pytest.raises(StardomainError, match="init 'he' is not a scheme; use one of paper, kaiming, default, xavier"):
        create("resnet20", 10, (3, 32, 32), init="he")


def test_init_is_part_of_the_identity(tmp_path: Path, digits) -> None:
    """Two zoos differing only in init are refused as one zoo, and a member is never reused under another init."""
    recipe = default_recipe("digits").replace(epochs=1)
    opts = {"width": 0.25}
    zoo.train_zoo(digits, "resnet20", {**opts, "init": "paper"}, recipe, [0], tmp_path, progress=False)
    with pytest.raises(StardomainError, match="already holds a different run.*init"):
        zoo.train_zoo(digits, "resnet20", {**opts, "init": "kaiming"}, recipe, [0], tmp_path, progress=False)
    zoo.train_zoo(digits, "resnet20", {**opts, "init": "kaiming"}, recipe, [1], tmp_path, progress=False)
    with pytest.raises(StardomainError, match=r"mixes architectures: init paper \(seed-0\) vs (init )?kaiming \(seed-1\)"):
        zoo.load_zoo(tmp_path)
    # the star a CLI builds from these sources would take their init: both recorded in each checkpoint
    assert store.read_metadata(tmp_path / "seed-0.safetensors")["arch"]["options"]["init"] == "paper"
    assert store.read_metadata(tmp_path / "seed-1.safetensors")["config"]["options"]["init"] == "kaiming"


def test_cli_train_init_and_the_convergence_warning(tmp_path: Path, capsys) -> None:
    r = run_cli(
        capsys,
        "train",
        "-d",
        "digits",
        "-m",
        "mlp",
        "-o",
        "width=8",
        "-e",
        "1",
        "--init",
        "default",
        "--seed",
        "0",
        "--out",
        tmp_path / "z",
        "-q",
    )
    assert r.code == 0, r.err
    meta = json.loads((tmp_path / "z" / "seed-0.json").read_text())
    assert meta["arch"]["options"]["init"] == "default" and meta["config"]["options"]["init"] == "default"
    assert "train_acc=" in r.out
    warning = [ln for ln in r.err.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "1 of 1 regular models below 99.0% train accuracy" in warning[0]
    assert "sources not converged: barriers are not the paper's quantity" in warning[0]
    clash = run_cli(capsys, "train", "-d", "digits", "-m", "mlp", "-o", "init=kaiming", "--init", "default", "--out", tmp_path / "y")
    assert_one_line_error(clash, "--init default and -o init=kaiming disagree")


BASE = tiny_config("fid")


def _run(tmp_path: Path, capsys, cfg: dict, name: str = "exp") -> tuple[Path, dict, str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / name
    r = run_cli(capsys, "run", path, "--out", out, "-q")
    assert r.code == 0, r.err
    return out, json.loads((out / "results.json").read_text()), (out / "report.md").read_text()


def test_convergence_flag_on_an_unconverged_run_and_not_on_a_converged_one(tmp_path: Path, capsys) -> None:
    out, res, report = _run(tmp_path, capsys, BASE, "raw")
    conv = res["endpoints"]["convergence"]
    assert conv["converged"] is False and conv["n"] == 3 and conv["threshold"] == 0.99 and conv["n_below"] >= 1
    assert conv["min_train_acc"] < 0.99 and res["tests"]["barriers"]["converged"] is False
    assert "**Warning — sources not converged: barriers are not the paper's quantity:**" in report
    verdicts = [ln for ln in report.splitlines() if ln.startswith("- ") and "barrier" in ln]
    assert verdicts and all(ln.endswith("[sources not converged: barriers are not the paper's quantity]") for ln in verdicts)
    # the same pipeline with sources trained to convergence (digits: 100% train accuracy in 30 epochs)
    done = {**BASE, "model": {"name": "mlp", "options": {"depth": 1, "width": 64}}, "train": {"epochs": 30}}
    _, res2, report2 = _run(tmp_path, capsys, done, "converged")
    conv2 = res2["endpoints"]["convergence"]
    assert conv2["converged"] is True and conv2["min_train_acc"] >= 0.99 and res2["tests"]["barriers"]["converged"] is True
    assert "not converged" not in report2.replace("**NOT converged**", "") and "threshold 99.0 %: converged" in report2
    # the threshold is a setting, recorded
    _, res3, _ = _run(tmp_path, capsys, {**BASE, "eval": {**BASE["eval"], "converged_train_acc": 0.01}}, "lenient")
    assert res3["endpoints"]["convergence"]["converged"] is True and res3["config"]["eval"]["converged_train_acc"] == 0.01
    # 100 % train accuracy is not the paper's train loss ~0.001: with a loss threshold the same zoo is flagged
    strict = {**done, "eval": {**BASE["eval"], "converged_train_loss": 1e-6}}
    _, res4, report4 = _run(tmp_path, capsys, strict, "strict")
    conv4 = res4["endpoints"]["convergence"]
    assert conv4["converged"] is False and conv4["loss_threshold"] == 1e-6 and conv4["max_train_loss"] > 1e-6
    assert conv4["min_train_acc"] >= 0.99 and "or above train loss 1e-06" in report4


def test_star_budget_matching_and_t_constant_go_from_yaml_to_the_checkpoint(tmp_path: Path, capsys) -> None:
    cfg = {
        **BASE,
        "train": {"epochs": 2},
        "model": {"name": "mlp", "options": {"depth": 1, "width": 8}, "init": "kaiming"},
        "star": {"epochs_factor": 1.5, "matching": "none", "t_sampling": "constant", "t_constant": 0.3},
    }
    out, res, report = _run(tmp_path, capsys, cfg)
    meta = json.loads((out / "stars" / "main-z2.json").read_text())
    assert meta["starlight"]["matching"] == "none" and meta["starlight"]["t_sampling"] == "constant"
    assert meta["starlight"]["t_constant"] == 0.3 and meta["starlight"]["recipe"]["epochs"] == 3  # round(1.5 x 2)
    assert meta["budget"] == {"epochs": 3, "epochs_factor": 1.5, "source_epochs": [2, 2]}
    assert meta["arch"]["options"]["init"] == "kaiming" and len(meta["history"]) == 3
    assert res["config"]["star"]["epochs_factor"] == 1.5 and res["config"]["model"]["init"] == "kaiming"
    assert res["models"]["star_recipe"]["epochs"] == 3 and "matching none" in report
    for p in (out / "zoo" / "main").glob("seed-*.json"):
        assert json.loads(p.read_text())["arch"]["options"]["init"] == "kaiming"


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"model": {"name": "mlp", "init": "he"}}, "model.init: init 'he' is not a scheme"),
        ({"model": {"name": "mlp", "options": {"init": "kaiming"}}}, "model.options.init: the init scheme is model.init"),
        ({"star": {"epochs_factor": 2, "recipe": {"epochs": 3}}}, "star: give the star's budget once"),
        ({"star": {"epochs_factor": 0}}, "star.epochs_factor: a positive multiple"),
        ({"star": {"t_constant": 1.5}}, "star.t_constant: must be in [0, 1]"),
        ({"star": {"recipe": {"precision": "bf16"}}}, "star: starlight: star models train in fp32"),
        ({"eval": {"converged_train_acc": 1.5}}, "eval.converged_train_acc: a fraction in (0, 1]"),
        ({"studies": {"recipe": {"init": ["paper", "he"]}}}, "studies.recipe.init: init 'he' is not a scheme"),
        ({"studies": {"recipe": {"epochs": [0, 5]}}}, "studies.recipe.epochs: every entry must be >= 1"),
        ({"studies": {"recipe": {"epochs": [5, 5]}}}, "studies.recipe.epochs: an entry is repeated"),
        ({"studies": {"recipe": {"width": [1], "sources": 1}}}, "studies.recipe.sources: |Z| must be >= 2"),
        (
            {"model": {"name": "densenet40_12"}, "studies": {"recipe": {"width": [1]}}},
            "studies.recipe.width: model densenet40_12 has no option 'width'",
        ),
        ({"studies": {"recipe": {"epochs": [1], "inits": ["paper"]}}}, "studies.recipe: unknown key 'inits'"),
        ({"studies": {"width_depth": {"settings": [{"widht": 4}]}}}, "studies.width_depth.settings[0]: 'widht' is not an option of mlp"),
    ],
)
def test_fidelity_config_errors_are_one_line_before_any_work(tmp_path: Path, capsys, patch: dict, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, **patch}))
    assert_one_line_error(run_cli(capsys, "run", path, "--out", tmp_path / "out"), message)
    assert not (tmp_path / "out").exists()


def test_tiny_recipe_study_end_to_end_with_its_figure(tmp_path: Path, capsys) -> None:
    """A 2 x 2 x 2 grid (epochs x init x weight decay) on digits with a narrow MLP and 2 stars per cell."""
    cfg = {
        **BASE,
        "star": {"repeats": 2, "epochs_factor": 1},
        "studies": {
            "barriers": False,
            "distances": False,
            "recipe": {"epochs": [1, 3], "init": ["paper", "xavier"], "weight_decay": [0.0005, 0.005], "sources": 2, "held_out": 1},
        },
    }
    out, res, report = _run(tmp_path, capsys, cfg)
    rs = res["recipe_study"]
    assert rs["axes"] == {
        "epochs": [1, 3],
        "init": ["paper", "xavier"],
        "optimizer": ["sgd"],
        "lr": [0.05],
        "weight_decay": [0.0005, 0.005],
        "width": [8],
    }
    assert len(rs["rows"]) == 8 and len(res["tests"]["recipe_study"]) == 8
    tags = [r["tag"] for r in rs["rows"]]
    assert len(set(tags)) == 8 and tags[0] == "rc-e1-paper-sgd-lr0.05-wd0.0005-w8"
    for row, t in zip(rs["rows"], res["tests"]["recipe_study"]):
        c = row["cell"]
        assert row["recipe"]["epochs"] == c["epochs"] and row["recipe"]["weight_decay"] == c["weight_decay"]
        assert row["star_recipe"]["epochs"] == c["epochs"] and row["options"]["init"] == c["init"]
        assert len(row["stars"]) == 2 and row["summary"]["star-held-out"]["over_stars"]["test_loss"]["n_stars"] == 2
        assert "convergence" in row["endpoints"] and t["converged"] == row["endpoints"]["convergence"]["converged"]
        member = json.loads((out / "zoo" / row["tag"] / "seed-0.json").read_text())
        assert member["arch"]["options"]["init"] == c["init"] and member["recipe"]["epochs"] == c["epochs"]
    assert "## Recipe sensitivity: when does a star exist?" in report and "recipe_sensitivity.png" in report
    assert (out / "recipe_sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "recipe_sensitivity.pdf").exists()
    # 1-epoch MLPs on digits are far from converged: their rows say so
    assert any("**no**" in ln for ln in report.splitlines() if ln.startswith("| 1 |"))
    # the README's settings table reads the same run: one row per cell, its recipe, convergence and star verdicts
    import subprocess
    import sys

    script = REPO / "scripts" / "results_tables.py"
    r = subprocess.run([sys.executable, str(script), "settings", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith(f"| {res['name']} · rc-")]
    assert len(rows) == 8
    for row, ln in zip(rs["rows"], rows):
        c, conv = row["cell"], row["endpoints"]["convergence"]
        assert f"· {row['tag']} | w8 · {c['init']} · {c['epochs']} ep · wd {c['weight_decay']:g} | 2 / 1 / 2 |" in ln
        assert ("not converged" in ln) is (not conv["converged"]) and ("(k=2)" in ln)
