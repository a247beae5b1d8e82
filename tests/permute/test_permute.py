"""Permutation specs, applying permutations, weight and activation matching."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from stardomain import models
from stardomain.errors import StardomainError
from stardomain.permute import (
    PermutationSpec,
    activation_matching,
    align,
    apply_permutation,
    compose,
    identity_permutation,
    invert,
    is_identity,
    l2_distance,
    matching_objective,
    random_permutation,
    trace_spec,
    weight_matching,
)

# Small variants: structure (residual streams, concatenation, BN) is what matters here.
SMALL: dict[str, dict] = {
    "mlp": {"depth": 3, "width": 24, "batchnorm": True},
    "vgg11": {"width": 0.125},
    "vgg16": {"width": 0.125, "batchnorm": False},
    "vgg19": {"width": 0.0625},
    "resnet20": {"width": 0.5},
    "resnet18": {"width": 0.125},
    "wrn": {"depth": 10, "width": 1},
    "densenet40_12": {"depth": 13, "growth": 4},
}
CASES = [(name, SMALL.get(name, {})) for name in models.available_models()] + [
    ("vgg11", {"width": 0.125, "batchnorm": False}),
    ("vgg16", {"width": 0.125, "batchnorm": True}),
    ("vgg19", {"width": 0.0625, "batchnorm": False}),
    ("mlp", {"depth": 2, "width": 16}),
]
SHAPE = (3, 8, 8)


def _ids(case):
    name, opts = case
    return name + "".join(f"-{k}={v}" for k, v in sorted(opts.items()))


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics/affine params, so a mis-permuted BN would change outputs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)


def _make(name: str, opts: dict, seed: int, shape=SHAPE) -> nn.Module:
    torch.manual_seed(seed)
    model = models.create(name, 10, shape, **opts)
    _randomize_bn(model, torch.Generator().manual_seed(seed + 100))
    return model.eval()


def _outputs(model: nn.Module, state: dict, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return functional_call(model, state, (x,))


def _assert_same_function(model, state, other, x):
    y0, y1 = _outputs(model, state, x), _outputs(model, other, x)
    scale = max(1.0, float(y0.abs().max()))
    assert float((y0 - y1).abs().max()) <= 1e-5 * scale


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------ tracing


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_mlp_has_one_group_per_hidden_layer(depth):
    spec = trace_spec(models.create("mlp", 10, (1, 6, 6), depth=depth, width=16))
    assert len(spec.groups) == depth
    assert spec.fixed == {"classifier": "feeds the model output"}


def test_resnet20_groups_are_block_internal_plus_streams():
    spec = trace_spec(models.create("resnet20", 10, SHAPE))
    streams = [g for g in spec.groups if g.endswith("/stream")]
    assert len(spec.groups) == 12 and len(streams) == 3
    assert sorted(spec.groups[g] for g in streams) == [16, 32, 64]


def test_resnet18_has_12_groups_including_the_512_stream():
    model = models.create("resnet18", 10, SHAPE)
    spec = trace_spec(model)
    streams = {g: n for g, n in spec.groups.items() if g.endswith("/stream")}
    assert len(spec.groups) == 12
    assert sorted(streams.values()) == [64, 128, 256, 512]
    last = next(g for g, n in streams.items() if n == 512)
    keys = {ax.key for ax in spec.axes[last]}
    # the final stream reaches the classifier's input axis and every layer4 shortcut/conv2
    assert {"fc.weight", "layers.3.0.conv2.weight", "layers.3.0.shortcut.0.weight", "layers.3.1.conv2.weight"} <= keys
    assert "fc.bias" not in keys and "fc" in spec.fixed
    summary = spec.summary()
    assert summary["total_params"] == sum(p.numel() for p in model.parameters())
    assert summary["covered_params"] == summary["total_params"] - 10  # all but the logits' bias
    assert 0.9999 < summary["covered_share"] < 1


def test_densenet_has_one_group_per_concatenated_segment():
    spec = trace_spec(models.create("densenet40_12", 10, SHAPE))
    # stem conv + 36 dense layers + 2 transitions
    assert len(spec.groups) == 1 + 36 + 2
    sizes = list(spec.groups.values())
    assert sizes.count(12) == 36 and spec.groups["conv1"] == 16
    assert sorted(n for n in sizes if n not in (12, 16)) == [160, 304]
    # the BN in front of the last dense layer of block 1 sees 12 segments: stem + 11 layers
    bn_key = "features.11.bn.weight"
    starts = sorted(ax.start for axes in spec.axes.values() for ax in axes if ax.key == bn_key)
    assert starts == [0] + [16 + 12 * i for i in range(11)]


@pytest.mark.parametrize("name, convs", [("vgg11", 8), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_has_one_group_per_conv(name, convs):
    for bn in (True, False):
        spec = trace_spec(models.create(name, 10, SHAPE, batchnorm=bn, width=0.25))
        assert len(spec.groups) == convs
        assert all(g.startswith("features.") for g in spec.groups)


def test_summary_reports_coverage_and_fixed_layers():
    spec = trace_spec(models.create("mlp", 10, (1, 6, 6), depth=2, width=8))
    s = spec.summary()
    assert s["n_groups"] == 2 and s["group_sizes"] == {"layers.0": 8, "layers.2": 8}
    assert s["total_params"] == (36 * 8 + 8) + (8 * 8 + 8) + (8 * 10 + 10)
    assert s["covered_params"] == s["total_params"] - 10  # only the logits' bias has no permuted axis
    assert s["covered_share"] == pytest.approx(1 - 10 / s["total_params"])
    assert s["fixed_layers"] == {"classifier": "feeds the model output"}


class _Functional(nn.Module):
    """Functional relus, in-place add, torch.cat, view/mean: what hand-written forwards do."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.b1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.c3 = nn.Conv2d(6, 5, 1)
        self.c4 = nn.Conv2d(11, 7, 3, padding=1)
        self.fc1 = nn.Linear(7 * 4 * 4, 9)  # flatten of a 4x4 map: block expansion
        self.fc2 = nn.Linear(9 + 7, 10)

    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        r = torch.relu(self.c2(h))
        r += h
        h = torch.add(r, h).relu()
        h = torch.cat([h, self.c3(h)], dim=1)
        h = F.max_pool2d(F.relu(self.c4(h)), 2)
        pooled = h.mean((2, 3))
        flat = h.view(h.size(0), -1)
        return self.fc2(torch.cat([torch.sigmoid(self.fc1(flat)), pooled], 1))


