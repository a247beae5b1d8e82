"""Symmetry classes beyond permutations (issue 31, item 2): align(symmetry="orthogonal" | "invertible").

Tiny transformers built from configs: Llama (RMSNorm, grouped-query attention, rotary), GPT-2 (LayerNorm, fused
Conv1D qkv) and ViT (LayerNorm). A planted map on a copy of A is undone; every alignment keeps B's function to 1e-5
(fp32); a model that cannot take a map is refused in one line; the default (permutation) is untouched.
"""

from __future__ import annotations

import warnings

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

import torch  # noqa: E402

from stardomain import models  # noqa: E402
from stardomain.errors import StardomainError  # noqa: E402
from stardomain.permute import align, apply_permutation, trace_spec, weight_matching  # noqa: E402
from stardomain.permute.symmetry import (  # noqa: E402
    attention_blocks,
    fold_norms,
    map_heads,
    random_orthogonal,
    residual_stream,
    rotate_stream,
)
from stardomain.permute.trace import function_gap, perturbed_state  # noqa: E402

VOCAB = 17


def _quiet(config):
    config.bos_token_id = config.eos_token_id = None
    return config


def _model(name: str, seed: int = 0, **extra):
    """A bare transformers model built from a tiny config, its input batch, and its spec."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(100)
    ids = torch.randint(1, VOCAB, (3, 12), generator=gen)
    if name.startswith("llama"):
        config = _quiet(
            transformers.LlamaConfig(
                vocab_size=VOCAB,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=32,
                pad_token_id=0,
                num_labels=3,
                **extra,
            )
        )
        cls = transformers.LlamaForCausalLM if name == "llama_lm" else transformers.LlamaForSequenceClassification
        model, x = cls(config).eval(), ids
    elif name == "gpt2":
        config = _quiet(
            transformers.GPT2Config(
                vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=2, n_head=2, pad_token_id=0, num_labels=3, use_cache=False
            )
        )
        model, x = transformers.GPT2ForSequenceClassification(config).eval(), ids
    elif name == "gpt2lm":
        config = _quiet(transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2, use_cache=False))
        model, x = transformers.GPT2LMHeadModel(config).eval(), ids
    elif name == "vit":
        config = transformers.ViTConfig(
            image_size=8,
            patch_size=4,
            num_channels=1,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
        )
        model, x = transformers.ViTForImageClassification(config).eval(), torch.randn(3, 1, 8, 8, generator=gen)
    elif name == "bert":
        config = _quiet(
            transformers.BertConfig(
                vocab_size=VOCAB,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=32,
                pad_token_id=0,
                num_labels=3,
            )
        )
        model, x = transformers.BertForSequenceClassification(config).eval(), ids
    else:
        raise AssertionError(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Llama: rotary q/k units stay fixed (said elsewhere)
        spec = trace_spec(model, x, strict=False)
    return model, x, spec


def _gap(model, s1, s2, x) -> float:
    gap, scale = function_gap(model, s1, s2, (x,))
    return gap / max(scale, 1.0)


def _max_diff(s1, s2) -> float:
    return max(float((s1[k].double() - s2[k].double()).abs().max()) for k in s1 if s1[k].is_floating_point())


def _rotated_twin(model, x, spec, state, seed: int, fix_ones: bool):
    """A's copy with its norms folded and its residual stream rotated: the same function, other weights."""
    (stream,) = residual_stream(model, spec, (x,))
    folded = fold_norms(state, [stream], model=model, spec=spec)
    twin = rotate_stream(folded, stream, random_orthogonal(stream.size, seed, fix_ones=fix_ones), spec=spec)
    assert _gap(model, state, twin, x) <= 1e-5
    assert _max_diff(twin, folded) > 0.1
    return twin


@pytest.mark.parametrize("name", ["llama", "llama_lm"])
def test_a_rotated_rmsnorm_stream_is_undone_by_orthogonal_alignment(name):
    model, x, spec = _model(name)
    a = perturbed_state(model, 1)  # gains far from 1: folding matters
    (stream,) = residual_stream(model, spec, (x,))
    assert not stream.centered and len(stream.norms) == 5  # 2 x (input, post-attention) + final, all RMSNorm
    b = _rotated_twin(model, x, spec, a, 3, fix_ones=False)
    aligned, result = align(a, b, spec=spec, model=model, x=x, symmetry="orthogonal")
    assert result.check == "passed" and result.function_gap <= 1e-5
    assert _max_diff(aligned, a) <= 1e-5  # B unfolded into A's gains: A itself
    rec = result.symmetry
    assert rec["symmetry"] == "orthogonal" and rec["residual"][0]["subgroup"] == "O(d) (RMSNorm)"
    assert rec["distance"]["after"] <= 1e-8 * rec["distance"]["before"]


