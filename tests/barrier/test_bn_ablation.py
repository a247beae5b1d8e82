"""The BatchNorm ablation: barriers with the paper's per-t re-estimation vs interpolated running statistics."""

from __future__ import annotations

import pytest
import torch

from stardomain import StardomainError, models
from stardomain.barrier import barriers, curve
from stardomain.training.loop import default_recipe, train_model


def _trained(ds, name: str, seed: int, **options):
    torch.manual_seed(seed)
    m = models.create(name, ds.num_classes, ds.in_shape, **options)
    train_model(m, ds, default_recipe("digits").replace(epochs=2), seed=seed, progress=False)
    return m


@pytest.fixture(scope="module")
def bn_pair(digits):
    a = _trained(digits, "resnet20", 0, width=0.25)
    b = _trained(digits, "resnet20", 1, width=0.25)
    return a, a.state_dict(), b.state_dict()


def test_both_protocols_on_a_bn_model_and_they_differ(digits, bn_pair):
    model, sa, sb = bn_pair
    kw = dict(num_points=5, eval_train_samples=300)
    reset = curve(sa, sb, model=model, dataset=digits, bn="reset", **kw)
    interp = curve(sa, sb, model=model, dataset=digits, bn="interpolate", **kw)
    assert reset.info["bn"] == "reset" and reset.info["bn_reset"] and reset.info["bn_samples"] == len(digits.train_y)
    assert interp.info["bn"] == "interpolate" and not interp.info["bn_reset"] and interp.info["bn_samples"] == 0
    # at t = 0 the no-reset curve is model A with its own statistics, exactly what plain eval gives
    model.load_state_dict(sa)
    model.eval()
    with torch.no_grad():
        own = torch.nn.functional.cross_entropy(model(digits.test_x), digits.test_y).item()
    assert interp.test_loss[0] == pytest.approx(own, rel=1e-5)
    # the end points agree (each keeps or re-estimates its own statistics); inside, the stale
    # interpolated statistics describe the averaged network worse than re-estimated ones (App. A)
    inner = slice(1, -1)
    mean_reset = sum(reset.test_loss[inner]) / 3
    mean_interp = sum(interp.test_loss[inner]) / 3
    assert mean_interp > mean_reset + 0.2
    assert barriers(reset)["test_loss"] != barriers(interp)["test_loss"]


def test_without_batchnorm_both_protocols_agree_exactly(digits):
    a = _trained(digits, "mlp", 0, depth=1, width=16)
    b = _trained(digits, "mlp", 1, depth=1, width=16)
    kw = dict(num_points=5)
    r = curve(a.state_dict(), b.state_dict(), model=a, dataset=digits, bn="reset", **kw)
    i = curve(a.state_dict(), b.state_dict(), model=a, dataset=digits, bn="interpolate", **kw)
    assert r.info["bn"] is None and i.info["bn"] is None
    for m in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert r.metric(m) == i.metric(m)


def test_unknown_protocol_is_refused(digits, bn_pair):
    model, sa, sb = bn_pair
    with pytest.raises(StardomainError, match="unknown bn protocol"):
        curve(sa, sb, model=model, dataset=digits, num_points=3, bn="none")


def test_cli_barrier_records_the_protocol(tmp_path, capsys):
    import json

    from cli_helpers import run_cli

    zoo = tmp_path / "zoo"
    r = run_cli(capsys, "train", "-d", "digits", "-m", "vgg11", "-o", "width=0.125", "-e", "1", "--n", "2", "--out", zoo, "-q")
    assert r.code == 0, r.err
    a, b = zoo / "seed-0.safetensors", zoo / "seed-1.safetensors"
    for bn in ("reset", "interpolate"):
        r = run_cli(capsys, "barrier", a, b, "--points", "3", "--bn", bn, "--bn-samples", "256", "--out", tmp_path / f"{bn}.json", "-q")
        assert r.code == 0, r.err
    reset, interp = (json.loads((tmp_path / f"{bn}.json").read_text()) for bn in ("reset", "interpolate"))
    assert reset["curve"]["info"]["bn"] == "reset" and interp["curve"]["info"]["bn"] == "interpolate"
    assert reset["curve"]["info"]["bn_samples"] == 256 and interp["curve"]["info"]["bn_samples"] == 0
    assert reset["curve"]["test_loss"][1] != interp["curve"]["test_loss"][1]
