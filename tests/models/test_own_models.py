"""Your own model through stardomain: the model matrix, nothing silent, one API, import paths.

Every architecture of tests/own_models.py either keeps its function to 1e-5 after align (and
runs a barrier curve and a Starlight epoch), or is refused with one line naming the layer —
never a changed function without an error.
"""

from __future__ import annotations

import dataclasses

import own_models as om
import pytest
import torch
from torch import nn

from stardomain import models
from stardomain.barrier import curve
from stardomain.barrier.interpolate import EvalEngine
from stardomain.errors import StardomainError
from stardomain.permute import (
    activation_matching,
    align,
    apply_permutation,
    l2_distance,
    matching_objective,
    random_permutation,
    trace_spec,
    weight_matching,
)
from stardomain.permute.trace import function_gap
from stardomain.starlight import Starlight, StarlightConfig
from stardomain.training.loop import Recipe

SHAPE = (1, 8, 8)  # digits
KEPT = ["lnmlp", "resbn", "tied", "attention", "vit", "groupnorm", "viewcnn", "perchannel", "tvresnet", "handattention"]
REFUSED = [("misaligned", "'gain'"), ("mixedheads", "reduces a tensor of split heads")]


@pytest.fixture(scope="module")
def digits_small(digits):
    """400 training digits: enough for one Starlight epoch of every model in seconds."""
    return dataclasses.replace(
        digits, train_x=digits.train_x[:400], train_y=digits.train_y[:400], test_x=digits.test_x[:200], test_y=digits.test_y[:200]
    )


def _pair(name: str) -> tuple[nn.Module, dict, dict]:
    build = getattr(om, f"build_{name}")
    torch.manual_seed(0)
    a = build(10, SHAPE)
    torch.manual_seed(1)
    b = build(10, SHAPE)
    return a, a.state_dict(), b.state_dict()


@pytest.mark.parametrize("name", KEPT)
def test_model_matrix_keeps_its_function_and_runs_barrier_and_starlight(name, digits_small):
    model, sa, sb = _pair(name)
    x = digits_small.test_x[:32]
    aligned, res = align(sa, sb, model=model, x=x)
    assert res.check == "passed" and res.coverage > 0.9
    gap, _ = function_gap(model, sb, aligned, (x,))
    assert gap <= 1e-5, gap
    # the matching did something: B moved towards A
    keys = [k for k, _ in model.named_parameters()]
    assert l2_distance(sa, aligned, keys) < l2_distance(sa, sb, keys)
    c = curve(sa, aligned, model=model, dataset=digits_small, num_points=3, splits=("test",), bn_samples=128)
    assert all(v == v for v in c.to_dict()["test_loss"])
    recipe = Recipe(epochs=1, batch_size=100, lr=0.01)
    sl = Starlight(model, [sa, sb], digits_small, StarlightConfig(recipe=recipe), seed=5, example_input=x)
    result = sl.fit(progress=False)
    assert len(result.history) == 1 and sl.realignments >= 1


@pytest.mark.parametrize("name, culprit", REFUSED)
def test_model_matrix_refuses_in_one_line_naming_the_layer(name, culprit):
    model, sa, sb = _pair(name)
    with pytest.raises(StardomainError, match=culprit) as e:
        align(sa, sb, model=model, x=torch.randn(4, *SHAPE))
    assert "\n" not in str(e.value)


def test_tied_weights_form_one_group_and_stay_tied():
    model, sa, sb = _pair("tied")
    spec = trace_spec(model, torch.randn(2, *SHAPE))
    assert spec.ties == {"fc3.weight": "fc2.weight"}
    out = apply_permutation(sb, random_permutation(spec, 3), spec=spec)
    assert out["fc3.weight"] is out["fc2.weight"]  # one tensor under both names, as functional_call requires
    # loaded into a model, the permuted B predicts exactly what B predicts
    x = torch.randn(64, *SHAPE)
    copy_b = om.build_tied(10, SHAPE)
    copy_b.load_state_dict(sb)
    ref = copy_b.eval()(x).argmax(1)
    copy_b.load_state_dict(out)
    assert torch.equal(copy_b(x).argmax(1), ref)


def test_zero_coverage_is_refused_unless_allowed(digits_small):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # logistic regression: no hidden units
    x = torch.randn(4, *SHAPE)
    s = model.state_dict()
    with pytest.raises(StardomainError, match=r"0% covered.*--allow-unpermuted"):
        align(s, s, model=model, x=x)
    _, res = align(s, s, model=model, x=x, allow_unpermuted=True)
    assert res.coverage == 0.0
    with pytest.raises(StardomainError, match="star: the permutation spec permutes no parameters"):
        Starlight(model, [s], digits_small, StarlightConfig(recipe=Recipe(epochs=1)), example_input=x)


def test_skipping_the_function_check_is_recorded():
    model, sa, sb = _pair("lnmlp")
    _, res = align(sa, sb, model=model, x=torch.randn(4, *SHAPE), check=False)
    assert res.check.startswith("skipped") and res.function_gap is None
    spec = trace_spec(model, torch.randn(2, *SHAPE))
    with pytest.raises(StardomainError, match="needs model="):
        align(sa, sb, spec=spec)


def test_old_argument_order_is_one_line_naming_the_new_one():
    model, sa, sb = _pair("lnmlp")
    spec = trace_spec(model, torch.randn(2, *SHAPE))
    perm = random_permutation(spec, 0)
    x = torch.randn(4, *SHAPE)
    calls = [
        (lambda: weight_matching(spec, sa, sb), "weight_matching(state_a, state_b, spec=spec"),
        (lambda: apply_permutation(spec, perm, sb), "apply_permutation(state, perm, spec=spec)"),
        (lambda: matching_objective(spec, sa, sb), "matching_objective(state_a, state_b, spec=spec)"),
        (lambda: activation_matching(model, spec, sa, sb, x), "activation_matching(state_a, state_b, spec=spec"),
        (lambda: align(sa, sb, spec), "align(state_a, state_b, spec="),
    ]
    for call, new in calls:
        with pytest.raises(StardomainError, match="argument order") as e:
            call()
        assert new in str(e.value) and "\n" not in str(e.value)


