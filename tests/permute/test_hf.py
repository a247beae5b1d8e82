"""Hugging Face transformers models, built from tiny configs, traced (torch.export), aligned, interpolated, starred.

fx cannot trace them; ``trace_spec`` captures them with ``torch.export`` and maps the ATen ops back to
parameters by name: GPT-2's transposed ``Conv1D`` and fused qkv, the embedding that starts the residual
stream (and the LM head tied to it), BERT's post-LN blocks and pooler, ViT's CLS token and positions.
"""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

from stardomain import models  # noqa: E402
from stardomain.errors import StardomainError  # noqa: E402
from stardomain.permute import (  # noqa: E402
    align,
    apply_permutation,
    invert,
    random_permutation,
    trace_spec,
    weight_matching,
)

TINY = {"hidden": 16, "layers": 2, "heads": 2, "mlp": 2}
SHAPE = (1, 8, 8)  # digits: 8x8 single-channel images, or 64 "pixel tokens" with ids 0..16
VOCAB = 17


def _quiet(config):
    config.bos_token_id = config.eos_token_id = None
    return config


def _raw(name: str, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """A bare transformers model (no stardomain wrapper) and an input batch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(100)
    ids = torch.randint(0, VOCAB, (3, 64), generator=gen)
    if name == "vit":
        config = transformers.ViTConfig(
            image_size=8,
            patch_size=4,
            num_channels=1,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=10,
        )
        return transformers.ViTForImageClassification(config).eval(), torch.randn(3, *SHAPE, generator=gen)
    if name == "gpt2":
        config = _quiet(
            transformers.GPT2Config(
                vocab_size=VOCAB + 1, n_positions=64, n_embd=16, n_layer=2, n_head=2, pad_token_id=VOCAB, num_labels=10, use_cache=False
            )
        )
        return transformers.GPT2ForSequenceClassification(config).eval(), ids
    if name == "gpt2lm":
        config = _quiet(transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=16, n_layer=2, n_head=2, use_cache=False))
        return transformers.GPT2LMHeadModel(config).eval(), ids
    if name == "bert":
        config = _quiet(
            transformers.BertConfig(
                vocab_size=VOCAB + 1,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=64,
                pad_token_id=VOCAB,
                num_labels=10,
            )
        )
        return transformers.BertForSequenceClassification(config).eval(), ids
    raise AssertionError(name)


RAW = ["vit", "gpt2", "gpt2lm", "bert"]
# the parameter whose columns (or, for ViT's patch conv, output channels) are the residual stream's units
STREAM_KEY = {
    "vit": ("vit.embeddings.patch_embeddings.projection.weight", 0),
    "gpt2": ("transformer.wte.weight", 1),
    "gpt2lm": ("transformer.wte.weight", 1),
    "bert": ("bert.embeddings.word_embeddings.weight", 1),
}


EMBEDDINGS = {
    "vit": {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings"},
    "gpt2": {"transformer.wpe.weight"},
    "gpt2lm": {"transformer.wpe.weight"},
    "bert": {"bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight", "bert.pooler.dense.weight"},
}
# separate q/k/v/out projections (nn.Linear); GPT-2's fused Conv1D has a test of its own
QKV = {
    "vit": ("vit.layers.0.attention", "q_proj", "k_proj", "v_proj", "o_proj"),
    "bert": ("bert.encoder.layer.0.attention", "self.query", "self.key", "self.value", "output.dense"),
}


def _untied(spec, state):
    return {k: v for k, v in state.items() if k not in spec.ties}  # functional_call takes a tied tensor once


def _logits(model, spec, state, x):
    with torch.no_grad():
        return functional_call(model, _untied(spec, state), (x,)).logits


def _perturbed(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random state (HF inits LayerNorms to 1/0 and biases to 0: symmetric; break that), ties kept."""
    from stardomain.permute.trace import perturbed_state

    return perturbed_state(model, seed)


@pytest.fixture(scope="module")
def traced():
    out = {}
    for name in RAW:
        model, x = _raw(name, 0)
        out[name] = (model, x, trace_spec(model, x))
    return out


@pytest.mark.parametrize("name", RAW)
def test_fx_cannot_trace_them_and_export_is_the_fallback(name):
    model, x = _raw(name, 0)
    with pytest.raises(StardomainError, match="torch.fx cannot trace"):
        trace_spec(model, x, capture="fx")
    spec = trace_spec(model, x, capture="export")
    assert spec.groups


@pytest.mark.parametrize("name", RAW)
def test_the_residual_stream_and_every_head_are_permuted(traced, name):
    model, _, spec = traced[name]
    info = spec.summary()
    assert info["residual_fixed"] == []
    assert info["stream_share"]["residual"] == 1.0 and info["stream_share"]["heads"] == 1.0
    assert info["unit_share"] == 1.0 and info["covered_share"] > 0.99
    key, axis = STREAM_KEY[name]
    stream = [g for g, axes in spec.axes.items() if any(a.key == key and a.axis == axis for a in axes)]
    assert len(stream) == 1 and spec.streams[stream[0]]["residual"]
    assert EMBEDDINGS[name] <= {a.key for a in spec.axes[stream[0]]}  # CLS token, learned positions, token types
    # every LayerNorm and every layer's input side moves with that stream
    for k in spec.params:
        if "norm" in k.lower() and k.endswith(".weight") or k.endswith(("ln_1.weight", "ln_f.weight")):
            assert any(a.key == k for a in spec.axes[stream[0]]), k
    # per head: groups of head_dim units, q/k share one group, v/out another; heads keep their slots
    heads = {g: n for g, n in spec.groups.items() if ".head" in g}
    assert heads and set(heads.values()) == {8}
    assert len(heads) == 2 * 2 * 2  # layers x heads x (qk, v)
    if name in QKV:
        q, k, v, o = (f"{QKV[name][0]}.{p}.weight" for p in QKV[name][1:])
        for head in (0, 1):

            def group(key, axis, head=head):
                return {g for g, axes in spec.axes.items() for a in axes if a.key == key and a.axis == axis and a.start == 8 * head}

            assert len(group(q, 0)) == 1 and group(q, 0) == group(k, 0) != group(v, 0) == group(o, 1)


def test_gpt2_conv1d_fused_qkv_is_split_into_q_k_v_and_heads(traced):
    _, _, spec = traced["gpt2"]
    w = "transformer.h.0.attn.c_attn.weight"  # Conv1D: (in, out) = (16, 48), [q | k | v]
    out_axis = {(a.start, g) for g, axes in spec.axes.items() for a in axes if a.key == w and a.axis == 1}
    by_start = {s: g for s, g in out_axis}
    assert sorted(by_start) == [0, 8, 16, 24, 32, 40]
    assert by_start[0] == by_start[16] and by_start[8] == by_start[24]  # q head i and k head i: one group
    assert len({by_start[0], by_start[8], by_start[32], by_start[40]}) == 4
    proj = "transformer.h.0.attn.c_proj.weight"  # the output projection reads v's heads (Conv1D axis 0)
    assert {(a.start, g) for g, axes in spec.axes.items() for a in axes if a.key == proj and a.axis == 0} == {
        (0, by_start[32]),
        (8, by_start[40]),
    }
    stream = next(g for g, axes in spec.axes.items() if any(a.key == w and a.axis == 0 for a in axes))
    assert spec.streams[stream]["residual"]


def test_gpt2_lm_head_tied_to_wte_stays_tied(traced):
    model, x, spec = traced["gpt2lm"]
    assert spec.ties == {"lm_head.weight": "transformer.wte.weight"}
    assert spec.streams["transformer.wte"]["kind"] == "output"  # the vocabulary rows are logits: fixed
    state = _perturbed(model, 1)
    permuted = apply_permutation(state, random_permutation(spec, 3), spec=spec)
    assert permuted["lm_head.weight"] is permuted["transformer.wte.weight"]
    y0, y1 = _logits(model, spec, state, x), _logits(model, spec, permuted, x)
    assert float((y0 - y1).abs().max()) <= 1e-5 * max(1.0, float(y0.abs().max()))


@pytest.mark.parametrize("name", RAW)
def test_planted_permutation_is_recovered_exactly(traced, name):
    model, _, spec = traced[name]
    sa = _perturbed(model, 2)
    pi = random_permutation(spec, torch.Generator().manual_seed(5))
    sb = apply_permutation(sa, pi, spec=spec)
    result = weight_matching(sa, sb, spec=spec, seed=3)
    for g in spec.groups:
        assert torch.equal(result.perm[g], invert(pi)[g]), g
    back = apply_permutation(sb, result.perm, spec=spec)
    assert back.keys() == sa.keys()
    for k in sa:
        assert torch.equal(back[k], sa[k]), k


@pytest.mark.parametrize("name", RAW)
def test_weight_matching_two_inits_keeps_the_function(traced, name):
    model, x, spec = traced[name]
    sa, sb = _perturbed(model, 3), _perturbed(_raw(name, 1)[0], 4)
    result = weight_matching(sa, sb, spec=spec, seed=0)
    aligned = apply_permutation(sb, result.perm, spec=spec)
    assert not all(torch.equal(p, torch.arange(len(p))) for p in result.perm.values())
    y0, y1 = _logits(model, spec, sb, x), _logits(model, spec, aligned, x)
    assert float((y0 - y1).abs().max()) <= 1e-5 * max(1.0, float(y0.abs().max()))


def test_a_fixed_residual_stream_is_warned_about_and_reported():
    class Stream(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.fc1, self.fc2, self.head = nn.Embedding(10, 8), nn.Linear(8, 16), nn.Linear(16, 8), nn.Linear(8, 3)

        def forward(self, ids):
            h = self.emb(ids)
            h = h + self.fc2(torch.relu(self.fc1(h)))
            return self.head(torch.cumsum(h, -1)).mean(1)  # cumsum along the units: their order matters

    with pytest.warns(UserWarning, match="residual stream"):
        spec = trace_spec(Stream(), torch.randint(0, 10, (2, 5)), strict=False)
    info = spec.summary()
    assert info["residual_fixed"] and info["stream_share"]["residual"] == 0.0
    assert info["stream_share"]["hidden"] == 1.0 and 0 < info["unit_share"] < 1


# ------------------------------------------------------------------------ stardomain.models.hf: registry models


@pytest.mark.parametrize("name", ["hf:vit", "hf:gpt2", "hf:bert"])
def test_hf_registry_models_trace_align_and_keep_their_function(name):
    torch.manual_seed(0)
    a = models.create(name, 10, SHAPE, **TINY)
    torch.manual_seed(1)
    b = models.create(name, 10, SHAPE, **TINY)
    assert a.arch["name"] == name and a.arch["options"]["hidden"] == 16
    x = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    assert a(x).shape == (16, 10)
    spec = trace_spec(a)  # the random batch of arch["in_shape"]: floats, quantised into tokens for gpt2/bert
    assert spec.summary()["residual_fixed"] == [] and spec.summary()["unit_share"] == 1.0
    aligned, result = align(a.state_dict(), b.state_dict(), spec=spec, model=a, x=x)
    assert result.check == "passed" and result.function_gap <= 1e-5


def test_token_models_take_ids_or_quantise_floats():
    model = models.create("hf:bert", 10, SHAPE, **TINY).eval()
    ids = torch.randint(0, VOCAB, (2, 64))
    assert torch.equal(model.token_ids(ids.view(2, 1, 8, 8)), ids)
    q = model.token_ids(torch.tensor([[-5.0, -2.0, 0.0, 2.0, 9.0]]))
    assert q.tolist() == [[0, 0, 8, 16, 16]]
    with pytest.raises(StardomainError, match="multiple of heads"):
        models.create("hf:gpt2", 10, SHAPE, hidden=10, heads=3)
    with pytest.raises(StardomainError, match="unknown model"):
        models.create("hf:t5", 10, SHAPE)


@pytest.fixture(scope="module")
def small_digits():
    from stardomain.data import load_dataset

    return load_dataset("digits", subset=256)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap falls back to a loop for CPU sdpa
@pytest.mark.parametrize("name", ["hf:vit", "hf:gpt2", "hf:bert"])
def test_barrier_curve_of_aligned_hf_models(name, small_digits):
    from stardomain.barrier import barriers, curve

    torch.manual_seed(0)
    a = models.create(name, 10, SHAPE, **TINY)
    torch.manual_seed(1)
    b = models.create(name, 10, SHAPE, **TINY)
    aligned, _ = align(a.state_dict(), b.state_dict(), model=a, x=small_digits.train_x[:64])
    c = curve(a.state_dict(), aligned, model=a, dataset=small_digits, num_points=3)
    assert len(c.test_loss) == 3 and all(v == v for v in c.test_loss)
    ends = curve(a.state_dict(), b.state_dict(), model=a, dataset=small_digits, ts=[0.0, 1.0])
    assert c.test_loss[0] == pytest.approx(ends.test_loss[0], rel=1e-5)
    assert c.test_loss[-1] == pytest.approx(ends.test_loss[-1], rel=1e-5)  # aligned B computes B's function
    assert all(v == v for v in barriers(c).values())


def test_one_starlight_epoch_on_an_hf_model(small_digits):
    from stardomain.starlight import Starlight, StarlightConfig
    from stardomain.training.loop import Recipe

    torch.manual_seed(0)
    star = models.create("hf:bert", 10, SHAPE, **TINY)
    sources = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        sources.append(models.create("hf:bert", 10, SHAPE, **TINY).state_dict())
    config = StarlightConfig(recipe=Recipe(lr=0.05, epochs=1, batch_size=64))
    result = Starlight(star, sources, small_digits, config).fit(progress=False)
    assert len(result.history) == 1 and result.history[0]["interp_train_loss"] > 0
    assert len(result.permutations) == 2 and result.realignments >= 2


@pytest.mark.parametrize("name", RAW)
def test_activation_matching_recovers_a_planted_permutation_on_token_streams(traced, name):
    """Units on the last axis, tokens pooled as samples; q/k head groups read at the projections' outputs."""
    from stardomain.permute import activation_matching

    model, _, spec = traced[name]
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(64, *SHAPE, generator=gen) if name == "vit" else torch.randint(0, VOCAB, (64, 64), generator=gen)
    sa = _perturbed(model, 5)
    pi = random_permutation(spec, 11)
    res = activation_matching(sa, apply_permutation(sa, pi, spec=spec), spec=spec, model=model, x=x, batch_size=32)
    assert res.objective == pytest.approx(1.0, abs=1e-4)
    for g in spec.groups:
        assert torch.equal(res.perm[g], invert(pi)[g]), g


@pytest.mark.parametrize("name", RAW)
def test_activation_matching_two_inits_keeps_the_function(traced, name):
    """Activation matching between two different models only reorders B's units: B computes the same logits."""
    from stardomain.permute import activation_matching

    model, x_eval, spec = traced[name]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(32, *SHAPE, generator=gen) if name == "vit" else torch.randint(0, VOCAB, (32, 64), generator=gen)
    sa, sb = _perturbed(model, 1), _perturbed(model, 2)
    res = activation_matching(sa, sb, spec=spec, model=model, x=x, batch_size=16)
    moved = sum(int((res.perm[g] != torch.arange(len(res.perm[g]))).sum()) for g in spec.groups)
    assert moved > 0  # it did permute something
    aligned = apply_permutation(sb, res.perm, spec=spec)
    assert torch.allclose(_logits(model, spec, aligned, x_eval), _logits(model, spec, sb, x_eval), atol=1e-5)
