"""Tiny image folders (PNG and JPEG, odd sizes) for the image-folder and CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

Image = pytest.importorskip("PIL.Image")

# written in this (unsorted) order on purpose: labels must follow the sorted names
COLOURS = {"cat": (200, 40, 40), "ant": (40, 200, 40), "bee": (40, 40, 200)}
SIZES = [(40, 30), (30, 40), (33, 47), (64, 21)]  # (width, height): odd, non-square


def write_image(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.new("RGB", size, colour).save(path, format=fmt, quality=95)


def make_folder(root: Path, n_train: int = 4, held: dict[str, int] | None = None) -> Path:
    """3 classes x n_train train images (PNG and JPEG, odd sizes); ``held`` = {split: images per class}."""
    held = {"val": 2} if held is None else held
    for name, colour in COLOURS.items():
        for i in range(n_train):
            ext = [".png", ".JPG", ".jpeg", ".PNG"][i % 4]
            write_image(root / "train" / name / f"img{i}{ext}", SIZES[i % len(SIZES)], colour)
        for split, n in held.items():
            for i in range(n):
                write_image(root / split / name / f"v{i}.png", SIZES[(i + 1) % len(SIZES)], colour)
    return root
