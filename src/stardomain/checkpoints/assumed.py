"""What stardomain assumes for a checkpoint that records no provenance, worded once for folders and plain files."""

from __future__ import annotations


def assumptions(architecture: str, kind: str, vocab: int | None, builder: str | None = None) -> list[str]:
    """What stardomain assumes for a checkpoint that records no provenance (printed and recorded by every command):
    a save_pretrained folder, or a plain state dict whose model the user named (``builder``:
    :mod:`stardomain.checkpoints.plain`)."""
    out = [
        "no training data, seed or recipe recorded: the data is the one named with --dataset (and --subset), the model a source",
    ]
    if builder is not None:
        out.append(f"the model is the one --model {builder} builds for that dataset's classes and input shape")
    elif kind != "image":
        out.append(
            f"{architecture} reads token ids: integer inputs are its ids, float inputs are quantised into {vocab} ids "
            "over [-2, 2] (as hf:gpt2 does)"
        )
    return out
