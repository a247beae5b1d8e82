"""Eq. 9's fusion loss, normalised as the authors' code does or summed as stardomain always has (issue 33, item 6);
`stardomain star --weight-decay` and the poor-star warning the pipeline's flag gives."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import assert_one_line_error, run_cli, tiny_config

from stardomain import models
from stardomain.checkpoints import store
from stardomain.errors import StardomainError
from stardomain.experiment.config import ExperimentConfig, from_dict
from stardomain.experiment.pairs import poor_star_warning
from stardomain.starlight import Starlight, StarlightConfig
from stardomain.starlight.algorithm import fused_loss


def _mlp(seed: int, ds):
    torch.manual_seed(seed)
    return models.create("mlp", ds.num_classes, ds.in_shape, depth=1, width=16)


def test_the_two_losses_agree_at_mu_zero_and_differ_by_one_plus_mu(digits):
    xb, yb = digits.train_x[:64], digits.train_y[:64]
    source = _mlp(1, digits).state_dict()
    interp, own = torch.tensor(0.7311), torch.tensor(2.25)
    assert abs(float(fused_loss(interp, own, 0.0, "paper") - fused_loss(interp, own, 0.0, "sum"))) <= 1e-7
    totals = {}
    for how in ("sum", "paper"):
        sl = Starlight(_mlp(0, digits), [source], digits, StarlightConfig(matching="none", mu=1.0, fusion_loss=how))
        totals[how], interp_t = sl.loss(xb, yb, [(0, 0.4)])
        own_t = F.cross_entropy(sl.model(xb), yb)
    torch.testing.assert_close(totals["sum"], interp_t + own_t)  # unchanged: L~ + mu*L
    torch.testing.assert_close(totals["paper"], totals["sum"] / 2)  # the authors': divided by 1 + mu = 2
    # at mu = 0 a Starlight step is the plain interpolated loss whatever the setting would be: no fusion term
    plain = Starlight(_mlp(0, digits), [source], digits, StarlightConfig(matching="none"))
    total0, interp0 = plain.loss(xb, yb, [(0, 0.4)])
    assert abs(float((total0 - fused_loss(interp0, own_t, 0.0, "paper")).detach())) <= 1e-7


def test_fusion_loss_is_recorded_only_off_its_default_and_refused_without_mu():
    assert "fusion_loss" not in StarlightConfig(mu=1.0).to_dict()  # sum: stars recorded before the setting are reused
    assert StarlightConfig(mu=1.0, fusion_loss="paper").to_dict()["fusion_loss"] == "paper"
    with pytest.raises(StardomainError, match="fusion_loss paper .* mu is 0"):
        StarlightConfig(fusion_loss="paper")
    cfg = tiny_config("fusion")
    with pytest.raises(StardomainError, match=r"star.fusion_loss: .*no fusion study"):
        from_dict(ExperimentConfig, {**cfg, "star": {**cfg.get("star", {}), "fusion_loss": "paper"}})
    fused = {**cfg, "star": {**cfg.get("star", {}), "fusion_loss": "paper"}, "studies": {"fusion": {"sizes": [2], "mu": 1.0}}}
    exp = from_dict(ExperimentConfig, fused)
    assert exp.to_dict()["star"]["fusion_loss"] == "paper" and "fusion_loss" not in from_dict(ExperimentConfig, cfg).to_dict()["star"]
    recipe = exp.source_recipe()
    assert exp.starlight_config(recipe, 1.0).fusion_loss == "paper"  # the fusion study's stars
    assert exp.starlight_config(recipe, 0.0).fusion_loss == "sum"  # the main star (mu = 0) keeps its identity


def test_poor_star_warning_follows_the_pipelines_margin():
    sources = [{"test_acc": 0.95, "test_loss": 0.2}, {"test_acc": 0.93, "test_loss": 0.25}]
    assert poor_star_warning({"test_acc": 0.935, "test_loss": 0.3}, sources) == ""  # within 1 pp of the mean 0.94
    line = poor_star_warning({"test_acc": 0.77, "test_loss": 0.9}, sources)
    assert "17.00 pp below" in line and "94.00%" in line
    assert poor_star_warning({"test_acc": 0.77}, [{"metrics": "none"}]) == ""  # nothing recorded: nothing said


def test_star_cli_weight_decay_fusion_loss_and_poor_star_warning(tmp_path, capsys):
    zoo_dir = tmp_path / "zoo"
    r = run_cli(capsys, "train", "-d", "digits", "-o", "width=8", "-o", "depth=1", "-e", "3", "--n", "2", "--out", zoo_dir, "-q")
    assert r.code == 0, r.err
    out = tmp_path / "star.safetensors"
    args = ("star", "--sources", zoo_dir, "--epochs", "1", "--lr", "1e-6", "--weight-decay", "0.001", "--out", out, "-q")
    r = run_cli(capsys, *args, "--mu", "1", "--fusion-loss", "paper")
    assert r.code == 0, r.err
    meta = store.read_metadata(out)
    assert meta["starlight"]["recipe"]["weight_decay"] == 0.001 and meta["starlight"]["fusion_loss"] == "paper"
    assert json.dumps(meta["identity"]).count('"fusion_loss": "paper"') == 1
    warnings = [ln for ln in r.err.splitlines() if ln.startswith("warning:") and "below its sources' mean" in ln]
    assert len(warnings) == 1, r.err  # lr 1e-6 for one epoch: the star is near its random init
    r = run_cli(capsys, "star", "--sources", tmp_path / "absent", "--fusion-loss", "paper", "--out", tmp_path / "x.safetensors")
    assert_one_line_error(r, "--fusion-loss", "--mu")
    r = run_cli(capsys, "star", "--sources", tmp_path / "absent", "--weight-decay", "-1", "--out", tmp_path / "x.safetensors")
    assert_one_line_error(r, "--weight-decay must be >= 0")
