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
from typing import Any, Callable, Mapping

from torch import Tensor, nn

from stardomain.errors import StardomainError
from stardomain.models.entry import ModelEntry, check, option_types

__all__ = [
    "HF_MODELS",
    "PRETRAINED_CLASSES",
    "HFClassifier",
    "build_bert",
    "build_gpt2",
    "build_pretrained",
    "build_vit",
    "model_entry",
]


def import_transformers() -> Any:
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
    tf = import_transformers()
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
    tf = import_transformers()
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
    tf = import_transformers()
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
        tf = import_transformers()
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
    if key == "hf:pretrained":  # a save_pretrained folder's architecture (stardomain.checkpoints.pretrained)
        defaults, types = option_types(build_pretrained)
        return ModelEntry(key, build_pretrained, 1, "a save_pretrained folder's transformers model", defaults, types)
    if key not in HF_MODELS:
        raise StardomainError(
            f"unknown model {name!r}; Hugging Face models: {', '.join(sorted(HF_MODELS))}, "
            "or hf:pkg.module:make_config (its module passed with --plugin / plugins:)"
        )
    builder, summary = HF_MODELS[key]
    defaults, types = option_types(builder)
    return ModelEntry(key, builder, 1, summary, defaults, types, 3 if key == "hf:vit" else None)


# --- save_pretrained folders: the closed list of transformers classes a config.json may name -----------------------

# architecture (config.json's "architectures") -> (the config's model_type, what the model reads: "image" pixels,
# "tokens" ids classified, "lm" ids with per-token logits). A name outside this list is refused in one line: it is
# never imported nor called, whatever a file says; nothing else in config.json is executed (auto_map is refused).
PRETRAINED_CLASSES: dict[str, tuple[str, str]] = {
    "ViTForImageClassification": ("vit", "image"),
    "GPT2ForSequenceClassification": ("gpt2", "tokens"),
    "GPT2LMHeadModel": ("gpt2", "lm"),
    "BertForSequenceClassification": ("bert", "tokens"),
    "DistilBertForSequenceClassification": ("distilbert", "tokens"),
    "LlamaForSequenceClassification": ("llama", "tokens"),
    "LlamaForCausalLM": ("llama", "lm"),
}

# config.json keys that say how a file was written, not what the network is (left out of the recorded config)
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype")


def pretrained_class(architecture: str) -> tuple[str, str]:
    """``(model_type, kind)`` of an architecture in :data:`PRETRAINED_CLASSES`, or one line naming the list."""
    if architecture not in PRETRAINED_CLASSES:
        raise StardomainError(
            f"architecture {architecture!r} is not one stardomain builds from a config.json; supported: "
            f"{', '.join(sorted(PRETRAINED_CLASSES))} (save your model as one of them, or name a builder with --model pkg.module:build)"
        )
    return PRETRAINED_CLASSES[architecture]


def refuse_remote_code(cfg: Mapping[str, Any], where: str) -> None:
    """A config naming remote code (``auto_map``) is refused: stardomain never runs code from a model folder."""
    if "auto_map" in cfg:
        raise StardomainError(
            f"{where} names remote code (auto_map: {sorted(cfg['auto_map'])}): stardomain never runs code from a model "
            "folder (trust_remote_code stays off); save the model as one of the transformers classes it supports"
        )


