"""Resumable training state: the one place a trainer's per-epoch state is written, read and removed.

One model (:func:`stardomain.training.loop.train_model`), a batched group
(:func:`stardomain.training.batched.train_models_batched`) and Starlight all save the same layout, so an
interrupted run resumes to exactly the weights an uninterrupted one reaches:

- tensors ``model.<name>`` (weights and buffers), ``opt.<index>.<key>`` (the optimizer's per-parameter
  state, flattened so it lives in a safetensors file) and any ``<prefix>.<name>`` the trainer adds
  (Starlight's current permutations as ``perm.<source>.<group>``);
- metadata ``kind`` (whose state it is), ``epoch`` (epochs done), ``arch`` and whatever the trainer
  records (its history, an ``identity`` that must match on resume, the grad scaler).

Written atomically by :func:`stardomain.checkpoints.store.save`: a kill never leaves half a state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from stardomain.errors import StardomainError

MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "opt."


@dataclass
class TrainingState:
    """A trainer's state after ``epoch`` epochs, as read back by :func:`load_training_state`."""

    epoch: int
    model: dict[str, torch.Tensor]  # weights and buffers by their state-dict names
    meta: dict[str, Any]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # the trainer's own tensors, full names

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        """The extra tensors named ``prefix.<rest>``, keyed by ``<rest>``."""
        return {k[len(prefix) + 1 :]: v for k, v in self.extra.items() if k.startswith(prefix + ".")}


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as named tensors (``opt.<index>.<key>``)."""
    out: dict[str, torch.Tensor] = {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{OPTIMIZER_PREFIX}{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def restore_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor]) -> None:
    """Load the ``opt.*`` tensors of a saved state into ``opt`` (its param groups stay as they are)."""
    sd = opt.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for name, v in tensors.items():
        if name.startswith(OPTIMIZER_PREFIX):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def save_training_state(
    path: str | os.PathLike[str],
    *,
    kind: str,
    epoch: int,
    model: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    arch: Mapping[str, Any] | None = None,
    extra: Mapping[str, torch.Tensor] | None = None,
    **meta: Any,
) -> None:
    """Atomically write the state after ``epoch`` epochs (``model``: state-dict names, unprefixed)."""
    from stardomain.checkpoints import store

    for name in extra or {}:
        if name.startswith((MODEL_PREFIX, OPTIMIZER_PREFIX)):
            raise StardomainError(f"training state: extra tensor {name!r} uses a reserved prefix (model./opt.)")
    tensors = {f"{MODEL_PREFIX}{k}": v for k, v in model.items()} | optimizer_tensors(optimizer) | dict(extra or {})
    store.save(path, tensors, {"arch": dict(arch or {"name": "?"}), "epoch": int(epoch), **meta, "kind": kind})


def load_training_state(
    path: str | os.PathLike[str] | None,
    optimizer: torch.optim.Optimizer,
    kind: str | None = None,
    identity: Mapping[str, Any] | None = None,
) -> TrainingState | None:
    """The state saved at ``path`` with ``optimizer`` restored from it, or None when there is none yet.

    ``identity``, when given, must equal the one recorded: a state of another run (other seeds or
    settings) sharing the file name is refused in one line rather than continued.
    """
    from stardomain.checkpoints import store

    if path is None or not store.is_complete(path):
        return None
    tensors, meta = store.load_state(path)
    if kind is not None and meta.get("kind") not in (kind, None):
        raise StardomainError(f"{path} holds a state of kind {meta.get('kind')!r}, not {kind!r}; delete it or choose another --out folder")
    if identity is not None:
        got = dict(meta.get("identity", {}))
        if got != dict(identity):
            diff = sorted(k for k in set(got) | set(identity) if got.get(k) != identity.get(k))
            raise StardomainError(
                f"{path} holds the training state of a different run (differs in: {', '.join(diff)}); delete it or choose another --out folder"
            )
    restore_optimizer(optimizer, tensors)
    model = {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    extra = {k: v for k, v in tensors.items() if not k.startswith((MODEL_PREFIX, OPTIMIZER_PREFIX))}
    return TrainingState(epoch=int(meta["epoch"]), model=model, meta=dict(meta), extra=extra)


def remove_training_state(path: str | os.PathLike[str] | None) -> None:
    """Delete a state (both files) once what it was for is safely written."""
    from stardomain.checkpoints import store

    if path is None:
        return
    for p in (Path(path), store.metadata_path(path)):
        p.unlink(missing_ok=True)
