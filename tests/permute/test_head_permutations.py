"""Whole-head permutations (issue 31, item 1): heads trade slots as wholes, units move inside them.

Tiny transformers built from configs (no weights downloaded): multi-head attention with separate q/k/v
(ViT, BERT, DistilBERT), GPT-2's fused Conv1D qkv (with a classification head, and as an LM with its head
tied to the embedding), and Llama's grouped-query attention with rotary embeddings (a kv head moves with its
query heads; q/k units stay fixed inside a head). A twin of A with its heads (and the units inside them, and
the residual stream) permuted computes A's function and is recovered exactly by weight and activation matching.
"""

from __future__ import annotations

import warnings

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

from stardomain.errors import StardomainError  # noqa: E402
from stardomain.permute import (  # noqa: E402
    activation_matching,
    align,
    apply_permutation,
    compose,
    invert,
    l2_distance,
    random_permutation,
    trace_spec,
    weight_matching,
)
from stardomain.permute.spec_report import format_report, spec_report  # noqa: E402
from stardomain.permute.trace import perturbed_state  # noqa: E402

VOCAB = 17
TOKENS = 12


def _quiet(config):
    config.bos_token_id = config.eos_token_id = None
    return config


def _build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if name == "vit":
        config = transformers.ViTConfig(
            image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=32, num_labels=5,
        )  # fmt: skip
        return transformers.ViTForImageClassification(config).eval()
    if name in ("gpt2", "gpt2lm"):
        config = _quiet(
            transformers.GPT2Config(
                vocab_size=VOCAB + 1, n_positions=TOKENS, n_embd=16, n_layer=2, n_head=4, pad_token_id=VOCAB, num_labels=5, use_cache=False
            )
        )
        return (transformers.GPT2ForSequenceClassification if name == "gpt2" else transformers.GPT2LMHeadModel)(config).eval()
    if name == "bert":
        config = _quiet(
            transformers.BertConfig(
                vocab_size=VOCAB + 1, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                max_position_embeddings=TOKENS, pad_token_id=VOCAB, num_labels=5,
            )
        )  # fmt: skip
        return transformers.BertForSequenceClassification(config).eval()
    if name == "distilbert":
        config = _quiet(
            transformers.DistilBertConfig(
                vocab_size=VOCAB + 1, dim=16, n_layers=2, n_heads=4, hidden_dim=32, max_position_embeddings=TOKENS,
                pad_token_id=VOCAB, num_labels=5,
            )
        )  # fmt: skip
        return transformers.DistilBertForSequenceClassification(config).eval()
    if name == "llama":  # grouped-query attention: 4 query heads share 2 kv heads; rotary position embeddings
        config = _quiet(
            transformers.LlamaConfig(
                vocab_size=VOCAB + 1, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=TOKENS, pad_token_id=VOCAB, num_labels=5, use_cache=False,
            )
        )  # fmt: skip
        return transformers.LlamaForSequenceClassification(config).eval()
    raise AssertionError(name)


