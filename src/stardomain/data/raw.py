"""What every dataset reader returns (:class:`RawSplits`), and how readers word a bad file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stardomain.errors import StardomainError

__all__ = ["RawSplits"]


@dataclass
class RawSplits:
    """A dataset as stored on disk: ``uint8`` images (N, C, H, W) in ``[0, scale]``."""

    train_x: np.ndarray
    train_y: np.ndarray  # int64
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    scale: float = 255.0  # largest pixel value; images are divided by it


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def corrupt(path: Path, detail: str) -> StardomainError:
    return StardomainError(f"{path} is corrupt or truncated ({one_line(detail)}); delete it so it is downloaded again")
