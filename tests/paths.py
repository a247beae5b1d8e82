"""Where things are, for every test module (shared constants: test modules never import each other or conftest)."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED_DATA = REPO.parent / "shared" / "data"
CONFIGS = REPO / "configs"


def _fashion_dir() -> Path | None:
    """Fashion-MNIST's system copy where the package looks (Debian's dataset-fashion-mnist), None when absent; an
    empty STARDOMAIN_FASHION_MNIST_DIR hides it from both, as on a fresh machine (.ci/run's second pass)."""
    from stardomain.data.sources import system_dirs

    return next((d for d in system_dirs("fashion_mnist") if d.is_dir()), None)


FASHION_DIR = _fashion_dir()
FASHION_SKIP = (
    "Fashion-MNIST is hidden by an empty STARDOMAIN_FASHION_MNIST_DIR"
    if os.environ.get("STARDOMAIN_FASHION_MNIST_DIR") == ""
    else "Fashion-MNIST is not on this machine (apt-get install dataset-fashion-mnist)"
)