def _inputs(name: str, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if name == "vit":
        return torch.randn(n, 1, 8, 8, generator=gen)
    return torch.randint(0, VOCAB, (n, TOKENS), generator=gen)


NAMES = ["vit", "gpt2", "gpt2lm", "bert", "distilbert", "llama"]
SLOTS = {"vit": 4, "gpt2": 4, "gpt2lm": 4, "bert": 4, "distilbert": 4, "llama": 2}  # llama: one slot per kv head


@pytest.fixture(scope="module")
def traced():
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # llama's rotary warning has a test of its own
        for name in NAMES:
            model = _build(name)
            x = _inputs(name, 3, 100)
            out[name] = (model, x, trace_spec(model, x))
    return out


def _untied(spec, state):
    return {k: v for k, v in state.items() if k not in spec.ties}


def _logits(model, spec, state, x):
    with torch.no_grad():
        return functional_call(model, _untied(spec, state), (x,)).logits


def _gap(model, spec, s1, s2, x) -> float:
    y1, y2 = _logits(model, spec, s1, x), _logits(model, spec, s2, x)
    return float((y1 - y2).abs().max()) / max(1.0, float(y1.abs().max()))


def _twin_permutation(spec, seed: int):
    """A random permutation of every group that also moves every head set (residual stream included)."""
    for s in range(seed, seed + 100):
        pi = random_permutation(spec, s, heads=True)
        if all(not torch.equal(pi[h], torch.arange(len(pi[h]))) for h in spec.heads):
            return pi
    raise AssertionError("no seed moves every head set")


def _midpoint_loss(model, spec, s1, s2, x) -> float:
    """Cross-entropy of the midpoint against A's own predictions: a barrier probe on tiny data."""
    mid = {k: torch.lerp(v, s2[k], 0.5) if v.is_floating_point() else v for k, v in s1.items()}
    target = _logits(model, spec, s1, x).argmax(-1).reshape(-1)
    logits = _logits(model, spec, mid, x)
    return float(nn.functional.cross_entropy(logits.reshape(target.numel(), -1), target))


@pytest.mark.parametrize("name", NAMES)
def test_every_attention_layer_is_a_head_set(traced, name):
    _, _, spec = traced[name]
    assert len(spec.heads) == 2  # one per layer
    for slots in spec.heads.values():
        assert len(slots) == SLOTS[name] and all(len(slot) == 2 for slot in slots)  # q/k units, v/out units
    info = spec.summary()
    assert info["head_sets"] == {h: SLOTS[name] for h in spec.heads}
    assert info["residual_fixed"] == []


def test_llama_rotary_and_grouped_query_attention_are_honest(traced):
    model, x, spec = traced["llama"]
    trace_spec(model, x, check=False)  # strict mode accepts it: nothing is refused, what stays fixed is said
    info = spec.summary()
    # q/k units stay inside their heads (rotary), v/out units move; covered_share and the unit shares say so
    assert info["stream_share"]["heads"] == 0.5 and info["unit_share"] < 1.0  # q/k: 4 of every 8 head units
    assert info["covered_share"] < 0.99
    assert any("rotary position embedding" in w and "q/k units inside a head stay fixed" in w for w in info["warnings"])
    assert not any("combines tensors" in why for why in spec.fixed.values())
    with pytest.warns(UserWarning, match="rotary position embedding"):
        trace_spec(model, x, check=False)
    for slots in spec.heads.values():
        qk = next(g for g in slots[0] if spec.groups[g] == 1)  # q/k: one unit, the whole head (block = head size)
        assert spec.streams[qk]["locked"] and spec.streams[qk]["moves_whole"]
        # the kv head's slot owns its k rows and the q rows of both query heads that read it
        keys = sorted(a.key.rsplit(".", 2)[-2] for a in spec.axes[qk])
        assert keys == ["k_proj", "q_proj", "q_proj"] and all(a.block == 4 for a in spec.axes[qk])
        v = next(g for g in slots[0] if spec.groups[g] == 4)
        assert sorted(a.key.rsplit(".", 2)[-2] for a in spec.axes[v]) == ["o_proj", "o_proj", "v_proj"]
    rep = spec_report(model, x)
    assert rep["strict"] == "ok" and rep["random_permutation"]["kept"]
    text = format_report(rep)
    assert "whole heads:" in text and "WARNING:" in text and "rotary" in text


@pytest.mark.parametrize("name", NAMES)
def test_weight_matching_recovers_a_head_permuted_twin_exactly(traced, name):
    model, x, spec = traced[name]
    sa = perturbed_state(model, 2)
    pi = _twin_permutation(spec, 5)
    sb = apply_permutation(sa, pi, spec=spec)
    assert _gap(model, spec, sa, sb, x) <= 1e-5  # the twin computes A's function
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)
    result = weight_matching(sa, sb, spec=spec, seed=3)
    expected = invert(pi, spec=spec)
    for key in [*spec.groups, *spec.heads]:
        assert torch.equal(result.perm[key], expected[key]), key
    back = apply_permutation(sb, result.perm, spec=spec)
    for k in sa:
        assert torch.equal(back[k], sa[k]), k
    ends = _midpoint_loss(model, spec, sa, sa, x)
    assert abs(_midpoint_loss(model, spec, sa, back, x) - ends) < 1e-5  # barrier 0 on this batch
    assert result.stats["head_moves"] >= 1


@pytest.mark.parametrize("name", NAMES)
def test_weight_matching_two_inits_keeps_the_function(traced, name):
    model, x, spec = traced[name]
    sa, sb = perturbed_state(model, 3), perturbed_state(_build(name, 1), 4)
    result = weight_matching(sa, sb, spec=spec, seed=0)
    aligned = apply_permutation(sb, result.perm, spec=spec)
    assert _gap(model, spec, sb, aligned, x) <= 1e-5
    assert all(h in result.perm for h in spec.heads)
    assert all(b >= a - 1e-6 * abs(a) for a, b in zip(result.history, result.history[1:]))  # monotone


@pytest.mark.parametrize("name", NAMES)
def test_activation_matching_recovers_a_head_permuted_twin(traced, name):
    model, _, spec = traced[name]
    sa = perturbed_state(model, 5)
    pi = _twin_permutation(spec, 11)
    sb = apply_permutation(sa, pi, spec=spec)
    res = activation_matching(sa, sb, spec=spec, model=model, x=_inputs(name, 48, 7), batch_size=24)
    expected = invert(pi, spec=spec)
    in_heads = [g for slots in spec.heads.values() for slot in slots for g in slot]
    for key in [*spec.heads, *in_heads]:  # (a unit that is constant on the data, e.g. dead after a ReLU, is a tie elsewhere)
        assert torch.equal(res.perm[key], expected[key]), key
    assert _gap(model, spec, sa, apply_permutation(sb, res.perm, spec=spec), _inputs(name, 3, 100)) <= 1e-5