@pytest.mark.parametrize("name", ["gpt2", "vit"])
def test_a_layernorm_stream_rotated_in_the_ones_fixing_subgroup_is_undone(name):
    model, x, spec = _model(name)
    a = perturbed_state(model, 1)
    (stream,) = residual_stream(model, spec, (x,))
    assert stream.centered
    b = _rotated_twin(model, x, spec, a, 4, fix_ones=True)
    aligned, result = align(a, b, spec=spec, model=model, x=x, symmetry="orthogonal")
    assert result.function_gap <= 1e-5 and _max_diff(aligned, a) <= 1e-5
    assert "all-ones" in result.symmetry["residual"][0]["subgroup"]


def test_layernorm_does_not_commute_with_rotations_that_move_the_ones_vector():
    model, x, spec = _model("gpt2")
    a = perturbed_state(model, 1)
    (stream,) = residual_stream(model, spec, (x,))
    folded = fold_norms(a, [stream], model=model, spec=spec)
    moved = rotate_stream(folded, stream, random_orthogonal(stream.size, 5), spec=spec)
    assert _gap(model, a, moved, x) > 1e-3  # why LayerNorm models get the subgroup only


@pytest.mark.parametrize("name", ["llama", "gpt2", "vit"])
def test_orthogonal_alignment_of_two_inits_keeps_the_function_and_moves_b_closer(name):
    model, x, spec = _model(name)
    a, b = perturbed_state(model, 1), perturbed_state(_model(name, 1)[0], 2)
    plain, res0 = align(a, b, spec=spec, model=model, x=x)
    aligned, result = align(a, b, spec=spec, model=model, x=x, symmetry="orthogonal")
    assert result.function_gap <= 1e-5 and _gap(model, b, aligned, x) <= 1e-5
    rec = result.symmetry["distance"]
    hist = rec["history"]  # coordinate descent: never farther (float64 sums of the whole state: rounding aside)
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in zip(hist, hist[1:])), hist
    assert rec["after"] < rec["before"]
    for k in (s.weight for s in residual_stream(model, spec, (x,))[0].norms):
        assert torch.equal(aligned[k], a[k])  # A's parameterisation: A's gains
    assert res0.symmetry is None


def _plant_heads(model, state, *, qk: bool, seed: int = 7):
    gen = torch.Generator().manual_seed(seed)
    out = state
    for blk in attention_blocks(model):

        def m(dh=blk.head_dim):
            return torch.eye(dh, dtype=torch.float64) + 0.3 * torch.randn(dh, dh, generator=gen, dtype=torch.float64)

        out = map_heads(out, blk, qk={j: m() for j in range(blk.kv_heads)} if qk else None, ov={j: m() for j in range(blk.kv_heads)})
    return out


@pytest.mark.parametrize("name", ["gpt2", "vit", "bert"])
def test_planted_invertible_qk_and_ov_maps_are_undone(name):
    model, x, spec = _model(name)
    a = perturbed_state(model, 1)
    b = _plant_heads(model, a, qk=True)
    assert _gap(model, a, b, x) <= 1e-5 and _max_diff(a, b) > 0.1
    aligned, result = align(a, b, spec=spec, model=model, x=x, symmetry="invertible")
    assert result.function_gap <= 1e-5 and _max_diff(aligned, a) <= 1e-5
    heads = result.symmetry["heads"]
    assert heads["invertible"] >= len(attention_blocks(model)) * 2  # the planted maps came from the fit
    if name == "bert":  # post-norm: no residual map, heads still exact
        assert result.symmetry["residual"].startswith("not mapped") and "post-norm" in result.symmetry["residual"]


def test_llama_rotary_keeps_qk_fixed_and_undoes_planted_ov_maps_per_kv_group():
    model, x, spec = _model("llama")
    blocks = attention_blocks(model)
    assert all(b.rotary and b.heads == 4 and b.kv_heads == 2 for b in blocks)
    a = perturbed_state(model, 1)
    b = _plant_heads(model, a, qk=False)
    assert _gap(model, a, b, x) <= 1e-5
    aligned, result = align(a, b, spec=spec, model=model, x=x, symmetry="invertible")
    assert result.function_gap <= 1e-5 and _max_diff(aligned, a) <= 1e-5
    assert "rotary" in result.symmetry["qk"]
    # a QK map on a rotary model would change the function: why it is not fitted
    gen = torch.Generator().manual_seed(1)
    m = torch.eye(4, dtype=torch.float64) + 0.3 * torch.randn(4, 4, generator=gen, dtype=torch.float64)
    assert _gap(model, a, map_heads(a, blocks[0], qk={0: m}), x) > 1e-4


