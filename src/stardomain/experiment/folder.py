"""A run folder's bookkeeping: which experiment it holds (experiment.json), and the cache of finished evaluations."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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


@dataclass(frozen=True)
class KeyedCall:
    """One cached evaluation, described by the call that computes it: the checkpoints it reads and every
    keyword setting it is called with. Its cache key is derived from this description and the computation
    receives the very same ``settings`` (:meth:`Cache.run`), so a setting cannot reach a result without
    reaching its key (a hand-written key once left out ``eval_test_samples`` and reused old curves).

    ``version`` is bumped when the computation itself changes; ``data`` is the record of the data it reads.
    """

    kind: str  # the cache folder: pairs, bma, fusion, ...
    version: int
    inputs: Mapping[str, Path | Sequence[Path]]  # checkpoints, keyed by their content hashes
    settings: Mapping[str, Any]  # every keyword the computation is called with
    data: Mapping[str, Any]

    def key(self) -> dict[str, Any]:
        def hashed(p: Path | Sequence[Path]) -> str | list[str]:
            return store.content_hash(p) if isinstance(p, Path) else [store.content_hash(q) for q in p]

        return {
            "kind": self.kind,
            "version": self.version,
            "inputs": {name: hashed(p) for name, p in self.inputs.items()},
            "settings": plain(self.settings),
            "data": plain(self.data),
        }


def plain(obj: Any) -> Any:
    """``obj`` as JSON-able data for a key: dataclasses as dicts, paths as strings, mappings sorted."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# config fields that reach no unit: they choose which sections results.json shows, or the thresholds its verdicts
# read at assembly (recomputed on every run), or where metrics are logged; every other field is part of the folder's
# identity or of the keys of the units it reaches (tests/experiment/test_cache_keys.py flips each one to hold this)
PRESENTATION_ONLY = (
    "logging",
    "studies.barriers",
    "studies.distances",
    "eval.star_acc_margin",
    "eval.near_zero_tolerance",
    "eval.metric",
    "eval.converged_train_acc",
    "eval.converged_train_loss",
)
EXECUTION_KEYS = ("threads", "device")  # how units compute: results depend on them, yet they are no part of the folder's identity


def execution_record(threads: int, device: str) -> dict[str, Any]:
    return {"threads": int(threads), "device": str(device)}


def check_same_execution(marker: Mapping[str, Any], mine: Mapping[str, Any], out: Path) -> None:
    """Refuse to add to a folder whose results were computed with other threads or on another device: CPU
    reductions split over other threads add in another order (other weights, other digits), so keeping its
    finished units under this run's label would record a setting that did not produce the numbers."""
    if not has_results(out):
        return
    theirs = dict(marker.get("execution") or {})
    if "threads" not in theirs and isinstance(marker.get("config"), Mapping) and "threads" in marker["config"]:
        theirs["threads"] = marker["config"]["threads"]  # folders from before the execution record
    for key in EXECUTION_KEYS:
        if key in theirs and theirs[key] != mine[key]:
            flag = f"--{key} {theirs[key]}" if key == "threads" else f"--device {theirs[key]}"
            raise StardomainError(
                f"{out} was computed with {key} {theirs[key]} and this run asks for {mine[key]} (results depend on it): "
                f"re-run with {flag} ({key}: {theirs[key]} in the YAML) to finish it, or use another --out folder"
            )


def has_results(out: Path) -> bool:
    """Whether a run folder holds anything a unit computed (a model, a star, a training state or a cached evaluation)."""
    return any(p.is_file() for sub in ("zoo", "stars", "cache") for p in (out / sub).rglob("*") if not p.is_symlink())


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

    def run(self, call: KeyedCall, compute: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        """``compute(**call.settings)``, or its stored value: the key and the call see the same settings."""
        return self.get_or_compute(call.kind, call.key(), lambda: compute(**call.settings))

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