def test_align_traces_with_x_for_a_model_without_arch():
    model = om.LNMLP(5, 3, 8)  # built by hand: no model.arch, so only x says what the input is
    other = om.LNMLP(5, 3, 8)
    x = torch.randn(16, 5)
    aligned, res = align(model.state_dict(), other.state_dict(), model=model, x=x)
    assert res.check == "passed" and function_gap(model, other.state_dict(), aligned, (x,))[0] <= 1e-5


def test_eval_engine_uses_channels_last_only_where_it_computes_the_same():
    x = torch.randn(8, *SHAPE)
    viewcnn = om.build_viewcnn(10, SHAPE).eval()
    view = EvalEngine(viewcnn)
    with torch.inference_mode():
        out = view.forward(x)
        assert torch.allclose(out, viewcnn(x), atol=1e-5)  # falls back to NCHW and still computes the logits
    assert view.memory_format is None  # x.view(x.size(0), -1) fails under channels_last
    resnet = models.create("resnet20", 10, (3, 8, 8), width=0.25).eval()
    res = EvalEngine(resnet)
    xr = torch.randn(8, 3, 8, 8)
    with torch.inference_mode():
        ref = resnet(xr)  # BN folding and NHWC kernels only reorder sums: equal to float32 precision
        assert (res.forward(xr) - ref).abs().max() <= 2e-4 * ref.abs().max()
    assert res.memory_format == torch.channels_last


def test_models_create_takes_import_paths_and_any_input_shape():
    m = models.create("own_models:build_lnmlp", 3, (5,), width=4)
    assert m.arch["name"] == "own_models:build_lnmlp" and m(torch.randn(2, 5)).shape == (2, 3)
    with pytest.raises(StardomainError, match="--plugin not_imported_pkg"):
        models.create("not_imported_pkg.mod:build", 3, (5,))
    with pytest.raises(StardomainError, match="must be annotated bool, int, float or str"):
        models.register("bad_builder_test")(lambda num_classes, in_shape, *, k=[1]: nn.Linear(1, 1))
    with pytest.raises(StardomainError, match="must take \\(num_classes, in_shape"):
        models.register("bad_builder_test")(lambda n, shape: nn.Linear(1, 1))
    assert "bad_builder_test" not in models.available_models()


def test_groupnorm_with_one_channel_per_group_permutes_freely_and_config_allows_unpermuted():
    from stardomain.experiment.config import ExperimentConfig, from_dict

    class InstanceLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.gn, self.fc = nn.Conv2d(1, 6, 3), nn.GroupNorm(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.gn(self.c(x))).mean((2, 3)))

    spec = trace_spec(InstanceLike(), torch.randn(2, *SHAPE))
    assert spec.groups == {"c": 6}  # per-channel statistics: one group of all six channels
    grouped = trace_spec(om.build_groupnorm(10, SHAPE), torch.randn(2, *SHAPE))
    assert sorted(grouped.groups.values()) == [2] * 8  # 4 GroupNorm groups of 2 channels, in two layers
    cfg = from_dict(ExperimentConfig, {"allow_unpermuted": True, "plugins": ["own_models"]})
    assert cfg.allow_unpermuted and "allow_unpermuted" in cfg.to_dict()
    assert "plugins" not in from_dict(ExperimentConfig, {}).to_dict()  # unset keys keep old experiment identities


def test_dataset_from_an_import_path():
    from stardomain import data

    ds = data.load_dataset("own_models:make_blobs", subset=30)
    assert ds.name == "own_models:make_blobs" and ds.in_shape == (4,) and len(ds.train_y) == 30
    assert ds.record()["name"] == "own_models:make_blobs"  # a checkpoint names the factory that rebuilds its data
    m = models.create("mlp", ds.num_classes, ds.in_shape, depth=1, width=4)
    assert m(ds.train_x[:2]).shape == (2, 3)
    with pytest.raises(StardomainError, match="not a stardomain.data.Dataset"):
        data.load_dataset("own_models:make_nothing")
    with pytest.raises(StardomainError, match="--plugin never_imported_pkg"):
        data.load_dataset("never_imported_pkg:make")


@pytest.mark.parametrize("with_model", [True, False])
def test_a_spec_without_its_models_tie_is_refused_in_one_line(with_model):
    """A hand-written spec that forgets a tie would permute fc2.weight and leave its alias fc3.weight in the old
    order: a broken model the function check (which drops aliases) cannot see. Refused, naming the tie, whether
    the tie is known from the model or only from the state (two names of one tensor)."""
    import dataclasses

    model, sa, sb = _pair("tied")
    spec = trace_spec(model, torch.randn(2, *SHAPE))
    untied = dataclasses.replace(spec, ties={})
    kw = {"model": model, "x": torch.randn(8, *SHAPE)} if with_model else {"check": False}
    with pytest.raises(StardomainError, match="fc3.weight is tied to fc2.weight") as e:
        align(sa, sb, spec=untied, method="weight", **kw)
    assert "\n" not in str(e.value) and "ties={'fc3.weight': 'fc2.weight'}" in str(e.value)
    aligned, _ = align(sa, sb, spec=spec, method="weight", **kw)  # the traced spec, which has the tie, passes
    assert aligned["fc3.weight"] is aligned["fc2.weight"]