def pretrained_config(architecture: str, config: Any) -> Any:
    """The ``transformers`` config object of ``config`` (a config.json mapping or its JSON text) for ``architecture``:
    its class is the one of the architecture's own model_type (``CONFIG_MAPPING``), filled with ``from_dict``
    (no code runs); remote code (``auto_map``) and another model_type are refused."""
    import json

    model_type, _ = pretrained_class(architecture)
    cfg = json.loads(config) if isinstance(config, str) else dict(config)
    if not isinstance(cfg, dict):
        raise StardomainError(f"the config of {architecture} is a JSON {type(cfg).__name__}, not an object")
    refuse_remote_code(cfg, "config.json")
    if cfg.get("model_type") != model_type:
        raise StardomainError(
            f"config.json has model_type {cfg.get('model_type')!r} but architecture {architecture} needs {model_type!r}; "
            "the folder's config and architecture do not belong together"
        )
    tf = import_transformers()
    config_class = tf.CONFIG_MAPPING[model_type]
    values = {k: v for k, v in cfg.items() if k not in _VOLATILE_CONFIG_KEYS}
    try:
        return config_class.from_dict(values)
    except Exception as e:  # noqa: BLE001 - a config transformers refuses: say which, in one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StardomainError(f"config.json cannot be read as a {config_class.__name__} ({type(e).__name__}: {first})") from None


def canonical_config(config: Mapping[str, Any]) -> str:
    """The JSON text stardomain records for a config.json (sorted keys, without how the file was written)."""
    import json

    return json.dumps({k: v for k, v in dict(config).items() if k not in _VOLATILE_CONFIG_KEYS}, sort_keys=True)


def pretrained_shape(architecture: str, config: Any) -> tuple[int, tuple[int, ...]]:
    """``(num_classes, in_shape)`` a config implies: labels (a classifier) or the vocabulary (a causal LM), and
    ``(C, H, W)`` images or ``(positions,)`` tokens (token models read any input of at most that many values)."""
    _, kind = pretrained_class(architecture)
    if kind == "image":
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        return int(config.num_labels), (int(config.num_channels), int(size), int(size))
    positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions < 1:
        raise StardomainError(f"the config of {architecture} has no number of positions (n_positions / max_position_embeddings)")
    classes = int(config.vocab_size) if kind == "lm" else int(config.num_labels)
    return classes, (positions,)


def wrap_pretrained(model: nn.Module, architecture: str, *, x_min: float = -2.0, x_max: float = 2.0) -> HFClassifier:
    """A ``transformers`` model of the closed list as ``x -> logits`` (:class:`HFClassifier`): images as pixel values,
    token models on ids (floats quantised into the vocabulary over ``[x_min, x_max]``, as ``hf:gpt2``; a padding id
    at the end of the vocabulary is never emitted). No key/value cache is built."""
    _, kind = pretrained_class(architecture)
    config: Any = model.config
    if hasattr(config, "use_cache"):
        config.use_cache = False
    if kind == "image":
        return HFClassifier(model)
    vocab = int(config.vocab_size) - (1 if getattr(config, "pad_token_id", None) == config.vocab_size - 1 else 0)
    return HFClassifier(model, tokens=True, vocab=vocab, x_min=x_min, x_max=x_max)


def build_pretrained(
    num_classes: int, in_shape: tuple[int, ...], *, architecture: str = "", config: str = "{}", x_min: float = -2.0, x_max: float = 2.0
) -> nn.Module:
    """``hf:pretrained``: the architecture of a ``save_pretrained`` folder (``architecture`` from the closed list
    :data:`PRETRAINED_CLASSES`, ``config`` its config.json as JSON text), freshly initialised and wrapped as
    ``x -> logits``; :mod:`stardomain.checkpoints.pretrained` loads the folder's weights into it."""
    cfg = pretrained_config(architecture, config)
    classes, shape = pretrained_shape(architecture, cfg)
    check(num_classes == classes, f"hf:pretrained {architecture}: the config has {classes} outputs, not num_classes={num_classes}")
    _, kind = pretrained_class(architecture)
    if kind == "image":
        check(tuple(in_shape) == shape, f"hf:pretrained {architecture} reads images {shape}, not {tuple(in_shape)}")
    else:
        check(math.prod(in_shape) <= shape[0], f"hf:pretrained {architecture} reads at most {shape[0]} tokens, not {math.prod(in_shape)}")
    tf = import_transformers()
    model = getattr(tf, architecture)(cfg)  # a class of the closed list: never a name from a file outside it
    return wrap_pretrained(model, architecture, x_min=x_min, x_max=x_max)
