"""ImageNet-style image folders (Imagenette, a downsampled ImageNet subset, ...) read offline.

Layout (torchvision's ``ImageFolder`` convention, one folder per split)::

    root/train/<class>/**/*.{jpg,jpeg,png,bmp,webp}
    root/val/<class>/...        (or root/test/<class>/... when there is no val/)

Classes are the sorted sub-folder names of ``train/``; a held-out class folder that
``train/`` lacks is an error. Every image is decoded with Pillow, converted to RGB, its
shorter side resized to ``image_size`` (bilinear, antialiased) and centre-cropped to
``image_size x image_size``, giving ``uint8`` arrays (N, 3, S, S) like every other reader.
Files are read in sorted path order, so two loads of one folder are identical.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stardomain.data.raw import RawSplits, one_line
from stardomain.errors import StardomainError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
HELD_OUT_SPLITS = ("val", "test")  # the first that exists is the test split

_LAYOUT = "root/train/<class>/*.jpg|png and root/val/<class>/... (or root/test/<class>/...)"


def _class_dirs(split_dir: Path) -> list[Path]:
    """Sub-folders of a split, sorted by name; hidden ones (``.git``, ``.ipynb_checkpoints``) are skipped."""
    try:
        entries = list(split_dir.iterdir())
    except OSError as exc:
        raise StardomainError(f"imagefolder: cannot list {split_dir} ({one_line(exc)})") from exc
    return sorted((p for p in entries if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _image_files(class_dir: Path) -> list[Path]:
    """Image files under ``class_dir`` (sub-folders included, as torchvision does), in sorted path order."""
    return sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


def _list_split(split_dir: Path, classes: Sequence[str], is_train: bool) -> tuple[list[Path], np.ndarray]:
    index = {name: i for i, name in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    for class_dir in _class_dirs(split_dir):
        if class_dir.name not in index:
            raise StardomainError(
                f"imagefolder: class folder {class_dir} has no counterpart in {split_dir.parent / 'train'}; "
                f"held-out classes must be train classes (rename or remove it)"
            )
        found = _image_files(class_dir)
        if is_train and not found:
            raise StardomainError(
                f"imagefolder: class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
            )
        files += found
        labels += [index[class_dir.name]] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _decoder(image_module: Any, size: int) -> Any:
    """``path -> uint8 (3, size, size)``: RGB, shorter side to ``size``, centre crop."""

    def decode(path: Path) -> np.ndarray:
        try:
            with image_module.open(path) as img:
                img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size (much faster)
                img = img.convert("RGB")
                w, h = img.size
                side = min(w, h)
                left, top = (w - side) / 2, (h - side) / 2
                # resizing the centred square == resizing the shorter side to `size`, then centre-cropping
                img = img.resize((size, size), image_module.Resampling.BILINEAR, box=(left, top, left + side, top + side))
                arr = np.asarray(img, dtype=np.uint8)
        except Exception as exc:  # Pillow raises many types for damaged files
            raise StardomainError(
                f"imagefolder: cannot decode {path} ({type(exc).__name__}: {one_line(exc)}); fix or remove the file"
            ) from exc
        if arr.shape != (size, size, 3):
            raise StardomainError(f"imagefolder: {path} decoded to shape {arr.shape}, expected ({size}, {size}, 3)")
        return arr.transpose(2, 0, 1)

    return decode


def _decode_all(files: Sequence[Path], size: int, image_module: Any, what: str) -> np.ndarray:
    from stardomain._util.progress import Progress

    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    if not files:
        return out
    decode = _decoder(image_module, size)
    workers = max(1, min(8, os.cpu_count() or 1, len(files)))
    # Pillow releases the GIL while decoding and resizing; map keeps the sorted order
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(decode, files)
        # a bar on a terminal; in a log, a line every 30 s and at the end (a large folder takes minutes)
        for i, arr in enumerate(Progress(f"decoding {what}", len(files), unit="img", each_step=False).wrap(results)):
            out[i] = arr
    return out


@dataclass(frozen=True)
class FolderListing:
    """The image files of both splits of a folder, in sorted order, with their class indices."""

    classes: list[str]
    train_files: list[Path]
    train_y: np.ndarray
    test_files: list[Path]
    test_y: np.ndarray
    held_out: str  # the folder the test split came from: "val" or "test"


def pillow() -> Any:
    """Pillow's ``Image`` module, or a one-line error saying how to install it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise StardomainError("imagefolder needs Pillow to decode images: pip install pillow") from exc
    return Image


def list_image_folder(root: Path) -> FolderListing:
    """List ``root/train`` and ``root/val`` (else ``root/test``); layout problems are one-line errors."""
    root = Path(root).expanduser()
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise StardomainError(f"imagefolder: {train_dir} is not a folder; expected the layout {_LAYOUT}")
    held_dir = next((root / s for s in HELD_OUT_SPLITS if (root / s).is_dir()), None)
    if held_dir is None:
        raise StardomainError(f"imagefolder: {root} has train/ but neither val/ nor test/; expected the layout {_LAYOUT}")
    classes = [p.name for p in _class_dirs(train_dir)]
    if not classes:
        raise StardomainError(f"imagefolder: {train_dir} has no class sub-folders; expected the layout {_LAYOUT}")
    train_files, train_y = _list_split(train_dir, classes, is_train=True)
    test_files, test_y = _list_split(held_dir, classes, is_train=False)
    if not test_files:
        raise StardomainError(f"imagefolder: {held_dir} holds no images in class folders named like those of {train_dir}")
    return FolderListing(classes, train_files, train_y, test_files, test_y, held_dir.name)


def read_image_folder(root: Path, image_size: int) -> RawSplits:
    """Read ``root/train`` and ``root/val`` (else ``root/test``) as uint8 (N, 3, S, S) splits, scale 255."""
    image = pillow()
    listing = list_image_folder(root)
    train_x = _decode_all(listing.train_files, image_size, image, "train")
    test_x = _decode_all(listing.test_files, image_size, image, listing.held_out)
    return RawSplits(train_x, listing.train_y, test_x, listing.test_y, listing.classes, scale=255.0)