def test_functional_ops_cat_and_flatten_blocks_are_traced():
    torch.manual_seed(0)
    model = _Functional().eval()
    _randomize_bn(model, torch.Generator().manual_seed(1))
    x = torch.randn(4, 3, 8, 8)
    spec = trace_spec(model, x)
    assert set(spec.groups) == {"c1/stream", "c3", "c4", "fc1"}
    blocks = [ax for ax in spec.axes["c4"] if ax.key == "fc1.weight"]
    assert blocks and blocks[0].block == 16 and blocks[0].axis == 1
    state = model.state_dict()
    _assert_same_function(model, state, apply_permutation(state, random_permutation(spec, 3), spec=spec), x)


class _Grouped(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3)
        self.dw = nn.Conv2d(8, 8, 3, groups=groups)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.dw(torch.relu(self.c1(x))).mean((2, 3)))


class _HandAttention(nn.Module):
    """Units split into heads by hand, then summed over the heads: each head has its own unit order, refused."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):  # x: (tokens, 4)
        h = self.inp(x)
        return self.fc(h.view(x.shape[0], 2, 4).sum(1))


class _Transpose(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 6)

    def forward(self, x):
        return self.b(self.a(x).t().t())


@pytest.mark.parametrize(
    "model, x, culprit",
    [
        (_Grouped(2), torch.randn(2, 3, 8, 8), "dw"),
        (_Grouped(8), torch.randn(2, 3, 8, 8), "dw"),
        (_HandAttention(), torch.randn(5, 4), "reduces a tensor of split heads"),
        (_Transpose(), torch.randn(3, 4), "t"),
    ],
)
def test_unsupported_layers_raise_naming_the_culprit(model, x, culprit):
    with pytest.raises(StardomainError, match=culprit):
        trace_spec(model, x)


def test_lenient_tracing_freezes_units_around_unsupported_layers():
    model = _Grouped(2).eval()
    x = torch.randn(2, 3, 8, 8)
    spec = trace_spec(model, x, strict=False)
    assert list(spec.groups) == []  # c1 feeds the grouped conv, dw feeds mean -> fc is fine but dw is frozen
    assert any("grouped" in reason for reason in spec.fixed.values())


def test_trace_check_rejects_a_wrong_spec():
    from stardomain.permute.trace import _verify

    model = models.create("mlp", 10, (1, 4, 4), depth=2, width=8)
    spec = trace_spec(model)
    broken = PermutationSpec(groups=dict(spec.groups), axes={g: [a for a in axes if a.axis == 0] for g, axes in spec.axes.items()})
    with pytest.raises(StardomainError, match="changes the network's outputs"):
        _verify(model, broken, (torch.randn(2, 1, 4, 4),))


# ------------------------------------------------------------------------ applying


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_permutations_preserve_the_function(case):
    name, opts = case
    a, b = _make(name, opts, 0), _make(name, opts, 1)
    spec = trace_spec(a)
    x = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(2))
    sa, sb = a.state_dict(), b.state_dict()
    _assert_same_function(a, sa, apply_permutation(sa, random_permutation(spec, 7), spec=spec), x)
    result = weight_matching(sa, sb, spec=spec, seed=0)
    assert not is_identity(result.perm)
    _assert_same_function(a, sb, apply_permutation(sb, result.perm, spec=spec), x)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_planted_permutation_is_recovered_exactly(case):
    name, opts = case
    a = _make(name, opts, 0)
    spec = trace_spec(a)
    sa = a.state_dict()
    pi = random_permutation(spec, torch.Generator().manual_seed(5))
    sb = apply_permutation(sa, pi, spec=spec)
    result = weight_matching(sa, sb, spec=spec, seed=3)
    assert result.converged
    for g in spec.groups:
        assert torch.equal(result.perm[g], invert(pi)[g]), g
    _assert_states_equal(apply_permutation(sb, result.perm, spec=spec), sa)
    assert result.objective == pytest.approx(matching_objective(sa, sa, spec=spec), rel=1e-5)
    params = [k for k, _ in a.named_parameters()]
    assert l2_distance(sa, apply_permutation(sb, result.perm, spec=spec), params) == 0.0


def test_apply_never_mutates_its_input_and_shares_untouched_tensors():
    model = _make("resnet20", {"width": 0.5}, 0)
    spec = trace_spec(model)
    state = model.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    out = apply_permutation(state, random_permutation(spec, 1), spec=spec)
    _assert_states_equal(state, before)
    assert out is not state and out.keys() == state.keys()
    assert out["fc.bias"] is state["fc.bias"]  # not in the spec: passed through untouched
    assert not torch.equal(out["conv1.weight"], state["conv1.weight"])
    for k in (k for k in state if k.endswith("num_batches_tracked")):
        assert torch.equal(out[k], state[k])


def test_compose_invert_identity():
    spec = trace_spec(models.create("mlp", 10, (1, 4, 4), depth=2, width=8))
    state = models.create("mlp", 10, (1, 4, 4), depth=2, width=8).state_dict()
    p, q = random_permutation(spec, 1), random_permutation(spec, 2)
    two_steps = apply_permutation(apply_permutation(state, q, spec=spec), p, spec=spec)
    _assert_states_equal(apply_permutation(state, compose(p, q), spec=spec), two_steps)
    _assert_states_equal(apply_permutation(apply_permutation(state, p, spec=spec), invert(p), spec=spec), state)
    _assert_states_equal(apply_permutation(state, identity_permutation(spec), spec=spec), state)


def test_bad_permutations_and_states_are_rejected():
    spec = trace_spec(models.create("mlp", 10, (1, 4, 4), depth=1, width=8))
    state = models.create("mlp", 10, (1, 4, 4), depth=1, width=8).state_dict()
    with pytest.raises(StardomainError, match="not a permutation"):
        apply_permutation(state, {"layers.0": torch.zeros(8, dtype=torch.long)}, spec=spec)
    with pytest.raises(StardomainError, match="lacks group"):
        apply_permutation(state, {}, spec=spec)
    other = models.create("mlp", 10, (1, 4, 4), depth=1, width=6).state_dict()
    with pytest.raises(StardomainError, match="does not match"):
        apply_permutation(other, identity_permutation(spec), spec=spec)


# ------------------------------------------------------------------------ hand-written specs


def test_hand_written_spec_is_accepted_everywhere():
    a, b = _make("mlp", {"depth": 2, "width": 12}, 0), _make("mlp", {"depth": 2, "width": 12}, 1)
    sa, sb = a.state_dict(), b.state_dict()
    hand = PermutationSpec(
        groups={"h1": 12, "h2": 12},
        axes={
            "h1": [("layers.0.weight", 0), ("layers.0.bias", 0), ("layers.2.weight", 1)],
            "h2": [("layers.2.weight", 0), ("layers.2.bias", 0), ("classifier.weight", 1)],
        },
    )
    traced = trace_spec(a)
    r_hand = weight_matching(sa, sb, spec=hand, seed=0)
    r_traced = weight_matching(sa, sb, spec=traced, seed=0)
    assert r_hand.objective == pytest.approx(r_traced.objective, rel=1e-9)
    aligned, res = align(sa, sb, spec=hand, method="weight", model=a)
    assert res.check == "passed" and res.function_gap < 1e-5
    _assert_states_equal(aligned, apply_permutation(sb, res.perm, spec=hand))
    x = torch.randn(5, 3, 8, 8)
    _assert_same_function(a, sb, aligned, x)
    res_act = activation_matching(sa, sb, spec=hand, model=a, x=x)
    assert set(res_act.perm) == {"h1", "h2"}
    assert hand.summary(sa)["n_groups"] == 2


def test_hand_written_spec_errors_are_clear():
    with pytest.raises(StardomainError, match="missing from groups"):
        PermutationSpec(groups={"a": 3}, axes={"b": [("w", 0)]})
    with pytest.raises(StardomainError, match="overlap"):
        PermutationSpec(groups={"a": 3, "b": 3}, axes={"a": [("w", 0)], "b": [("w", 0, 2)]})
    spec = PermutationSpec(groups={"a": 3}, axes={"a": [("nope.weight", 0)]})
    with pytest.raises(StardomainError, match="nope.weight"):
        weight_matching({"w": torch.ones(3)}, {"w": torch.ones(3)}, spec=spec)


# ------------------------------------------------------------------------ matching


def test_warm_start_converges_immediately_with_the_same_objective():
    a, b = _make("resnet20", {"width": 0.5}, 0), _make("resnet20", {"width": 0.5}, 1)
    spec = trace_spec(a)
    sa, sb = a.state_dict(), b.state_dict()
    first = weight_matching(sa, sb, spec=spec, seed=0)
    again = weight_matching(sa, sb, spec=spec, seed=1, init=first.perm)
    assert again.sweeps <= 2 and again.converged
    assert again.objective == pytest.approx(first.objective, rel=1e-9)
    assert all(torch.equal(again.perm[g], first.perm[g]) for g in spec.groups)


def test_weight_matching_is_deterministic_and_monotone():
    a, b = _make("vgg11", {"width": 0.125}, 0), _make("vgg11", {"width": 0.125}, 1)
    spec = trace_spec(a)
    sa, sb = a.state_dict(), b.state_dict()
    r1, r2 = weight_matching(sa, sb, spec=spec, seed=4), weight_matching(sa, sb, spec=spec, seed=4)
    assert r1.objective == r2.objective and all(torch.equal(r1.perm[g], r2.perm[g]) for g in spec.groups)
    assert r1.objective > r1.history[0]
    assert all(y >= x - 1e-6 * abs(x) for x, y in zip(r1.history[1:], r1.history[2:]))
    plain = weight_matching(sa, sb, spec=spec, seed=4, first_sweep="random")
    assert plain.objective > plain.history[0]


@pytest.fixture(scope="module")
def fashion_pair(fashion_small):
    """Two 784-64-64-10 MLPs trained from different seeds for 2 epochs on 6k Fashion-MNIST images."""
    from stardomain.training.loop import default_recipe, train_model

    recipe = default_recipe("fashion_mnist").replace(epochs=2)
    trained = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = models.create("mlp", 10, fashion_small.in_shape, depth=2, width=64)
        train_model(model, fashion_small, recipe, seed=seed, progress=False)
        trained.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return model, trained[0], trained[1]


def _midpoint_loss(model, sa, sb, ds) -> float:
    from stardomain.training.loop import evaluate

    mid = copy.deepcopy(model)
    mid.load_state_dict({k: (sa[k] + sb[k]) / 2 if sa[k].is_floating_point() else sa[k] for k in sa})
    return evaluate(mid, ds.test_x, ds.test_y)[0]


def test_matching_trained_fashion_mlps_lowers_distance_and_midpoint_loss(fashion_pair, fashion_small):
    model, sa, sb = fashion_pair
    spec = trace_spec(model)
    keys = [k for k, _ in model.named_parameters()]
    naive = _midpoint_loss(model, sa, sb, fashion_small)

    aligned_w, res_w = align(sa, sb, spec=spec, method="weight", model=model)
    assert l2_distance(sa, aligned_w, keys) < 0.9 * l2_distance(sa, sb, keys)
    assert res_w.objective > matching_objective(sa, sb, spec=spec)
    loss_w = _midpoint_loss(model, sa, aligned_w, fashion_small)
    assert loss_w < naive

    aligned_a, res_a = align(sa, sb, spec=spec, method="activation", model=model, x=fashion_small.train_x[:2000])
    assert 0 < res_a.objective <= 1
    loss_a = _midpoint_loss(model, sa, aligned_a, fashion_small)
    assert loss_a < naive
    # both alignments are exact reparametrisations of B
    x = fashion_small.test_x[:64]
    _assert_same_function(model, sb, aligned_w, x)
    _assert_same_function(model, sb, aligned_a, x)


def test_activation_matching_recovers_a_planted_permutation_of_live_units():
    torch.manual_seed(0)
    a = models.create("resnet20", 10, SHAPE, width=0.5).eval()
    spec = trace_spec(a)
    sa = a.state_dict()
    pi = random_permutation(spec, 9)
    sb = apply_permutation(sa, pi, spec=spec)
    x = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(0))
    res = activation_matching(sa, sb, spec=spec, model=a, x=x, batch_size=16)
    # units that never fire correlate with nothing, so only groups without dead units are
    # guaranteed to come back exactly; those must be most of them
    perfect = [g for g in spec.groups if res.stats[f"corr/{g}"] > 1 - 1e-4]
    assert len(perfect) >= 0.75 * len(spec.groups)
    for g in perfect:
        assert torch.equal(res.perm[g], invert(pi)[g]), g
    assert 0.9 < res.objective <= 1 + 1e-6
    assert a.training is False and a.state_dict()["conv1.weight"].equal(sa["conv1.weight"])


def test_activation_matching_reads_slices_blocks_and_survives_inplace_adds():
    torch.manual_seed(0)
    model = _Functional().eval()
    x = torch.randn(256, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    spec = trace_spec(model, x[:2])
    sa = model.state_dict()
    pi = random_permutation(spec, 1)
    res = activation_matching(sa, apply_permutation(sa, pi, spec=spec), spec=spec, model=model, x=x, batch_size=100)
    assert res.objective == pytest.approx(1.0, abs=1e-4)
    assert all(torch.equal(res.perm[g], invert(pi)[g]) for g in spec.groups)


def test_align_rejects_bad_method_and_missing_inputs():
    model = models.create("mlp", 10, (1, 4, 4), depth=1, width=4)
    s = model.state_dict()
    with pytest.raises(StardomainError, match="unknown alignment method"):
        align(s, s, spec=trace_spec(model), method="magic")
    with pytest.raises(StardomainError, match="needs model"):
        align(s, s, spec=trace_spec(model), method="activation")


class _TokenMLP(nn.Module):
    """A per-token MLP on (N, T, D) token streams, pooled over tokens: Linear acts on the LAST axis."""

    def __init__(self, d: int = 6, h: int = 8, c: int = 3):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))).mean(dim=1))


@pytest.mark.parametrize("tokens", [4, 12])  # T < hidden width and T > hidden width (8)
def test_activation_matching_reads_token_streams_along_the_unit_axis(tokens: int) -> None:
    """Units of a Linear on (N, T, D) are on the last axis and the tokens are samples. Reading dim 1 (the token
    axis) returned a wrong permutation with T >= D (the function check still passes: any permutation keeps it)
    and a raw RuntimeError with T < D."""
    torch.manual_seed(0)
    model = _TokenMLP().eval()
    x = torch.randn(128, tokens, 6, generator=torch.Generator().manual_seed(1))
    spec = trace_spec(model, x[:2])
    assert spec.groups, "the hidden units of a token MLP are permutable"
    sa = model.state_dict()
    pi = random_permutation(spec, 3)
    res = activation_matching(sa, apply_permutation(sa, pi, spec=spec), spec=spec, model=model, x=x, batch_size=64)
    assert res.objective == pytest.approx(1.0, abs=1e-4)
    assert all(torch.equal(res.perm[g], invert(pi)[g]) for g in spec.groups)


class _EmbeddingMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc, self.head = nn.Embedding(20, 8), nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc(self.emb(ids)))).mean(dim=1)


def test_an_embedding_model_given_floats_is_one_line_naming_the_dtype():
    """torch.fx's message for float ids spans several lines about the call site, and the old hint said 'shape'."""
    model = _EmbeddingMLP()
    with pytest.raises(StardomainError) as e:
        trace_spec(model, torch.randn(2, 5))
    msg = str(e.value)
    assert "\n" not in msg and "nn.Embedding 'emb'" in msg and "float32" in msg and "torch.long" in msg
    spec = trace_spec(model, torch.randint(0, 20, (2, 5)))  # token ids trace
    assert spec.groups
    with pytest.raises(StardomainError) as e:  # any other refusal: its first line, the input's shape, one line
        trace_spec(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(2, 5))
    assert "\n" not in str(e.value) and "[(2, 5)]" in str(e.value)


