"""Where datasets live on disk.

One rule everywhere (CLI, experiments, tests): an explicit root wins, then the
``STARDOMAIN_DATA`` environment variable, then a per-user cache folder, so a shared
machine can point every run at one read-only copy without touching configs.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "STARDOMAIN_DATA"


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root: ``root`` > ``$STARDOMAIN_DATA`` > user cache.

    The user cache is ``$XDG_CACHE_HOME/stardomain/data`` or, when that variable is
    unset or empty, ``~/.cache/stardomain/data``. Nothing is created here: folders are
    made only when a download actually needs them.
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "stardomain" / "data"