@pytest.mark.parametrize("name", ["vit", "llama"])
def test_activation_matching_two_inits_keeps_the_function(traced, name):
    model, x, spec = traced[name]
    sa, sb = perturbed_state(model, 1), perturbed_state(_build(name, 1), 2)
    res = activation_matching(sa, sb, spec=spec, model=model, x=_inputs(name, 32, 3), batch_size=16)
    assert _gap(model, spec, sb, apply_permutation(sb, res.perm, spec=spec), x) <= 1e-5


def test_compose_and_invert_of_head_moves(traced):
    model, _, spec = traced["gpt2"]
    state = perturbed_state(model, 1)
    p, q = _twin_permutation(spec, 1), _twin_permutation(spec, 40)
    two_steps = apply_permutation(apply_permutation(state, q, spec=spec), p, spec=spec)
    once = apply_permutation(state, compose(p, q, spec=spec), spec=spec)
    assert all(torch.equal(once[k], two_steps[k]) for k in state)
    back = apply_permutation(apply_permutation(state, p, spec=spec), invert(p, spec=spec), spec=spec)
    assert all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(StardomainError, match="spec="):
        invert(p)
    with pytest.raises(StardomainError, match="head"):
        apply_permutation(state, {**p, next(iter(spec.heads)): torch.tensor([0, 0, 1, 2])}, spec=spec)


def test_a_head_reversed_vit_is_recovered_through_align_and_its_barrier_is_zero():
    """The issue's case: the same ViT with its heads in reverse order (registry model, digits, the barrier API)."""
    from stardomain import models
    from stardomain.barrier import barriers, curve
    from stardomain.data import load_dataset

    data = load_dataset("digits", subset=128)
    torch.manual_seed(0)
    model = models.create("hf:vit", 10, (1, 8, 8), hidden=16, layers=2, heads=4, mlp=2)
    x = data.train_x[:64]
    spec = trace_spec(model, x[:8])
    sa = perturbed_state(model, 3)
    pi = {g: torch.arange(n) for g, n in spec.groups.items()} | {h: torch.arange(len(s)).flip(0) for h, s in spec.heads.items()}
    sb = apply_permutation(sa, pi, spec=spec)
    unaligned = barriers(curve(sa, sb, model=model, dataset=data, num_points=3))
    aligned, result = align(sa, sb, spec=spec, model=model, x=x)
    assert result.check == "passed" and result.function_gap <= 1e-5
    assert all(torch.equal(aligned[k], sa[k]) for k in sa)
    after = barriers(curve(sa, aligned, model=model, dataset=data, num_points=3))
    assert abs(after["test_loss"]) < 1e-5 and abs(after["train_loss"]) < 1e-5
    assert all(v == v for v in unaligned.values())
    assert l2_distance(sa, sb) > 1.0 and l2_distance(sa, aligned) == 0.0
    aligned_act, res_act = align(sa, sb, spec=spec, model=model, x=x, method="activation")
    assert all(torch.equal(aligned_act[k], sa[k]) for k in sa) and res_act.check == "passed"


def test_starlight_realigns_with_whole_heads():
    """Starlight warm-starts weight matching from the last permutation, head entries included, every epoch."""
    from stardomain import models
    from stardomain.data import load_dataset
    from stardomain.starlight import Starlight, StarlightConfig
    from stardomain.training.loop import Recipe

    data = load_dataset("digits", subset=64)
    torch.manual_seed(0)
    star = models.create("hf:gpt2", 10, (1, 8, 8), hidden=16, layers=1, heads=4, mlp=2)
    spec = trace_spec(star)
    src = apply_permutation(perturbed_state(star, 1), _twin_permutation(spec, 2), spec=spec)
    config = StarlightConfig(recipe=Recipe(lr=0.01, epochs=1, batch_size=32))
    runner = Starlight(star, [src], data, config, spec=spec)
    runner.realign()
    first = runner.perms[0]
    assert first is not None and set(spec.heads) <= set(first)
    result = runner.fit(progress=False)
    assert result.realignments >= 2 and set(spec.heads) <= set(result.permutations[0])
    aligned = runner.aligned_sources()[0]
    x = data.train_x[:8]
    with torch.no_grad():
        y1 = functional_call(star, src, (x,))
        y2 = functional_call(star, aligned, (x,))
    assert float((y1 - y2).abs().max()) <= 1e-5 * max(1.0, float(y1.abs().max()))


class _MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.attn, self.head = nn.Linear(4, 8), nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        h = self.emb(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.head(h.mean(1))


def test_nn_multihead_attention_heads_move_whole():
    torch.manual_seed(0)
    model = _MHA().eval()
    x = torch.randn(3, 5, 4)
    spec = trace_spec(model, x, capture="fx")
    assert [len(s) for s in spec.heads.values()] == [2]
    sa = {k: v.clone() for k, v in perturbed_state(model, 1).items()}
    pi = _twin_permutation(spec, 0)
    sb = apply_permutation(sa, pi, spec=spec)
    res = weight_matching(sa, sb, spec=spec)
    back = apply_permutation(sb, res.perm, spec=spec)
    assert all(torch.equal(back[k], sa[k]) for k in sa)
