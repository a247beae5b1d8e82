"""A run folder's bookkeeping: which experiment it holds (experiment.json), and the cache of finished evaluations."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

from stardomain.checkpoints import store
from stardomain.errors import StardomainError


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def unplanned(path: Path) -> StardomainError:
    return StardomainError(
        f"{path} is missing when the results are assembled: it was deleted or corrupted while the run "
        "was going; re-run the same command to recompute it (if it is still missing after that, no unit "
        "of the plan computes it: a bug in stardomain, please report it, and use --executor local)"
    )


def identity_part(config: Mapping[str, Any]) -> dict[str, Any]:
    """What must match for two configs to share a run folder: not the studies or evaluation settings,
    nor how many stars are repeated (more repeats only add stars) or how many members train per pass,
    nor (like the device) the CPU threads: finished units are kept, results.json records the run's."""
    out = {k: v for k, v in config.items() if k not in ("studies", "eval", "logging", "device", "threads")}
    if isinstance(out.get("star"), Mapping):
        out["star"] = {k: v for k, v in out["star"].items() if k != "repeats"}
    if isinstance(out.get("train"), Mapping):
        out["train"] = {k: v for k, v in out["train"].items() if k != "batch_models"}
    return out


def read_marker(marker: Path) -> Mapping[str, Any] | None:
    """The config recorded in ``experiment.json``; refused in one line when the file is not what stardomain wrote
    (it says which experiment the folder holds: guessing could mix two experiments in one folder)."""
    try:
        data = json.loads(marker.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        why = f"not valid JSON ({getattr(e, 'msg', e)})"
    else:
        if isinstance(data, dict) and isinstance(data.get("config"), (dict, type(None))):
            return data.get("config")
        why = "not an experiment record (no 'config' mapping)"
    raise StardomainError(
        f"{marker} is {why}; it records which experiment {marker.parent} holds: restore it, "
        "or delete it if that folder holds this config's run, or use another --out folder"
    )


class Cache:
    """One JSON file per finished evaluation; written atomically, so a kill never leaves half a result."""

    def __init__(self, root: Path):
        self.root = root
        self.frozen = False  # assemble mode: every value must already be on disk

    def path(self, kind: str, key: Mapping[str, Any]) -> Path:
        return self.root / kind / f"{digest(key)}.json"

    @staticmethod
    def read(path: Path) -> Any:
        """The value stored at ``path``, or None when there is none: a truncated or corrupt entry (a copy
        cut short, a bad disk) is deleted, so it is recomputed instead of failing every re-run."""
        try:
            entry = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
            entry = None
        if isinstance(entry, dict) and "value" in entry:
            return entry["value"]
        path.unlink(missing_ok=True)
        return None

    def has(self, path: Path) -> bool:
        """Whether ``path`` holds a readable entry (a corrupt one is removed and counts as missing)."""
        return self.read(path) is not None

    def get_or_compute(self, kind: str, key: Mapping[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.path(kind, key)
        value = self.read(path)
        if value is not None:
            return value
        if self.frozen:
            raise unplanned(path)
        value = compute()
        store.atomic_write_json(path, {"key": key, "value": value})
        return value