def test_invertible_alignment_of_two_inits_keeps_the_function():
    model, x, spec = _model("gpt2")
    a, b = perturbed_state(model, 1), perturbed_state(_model("gpt2", 1)[0], 2)
    aligned, result = align(a, b, spec=spec, model=model, x=x, symmetry="invertible")
    assert result.function_gap <= 1e-5 and _gap(model, b, aligned, x) <= 1e-5
    assert result.symmetry["distance"]["after"] < result.symmetry["distance"]["before"]
    h = result.symmetry["heads"]
    assert h["worst_condition"] <= h["max_condition"]


@pytest.mark.parametrize(
    ("name", "symmetry", "match"),
    [
        ("bert", "orthogonal", "post-norm"),
        ("gpt2lm", "orthogonal", "tied"),
        ("llama_lm_tied", "orthogonal", "tied"),
    ],
)
def test_a_symmetry_the_model_cannot_take_is_refused_in_one_line(name, symmetry, match):
    if name == "llama_lm_tied":
        model, x, spec = _model("llama_lm", tie_word_embeddings=True)
    else:
        model, x, spec = _model(name)
    a, b = perturbed_state(model, 1), perturbed_state(model, 2)
    with pytest.raises(StardomainError, match=match) as err:
        align(a, b, spec=spec, model=model, x=x, symmetry=symmetry)
    assert "\n" not in str(err.value)


def test_cnns_and_mlps_are_refused_and_bad_settings_named():
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for name, opts, match in [("mlp", {"width": 16, "depth": 2}, "residual stream"), ("resnet20", {"width": 0.25}, "BatchNorm")]:
        torch.manual_seed(0)
        model = models.create(name, 3, (1, 8, 8), **opts)
        sa, sb = perturbed_state(model, 1), perturbed_state(model, 2)
        with pytest.raises(StardomainError, match=match) as err:
            align(sa, sb, model=model, x=x, symmetry="orthogonal")
        assert "\n" not in str(err.value)
    with pytest.raises(StardomainError, match="unknown symmetry 'rotation'"):
        align(sa, sb, model=model, x=x, symmetry="rotation")
    with pytest.raises(StardomainError, match="needs model="):
        align(sa, sb, spec=trace_spec(model, x), symmetry="invertible", check=False)


def test_the_default_permutation_symmetry_is_plain_weight_matching():
    torch.manual_seed(0)
    model = models.create("mlp", 3, (1, 8, 8))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sa, sb = perturbed_state(model, 1), perturbed_state(model, 2)
    spec = trace_spec(model, x)
    ref = apply_permutation(sb, weight_matching(sa, sb, spec=spec, seed=0).perm, spec=spec)
    for kw in ({}, {"symmetry": "permutation"}):
        aligned, result = align(sa, sb, spec=spec, model=model, x=x, **kw)
        assert result.symmetry is None
        assert aligned.keys() == ref.keys() and all(torch.equal(aligned[k], ref[k]) for k in ref)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap falls back to a loop for CPU sdpa
def test_evaluate_pair_and_the_cli_record_the_symmetry(tmp_path):
    from click.testing import CliRunner

    from stardomain.barrier import evaluate_pair
    from stardomain.checkpoints import store
    from stardomain.cli.app import cli
    from stardomain.data import load_dataset

    tiny = {"hidden": 16, "layers": 1, "heads": 2, "mlp": 2}
    torch.manual_seed(0)
    a = models.create("hf:gpt2", 10, (1, 8, 8), **tiny)
    torch.manual_seed(1)
    b = models.create("hf:gpt2", 10, (1, 8, 8), **tiny)
    ds = load_dataset("digits", subset=64)
    sa, sb = perturbed_state(a, 1), perturbed_state(b, 2)
    pair = evaluate_pair(sa, sb, model=a, dataset=ds, points=3, symmetry="invertible")
    rec = pair.record()
    assert rec["symmetry"]["symmetry"] == "invertible" and pair.function_check == "passed"
    plain = evaluate_pair(sa, sb, model=a, dataset=ds, points=3).record()
    assert "symmetry" not in plain and plain["curve"]["test_loss"][0] == rec["curve"]["test_loss"][0]
    assert rec["curve"]["test_loss"][-1] == pytest.approx(plain["curve"]["test_loss"][-1], rel=1e-5)  # B's function
    with pytest.raises(StardomainError, match="extends an alignment"):
        evaluate_pair(sa, sb, model=a, dataset=ds, align="none", symmetry="orthogonal")
    for name, state in (("a", sa), ("b", sb)):
        store.save(tmp_path / f"{name}.safetensors", state, {"arch": a.arch})
    r = CliRunner().invoke(
        cli, ["align", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--symmetry", "orthogonal", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert '"symmetry": "orthogonal"' in r.output and "O(d) keeping the all-ones direction" in r.output
