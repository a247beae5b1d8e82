"""Tiny Hugging Face ``transformers`` classifiers as stardomain models: ``models.create("hf:vit", ...)``.

``hf:vit`` (``ViTForImageClassification`` on ``(C, H, W)`` images, split into ``patch`` x ``patch``
patches), ``hf:gpt2`` (``GPT2ForSequenceClassification``) and ``hf:bert``
(``BertForSequenceClassification``) are built from a small config (no download, no pretrained
weights) for a dataset's ``num_classes`` and ``in_shape``, and wrapped in :class:`HFClassifier`,
whose ``forward(x)`` returns the logits tensor like every registry model. The token models read
an input of any shape as a sequence of ``prod(in_shape)`` tokens (an 8x8 digit: 64 "pixel
tokens"): integer inputs are token ids already, float inputs (normalised pixels) are quantised
into ``vocab`` ids over ``[x_min, x_max]``. GPT-2's padding token is an extra id the quantiser
never emits, so every sequence is classified at its last token; BERT's at its first.

Their permutation specs come from :func:`stardomain.permute.trace_spec`, which captures them with
``torch.export`` (fx cannot trace them). ``transformers`` is an optional dependency
(``pip install stardomain[hf]``); this module imports it only when a model is built.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from torch import Tensor, nn

from stardomain.errors import StardomainError
from stardomain.models.entry import ModelEntry, check, option_types

__all__ = ["HF_MODELS", "HFClassifier", "build_bert", "build_gpt2", "build_vit", "model_entry"]


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise StardomainError("hf: models need the transformers package: pip install 'stardomain[hf]'") from None
    return transformers


class HFClassifier(nn.Module):
    """A Hugging Face sequence/image classifier as a plain ``x -> logits`` module.

    ``tokens``: the input is flattened to ``prod(in_shape)`` token ids (floats quantised into
    ``vocab`` bins over ``[x_min, x_max]``); otherwise it goes to the model as pixel values.
    The Hugging Face model is ``self.model`` (state keys ``model.<its own names>``).
    """

    def __init__(self, model: nn.Module, tokens: bool = False, vocab: int = 0, x_min: float = -2.0, x_max: float = 2.0) -> None:
        super().__init__()
        self.model = model
        self.tokens, self.vocab, self.x_min, self.x_max = tokens, vocab, float(x_min), float(x_max)

    def token_ids(self, x: Tensor) -> Tensor:
        """Token ids of a batch: integer inputs as they are, floats quantised (one token per input value)."""
        x = x.flatten(1)
        if x.is_floating_point():
            scaled = (x - self.x_min) / (self.x_max - self.x_min) * (self.vocab - 1)
            x = scaled.round().clamp(0, self.vocab - 1)
        return x.long()

    def forward(self, x: Tensor) -> Tensor:
        if self.tokens:
            return self.model(input_ids=self.token_ids(x)).logits
        return self.model(pixel_values=x).logits


def _quiet(config: Any) -> Any:
    """No generation token ids outside the tiny vocabulary (transformers warns about them)."""
    for name in ("bos_token_id", "eos_token_id"):
        if hasattr(config, name):
            setattr(config, name, None)
    return config


def _check_sizes(name: str, hidden: int, layers: int, heads: int, mlp: int) -> None:
    check(
        hidden >= 1 and layers >= 1 and heads >= 1 and mlp >= 1,
        f"{name} options hidden, layers, heads and mlp must be >= 1 (got {hidden}, {layers}, {heads}, {mlp})",
    )
    check(hidden % heads == 0, f"{name} option hidden={hidden} must be a multiple of heads={heads}")


def _check_tokens(name: str, hidden: int, layers: int, heads: int, mlp: int, vocab: int, x_min: float, x_max: float) -> None:
    _check_sizes(name, hidden, layers, heads, mlp)
    check(vocab >= 2 and x_max > x_min, f"{name} needs vocab >= 2 and x_max > x_min (got {vocab}, [{x_min}, {x_max}])")


def build_vit(
    num_classes: int,
    in_shape: tuple[int, ...],
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    mlp: int = 4,
    patch: int = 4,
    dropout: float = 0.0,
) -> nn.Module:
    """ViT (``ViTForImageClassification``): ``patch`` x ``patch`` patches, a CLS token, pre-LN blocks."""
    check(len(in_shape) == 3, f"hf:vit needs (C, H, W) images, got in_shape {tuple(in_shape)}")
    c, h, w = in_shape
    check(h == w, f"hf:vit needs square images, got {h}x{w}")
    check(patch >= 1 and h % patch == 0, f"hf:vit option patch={patch} must divide the image size {h}")
    _check_sizes("hf:vit", hidden, layers, heads, mlp)
    tf = _transformers()
    config = tf.ViTConfig(
        image_size=h,
        patch_size=patch,
        num_channels=c,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp * hidden,
        num_labels=num_classes,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return HFClassifier(tf.ViTForImageClassification(config))


def build_gpt2(
    num_classes: int,
    in_shape: tuple[int, ...],
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    mlp: int = 4,
    vocab: int = 17,
    dropout: float = 0.0,
    x_min: float = -2.0,
    x_max: float = 2.0,
) -> nn.Module:
    """GPT-2 (``GPT2ForSequenceClassification``) on ``prod(in_shape)`` tokens, classified at the last token."""
    _check_tokens("hf:gpt2", hidden, layers, heads, mlp, vocab, x_min, x_max)
    tf = _transformers()
    config = _quiet(
        tf.GPT2Config(
            vocab_size=vocab + 1,
            n_positions=math.prod(in_shape),
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_inner=mlp * hidden,
            num_labels=num_classes,
            pad_token_id=vocab,
            bos_token_id=None,  # no generation ids outside the tiny vocabulary (checked when the config is built)
            eos_token_id=None,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            use_cache=False,
        )
    )
    return HFClassifier(tf.GPT2ForSequenceClassification(config), tokens=True, vocab=vocab, x_min=x_min, x_max=x_max)


def build_bert(
    num_classes: int,
    in_shape: tuple[int, ...],
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    mlp: int = 4,
    vocab: int = 17,
    dropout: float = 0.0,
    x_min: float = -2.0,
    x_max: float = 2.0,
) -> nn.Module:
    """BERT (``BertForSequenceClassification``): post-LN blocks, the pooler on the first token."""
    _check_tokens("hf:bert", hidden, layers, heads, mlp, vocab, x_min, x_max)
    tf = _transformers()
    config = _quiet(
        tf.BertConfig(
            vocab_size=vocab + 1,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=mlp * hidden,
            max_position_embeddings=math.prod(in_shape),
            type_vocab_size=1,
            pad_token_id=vocab,
            bos_token_id=None,
            eos_token_id=None,
            num_labels=num_classes,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
    )
    return HFClassifier(tf.BertForSequenceClassification(config), tokens=True, vocab=vocab, x_min=x_min, x_max=x_max)


HF_MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "hf:vit": (build_vit, "Hugging Face ViT classifier from a tiny config (patches, CLS token, pre-LN)"),
    "hf:gpt2": (build_gpt2, "Hugging Face GPT-2 sequence classifier on pixel tokens (last-token pooling)"),
    "hf:bert": (build_bert, "Hugging Face BERT sequence classifier on pixel tokens (post-LN, pooler)"),
}


def config_builder(path: str) -> Callable[..., nn.Module]:
    """The builder of ``hf:pkg.module:make_config``: your function ``make_config(num_classes, in_shape)`` returns a
    ``transformers`` config; stardomain builds its ``AutoModelFor{Image,Sequence}Classification`` (images when the
    config has an ``image_size``, else tokens: floats quantised into ``vocab`` ids as for ``hf:gpt2``) from it,
    without weights or downloads. The module must be imported first (``--plugin``): a checkpoint only names it."""
    from stardomain._util.plugins import check_call, resolve

    make_config = resolve(path, "Hugging Face config function")  # a name from a file: only code the user named
    check_call(make_config, f"Hugging Face config function hf:{path}", 1, (1,))  # make_config(num_classes, in_shape)

    def build(num_classes: int, in_shape: tuple[int, ...], *, x_min: float = -2.0, x_max: float = 2.0) -> nn.Module:
        tf = _transformers()
        config = make_config(num_classes, tuple(in_shape))
        if not isinstance(config, tf.PretrainedConfig):
            raise StardomainError(f"hf:{path} returned a {type(config).__name__}, not a transformers config (e.g. tf.ViTConfig(...))")
        config.num_labels = num_classes
        if getattr(config, "image_size", None) is not None:
            return HFClassifier(tf.AutoModelForImageClassification.from_config(config))
        vocab = int(config.vocab_size) - (1 if getattr(config, "pad_token_id", None) == config.vocab_size - 1 else 0)
        model = tf.AutoModelForSequenceClassification.from_config(_quiet(config))
        return HFClassifier(model, tokens=True, vocab=vocab, x_min=x_min, x_max=x_max)

    build.__qualname__ = build.__name__ = f"hf:{path}"
    return build


def model_entry(name: str) -> ModelEntry:
    """The registry entry of an ``hf:`` model name (what :func:`stardomain.models.create` looks up): a built-in
    tiny model (``hf:vit``, ``hf:gpt2``, ``hf:bert``) or ``hf:pkg.module:make_config`` (:func:`config_builder`)."""
    from stardomain._util.plugins import is_import_path

    rest = name.strip()[3:]
    if is_import_path(rest):
        builder = config_builder(rest)
        defaults, types = option_types(builder)
        return ModelEntry(f"hf:{rest.strip()}", builder, 1, f"Hugging Face model from your config {rest.strip()}", defaults, types)
    key = name.strip().lower()
    if key not in HF_MODELS:
        raise StardomainError(
            f"unknown model {name!r}; Hugging Face models: {', '.join(sorted(HF_MODELS))}, "
            "or hf:pkg.module:make_config (its module passed with --plugin / plugins:)"
        )
    builder, summary = HF_MODELS[key]
    defaults, types = option_types(builder)
    return ModelEntry(key, builder, 1, summary, defaults, types, 3 if key == "hf:vit" else None)