class _TiedTokenModel(nn.Module):
    """A GPT-shaped toy: token + learned position embeddings, a pre-LN residual MLP block, an LM head tied to
    the token embedding. The residual stream starts at the embedding."""

    def __init__(self, vocab: int = 20, d: int = 8, t: int = 5) -> None:
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.randn(t, d))
        self.ln, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 16), nn.Linear(16, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids) + self.pos
        h = h + self.fc2(F.relu(self.fc1(self.ln(h))))
        return self.head(h)


def test_an_embedding_starts_a_permuted_residual_stream_and_keeps_its_tie():
    """nn.Embedding used to leave the whole residual stream unpermuted (an 'unsupported type' reason): its columns
    are the stream's units, so the stream, the position embedding, the block and the tied head all move together."""
    torch.manual_seed(0)
    model = _TiedTokenModel().eval()
    ids = torch.randint(0, 20, (4, 5), generator=torch.Generator().manual_seed(0))
    spec = trace_spec(model, ids)
    assert spec.ties == {"head.weight": "emb.weight"}
    stream = [g for g in spec.groups if any(ax.key == "emb.weight" and ax.axis == 1 for ax in spec.axes[g])]
    assert len(stream) == 1 and any(ax.key == "pos" for ax in spec.axes[stream[0]])
    assert spec.summary()["covered_share"] == 1.0  # only the vocabulary rows stay put, and they are not units
    sa = model.state_dict()
    pi = random_permutation(spec, 5)
    sb = apply_permutation(sa, pi, spec=spec)
    assert sb["head.weight"] is sb["emb.weight"]
    untied = lambda st: {k: v for k, v in st.items() if k not in spec.ties}  # noqa: E731 (functional_call: one name each)
    _assert_same_function(model, untied(sa), untied(sb), ids)
    res = weight_matching(sa, sb, spec=spec)
    assert all(torch.equal(res.perm[g], invert(pi)[g]) for g in spec.groups)
