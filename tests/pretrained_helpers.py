"""Tiny Hugging Face models trained a few steps in plain PyTorch and saved with ``save_pretrained``: the
checkpoints a researcher already has (tests of stardomain.checkpoints.pretrained and the CLI on them)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

VOCAB = 17  # pixel tokens 0..16 (as hf:gpt2 quantises digits over [-2, 2]); id 17 pads


def digits():
    from stardomain import data

    return data.load_dataset("digits")


def token_ids(x: torch.Tensor) -> torch.Tensor:
    """Digits as 64 pixel tokens, the quantisation hf:gpt2 uses."""
    return ((x.flatten(1) + 2.0) / 4.0 * (VOCAB - 1)).round().clamp(0, VOCAB - 1).long()


def vit(seed: int):
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=10,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return tf.ViTForImageClassification(cfg)


def gpt2(seed: int):
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.GPT2Config(
        vocab_size=VOCAB + 1,
        n_positions=64,
        n_embd=16,
        n_layer=1,
        n_head=2,
        num_labels=10,
        pad_token_id=VOCAB,
        bos_token_id=None,
        eos_token_id=None,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return tf.GPT2ForSequenceClassification(cfg)


def train_and_save(kind: str, seed: int, folder: Path, steps: int = 5) -> Path:
    """A few Adam steps on digits, in plain PyTorch, then ``model.save_pretrained(folder)``."""
    ds = digits()
    model = vit(seed) if kind == "vit" else gpt2(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(ds.train_y), (64,), generator=gen)
        x, y = ds.train_x[idx], ds.train_y[idx]
        out = model(pixel_values=x) if kind == "vit" else model(input_ids=token_ids(x))
        loss = torch.nn.functional.cross_entropy(out.logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder)
    return folder
