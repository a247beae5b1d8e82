"""Model zoos: folders of independently trained solutions (sources Z and held-out models H).

A zoo member is ``seed-<s>.safetensors`` + ``.json``. Training a zoo is idempotent: members
already complete with the same configuration are skipped, a member with a *different*
configuration is an error (never silently mixed or overwritten), and an interrupted member
resumes from its per-epoch training state (``.seed-<s>.train-state.*``, hidden from discovery).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from stardomain import store
from stardomain.errors import StardomainError
from stardomain.train import Recipe, final_metrics, train_model


def member_path(out_dir: str | Path, seed: int) -> Path:
    return Path(out_dir) / f"seed-{seed}.safetensors"


def run_config(dataset: str, model: str, options: Mapping[str, Any], recipe: Recipe, subset: int | None = None) -> dict[str, Any]:
    """What makes two training runs 'the same run' (everything but the seed)."""
    return {"dataset": dataset, "model": model, "options": dict(sorted(options.items())), "recipe": recipe.to_dict(), "subset": subset}


def _config_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    return dict(meta.get("config", {}))


def check_member(path: Path, config: Mapping[str, Any]) -> bool:
    """True when ``path`` is a complete member trained with ``config``; raises if it is a different run."""
    if not store.is_complete(path):
        return False
    meta = store.read_metadata(path)
    existing = _config_of(meta)
    if existing != dict(config):
        diff = sorted(k for k in set(existing) | set(config) if existing.get(k) != config.get(k))
        raise StardomainError(
            f"{path} already holds a different run (differs in: {', '.join(diff)}); choose another --out folder or delete it"
        )
    return True


def train_member(
    dataset: Any,
    model_name: str,
    options: Mapping[str, Any],
    recipe: Recipe,
    seed: int,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    subset: int | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Train one model (or skip it if already complete) and write its checkpoint."""
    from stardomain import models
    from stardomain.train import seed_everything

    config = run_config(dataset.name, model_name, options, recipe, subset)
    if getattr(dataset, "name", None) == "imagefolder":
        # one name, many folders: the image size and class list tell two image-folder runs apart
        config["data"] = {"image_size": int(dataset.in_shape[-1]), "classes": list(dataset.classes)}
    path = member_path(out_dir, seed)
    if check_member(path, config):
        return path
    seed_everything(seed)
    model = models.create(model_name, dataset.num_classes, tuple(dataset.in_shape), **dict(options))
    resume = Path(out_dir) / f".seed-{seed}.train-state.safetensors"
    t0 = time.perf_counter()
    history = train_model(model, dataset, recipe, seed=seed, device=device, progress=progress, resume_path=resume)
    meta = {
        "kind": "regular",
        "arch": model.arch,
        "config": config,
        "dataset": dataset.name,
        "seed": seed,
        "recipe": recipe.to_dict(),
        "metrics": final_metrics(model, dataset, device=device),
        "history": history,
        "train_seconds": round(time.perf_counter() - t0, 3),
        "torch_version": torch.__version__,
    }
    meta.update(dict(extra_meta or {}))
    return store.save(path, model, meta)


def train_zoo(
    dataset: Any,
    model_name: str,
    options: Mapping[str, Any],
    recipe: Recipe,
    seeds: Iterable[int],
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    subset: int | None = None,
    on_member: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Train every seed into ``out_dir``; complete members are skipped."""
    paths = []
    for seed in seeds:
        p = train_member(dataset, model_name, options, recipe, seed, out_dir, device=device, progress=progress, subset=subset)
        paths.append(p)
        if on_member is not None:
            on_member(p)
    return paths


def load_zoo(zoo_dir: str | Path, limit: int | None = None, kind: str | None = "regular") -> list[tuple[Path, dict[str, torch.Tensor], dict[str, Any]]]:
    """Load the (path, state, metadata) of every member under a folder, checking they share one architecture."""
    paths = store.find_checkpoints(zoo_dir)
    out = []
    for p in paths:
        state, meta = store.load_state(p)
        if kind is not None and meta.get("kind", "regular") != kind:
            continue
        out.append((p, state, meta))
    if not out:
        raise StardomainError(f"no {kind or ''} checkpoints found under {zoo_dir}; train some with `stardomain train --n N --out {zoo_dir}`")
    archs = {repr(sorted(m["arch"].items())) for _, _, m in out}
    if len(archs) > 1:
        raise StardomainError(f"{zoo_dir} mixes architectures; a zoo must hold one architecture (found {len(archs)})")
    return out[:limit] if limit is not None else out
