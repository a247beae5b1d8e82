"""Learned matching: a straight-through-estimator refinement of any alignment (Git Re-Basin's STE).

Weight and activation matching maximise a proxy (weight or activation similarity); what the
barrier measures is the loss along the path. Ainsworth et al. (2023, "straight-through
estimator") optimise the loss at the midpoint directly: keep a continuous proxy θ̃, and at
every step

1. project θ̃ to the nearest permuted B by weight matching, π = argmax ⟨θ̃, π(θB)⟩ (the
   package's own :func:`~stardomain.permute.weight_matching.weight_matching`, warm-started from
   the previous step's π, so every symmetry the spec knows comes along);
2. form π(θB) with the straight-through trick, ``θ̃ + (π(θB) − θ̃).detach()``: the forward
   uses π(θB), the gradient flows to θ̃ unchanged;
3. evaluate the cross-entropy at the midpoint ½(θA + π(θB)) on a training batch
   (``torch.func.functional_call``) and take one Adam step on θ̃.

θ̃ starts at θA (Git Re-Basin's choice, ``start="a"``) or at the starting alignment's π0(θB)
(``start="aligned"``). Every new projection is scored by its midpoint loss on fixed evaluation
samples, held out of the STE batches (a seeded slice of the train split), and the permutation
with the lowest score is returned, the starting alignment included, so a refinement never
ends above its starting midpoint loss.

BatchNorm: at the midpoint the end points' running statistics do not describe the network
(variance collapse), so, as Git Re-Basin's STE does, every BatchNorm layer runs in training
mode on the batch at hand (batch statistics), both for the STE steps and for the scores (each
evaluation batch normalised by its own statistics); everything else runs in eval mode (no
dropout). The model's own buffers are never written. The reported barrier is then measured by
:func:`stardomain.barrier.curve` with its usual BatchNorm protocol.

The budget (:class:`SteConfig`: steps, batch size, learning rate, evaluation samples) is a
setting recorded in ``MatchResult.refine``; batches and matcher seeds come from ``(seed, step)``
alone, so the same seed gives the same bytes on CPU and a run resumed from its state file
(:mod:`stardomain.training.state`, written atomically every ``save_every`` steps) ends exactly
where an uninterrupted one does.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from stardomain._util.metrics import LossAccuracy
from stardomain._util.progress import Progress, ProgressConfig
from stardomain.defaults import REFINE_BATCH_SIZE, REFINE_EVAL_SAMPLES, REFINE_LR, REFINE_STEPS
from stardomain.errors import StardomainError
from stardomain.permute.apply import apply_permutation, check_permutation
from stardomain.permute.spec import PermutationSpec, states_first
from stardomain.permute.weight_matching import MatchResult, matching_objective, weight_matching

if TYPE_CHECKING:
    from typing import TypeAlias

    from stardomain.data.protocol import AnyData

    LabelledData: TypeAlias = AnyData | tuple[Tensor, Tensor] | list[Tensor]  # a dataset, or an (x, y) pair of tensors

__all__ = ["REFINE_METHODS", "STATE_KIND", "SteConfig", "example_inputs", "refine_alignment", "ste_refine"]

REFINE_METHODS = ("none", "ste")
STATE_KIND = "ste-refine"
_STARTS = ("a", "aligned")
BN_NOTE = "train-mode BatchNorm at the midpoint (batch statistics), as in Git Re-Basin's STE"

Perm = dict[str, Tensor]


@dataclass(frozen=True)
class SteConfig:
    """The budget of one refinement (recorded in ``MatchResult.refine["config"]``).

    ``steps`` Adam steps of ``lr`` on batches of ``batch_size`` training samples; every new
    projection is scored on ``eval_samples`` held-out training samples in batches of
    ``eval_batch_size`` (also the BatchNorm batch of the scores); ``start``: θ̃ starts at θA
    ("a", Git Re-Basin) or at the starting alignment of B ("aligned"); ``max_iter``: weight-
    matching sweeps per projection; ``save_every``: steps between resume states.
    """

    steps: int = REFINE_STEPS
    batch_size: int = REFINE_BATCH_SIZE
    lr: float = REFINE_LR
    eval_samples: int = REFINE_EVAL_SAMPLES
    eval_batch_size: int = 512
    start: str = "a"
    max_iter: int = 100
    save_every: int = 10

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_samples", "eval_batch_size", "max_iter", "save_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise StardomainError(f"learned matching: {name} must be an integer >= 1 (got {value!r})")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            raise StardomainError(f"learned matching: steps must be an integer >= 0 (got {self.steps!r})")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not self.lr > 0:
            raise StardomainError(f"learned matching: lr must be a number > 0 (got {self.lr!r})")
        if self.start not in _STARTS:
            raise StardomainError(f"learned matching: start must be 'a' or 'aligned' (got {self.start!r})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lr": float(self.lr)}

    @classmethod
    def build(cls, config: "SteConfig | Mapping[str, Any] | None" = None, **overrides: Any) -> "SteConfig":
        """A config from another config, a mapping (YAML/JSON) or None, with ``overrides`` (None values ignored)."""
        base = dict(config.to_dict() if isinstance(config, SteConfig) else (config or {}))
        base.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(base) - known)
        if unknown:
            raise StardomainError(f"learned matching: unknown setting {unknown[0]!r}; settings are {', '.join(sorted(known))}")
        return cls(**base)


# --- data ----------------------------------------------------------------------------------------


class _Data:
    """Training samples of the refinement: a fixed held-out evaluation slice and seeded STE batches."""

    def __init__(self, data: LabelledData | None, config: SteConfig, seed: int, device: torch.device) -> None:
        from stardomain.data.protocol import split_size, split_tensors

        if isinstance(data, (tuple, list)):
            x, y = _pair(data)
            if len(x) != len(y):
                raise StardomainError(f"learned matching: data has {len(x)} inputs but {len(y)} labels")
            self.fetch: Callable[[Tensor], tuple[Tensor, Tensor]] = lambda idx: (x[idx.to(x.device)], y[idx.to(y.device)])
            n = len(y)
        elif data is not None:
            n = split_size(data, "train")
            self.fetch = lambda idx: split_tensors(data, "train", idx)
        else:
            raise StardomainError("learned matching needs training data: pass data= (a dataset, or an (x, y) pair of tensors)")
        if n < 2:
            raise StardomainError(f"learned matching needs at least 2 training samples (got {n})")
        self.seed, self.device, self.batch_size = int(seed), device, min(config.batch_size, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, -1)))
        n_eval = min(config.eval_samples, n)
        pool = order[n_eval:]
        self.held_out = len(pool) >= self.batch_size  # else the STE batches share the evaluation samples
        self.pool = pool if self.held_out else order
        self.batch_size = min(self.batch_size, len(self.pool))
        x_eval, y_eval = self.fetch(order[:n_eval].sort().values)
        chunks = -(-n_eval // config.eval_batch_size)  # near-equal batches: no one-sample remainder for BatchNorm
        self.eval = [(xc.to(device), yc.to(device)) for xc, yc in zip(x_eval.tensor_split(chunks), y_eval.tensor_split(chunks))]
        self.n_eval = n_eval

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """The STE batch of ``step``: a function of (seed, step) only, so a resumed run draws the same."""
        g = torch.Generator().manual_seed(_mix(self.seed, step))
        idx = self.pool[torch.randperm(len(self.pool), generator=g)[: self.batch_size]]
        x, y = self.fetch(idx)
        return x.to(self.device), y.to(self.device)


def example_inputs(data: LabelledData | None, n: int = 8) -> Tensor | None:
    """The first ``n`` training inputs of ``data`` (a dataset or an ``(x, y)`` pair), or None without data."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)):
        return _pair(data)[0][:n]
    from stardomain.data.protocol import data_example

    return data_example(data, n)


def _pair(data: tuple[Tensor, ...] | list[Tensor]) -> tuple[Tensor, Tensor]:
    """``data`` as an (x, y) pair of tensors; a tuple or list of anything else is refused in one line."""
    if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
        raise StardomainError("learned matching: data= takes a dataset or an (x, y) pair of tensors; got a tuple or list of something else")
    return data[0], data[1]


def _mix(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + (int(step) + 2) * 7919 + 31) % (2**63 - 1)


# --- the midpoint forward ------------------------------------------------------------------------


def _logits(out: Any) -> Tensor:
    """The logits of a model output: a tensor, or a Hugging Face output's ``logits``, or its first tensor."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, Tensor)]
    if not leaves:
        raise StardomainError("learned matching: the model returned no tensor; it needs a classifier returning logits")
    return leaves[0]


class _Midpoint:
    """Loss of ``model`` at ½(θA + P) with train-mode BatchNorm and everything else in eval mode."""

    def __init__(self, model: nn.Module, state_a: Mapping[str, Tensor]) -> None:
        self.model = model
        self.names = [k for k, _ in model.named_parameters()]  # tied tensors once (functional_call re-ties)
        missing = [k for k in self.names if k not in state_a]
        if missing:
            raise StardomainError(f"learned matching: state_a has no parameter {missing[0]!r}; states and model must match")
        self.bn = [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]

    def _scratch(self) -> dict[str, Tensor]:
        """Copies of the BatchNorm buffers: train mode updates them in place, the model's own stay untouched."""
        out: dict[str, Tensor] = {}
        for name, m in self.bn:
            for b, t in m.named_buffers(recurse=False):
                if t is not None:
                    out[f"{name}.{b}" if name else b] = t.detach().clone()
        return out

    def loss(self, mid: Mapping[str, Tensor], x: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        for _, bn in self.bn:
            bn.train()
        try:
            out = functional_call(self.model, {**mid, **self._scratch()}, (x,))
        finally:
            for module, flag in modes.items():
                module.training = flag
        logits = _logits(out).float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction=reduction)


# --- the refinement ------------------------------------------------------------------------------


def _fingerprint(state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor], keys: list[str], start: Perm) -> str:
    """SHA-256 of the pair and the starting permutation: a resume state of another pair is refused."""
    h = hashlib.sha256()
    for tag, state in (("a", state_a), ("b", state_b), ("p", start)):
        for k in sorted(keys if tag != "p" else state):
            t = state[k].detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{tag}:{k}:{t.dtype}:{t.numel()};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _same(p: Perm, q: Perm) -> bool:
    return p.keys() == q.keys() and all(torch.equal(p[g], q[g]) for g in p)


class _Refinement:
    """One STE run's state and its steps: the pair in the model's parameter names, the proxy θ̃ and its Adam,
    the current and best projections, and the record (losses, scores) that a resume state carries."""

    def __init__(
        self,
        state_a: Mapping[str, Tensor],
        state_b: Mapping[str, Tensor],
        *,
        spec: PermutationSpec,
        model: nn.Module,
        data: LabelledData | None,
        init: Mapping[str, Tensor] | None,
        cfg: SteConfig,
        seed: int,
        base: MatchResult | None,
    ) -> None:
        """Checks the spec against the model, finds the start (weight matching's when ``init`` is None), draws the
        data, sets θ̃ at its start and scores the starting alignment (step 0 of the record)."""
        self.spec, self.cfg, self.seed = spec, cfg, seed
        self.keys = [k for k in spec.keys() if k not in spec.buffers]
        if not self.keys:
            raise StardomainError("learned matching: the permutation spec permutes no parameters; nothing to refine")
        self.midpoint = _Midpoint(model, state_a)
        missing = [k for k in self.keys if k not in self.midpoint.names]
        if missing:
            raise StardomainError(f"learned matching: spec tensor {missing[0]!r} is not a parameter of the model")
        device = state_a[self.keys[0]].device
        self.a = {k: state_a[k].detach() for k in self.midpoint.names}
        self.b = {k: state_b[k].detach().to(device) for k in self.midpoint.names}
        if init is None:
            base = base or weight_matching(self.a, self.b, spec=spec, seed=seed, max_iter=cfg.max_iter)
            init = base.perm
        self.base = base
        self.start = {g: p.cpu() for g, p in check_permutation(spec, init).items()}
        self.data = _Data(data, cfg, seed, device)
        start_b = apply_permutation(self.b, self.start, spec=spec)
        from_b = cfg.start != "a"
        self.theta = {k: (start_b[k] if from_b else self.a[k]).clone().float().requires_grad_(True) for k in self.keys}
        self.optimizer = torch.optim.Adam(list(self.theta.values()), lr=cfg.lr)
        self.current, self.best = dict(self.start), dict(self.start)
        self.start_loss = self.score(self.start)
        self.rec: dict[str, Any] = {
            "best_loss": self.start_loss,
            "best_step": 0,
            "last_loss": self.start_loss,
            "train_losses": [],
            "scores": [[0, self.start_loss]],  # [step, midpoint loss] of every new projection (step 0: the start)
            "perm_changes": 0,
        }
        self.identity = {"config": cfg.to_dict(), "seed": int(seed), "fingerprint": _fingerprint(self.a, self.b, self.keys, self.start)}

    @torch.no_grad()
    def score(self, perm: Perm) -> float:
        """The mean midpoint loss of ``perm`` on the held-out evaluation samples (what picks the best)."""
        pb = apply_permutation(self.b, perm, spec=self.spec)
        mid = {k: (self.a[k] + pb[k]) * 0.5 for k in self.midpoint.names}
        meter = LossAccuracy()  # summed on the device, read once
        for x, y in self.data.eval:
            meter.add(self.midpoint.loss(mid, x, y, reduction="sum"), len(y))
        return meter.loss

    def resume(self, path: str | os.PathLike[str]) -> int | None:
        """Restores θ̃, Adam, the projections and the record from the state at ``path``: the step it reached, or
        None when there is none (a state of another run is refused by ``load_training_state``)."""
        from stardomain.training.state import load_training_state

        saved = load_training_state(path, self.optimizer, kind=STATE_KIND, identity=self.identity)
        if saved is None:
            return None
        with torch.no_grad():
            for k, t in self.theta.items():
                t.copy_(saved.model[k])
        self.current = {g: p.clone() for g, p in saved.prefixed("perm").items()}
        self.best = {g: p.clone() for g, p in saved.prefixed("best").items()}
        self.rec = dict(saved.meta["refine_state"])
        return saved.epoch

    def project(self, step: int) -> None:
        """Algorithm step 1: θ̃'s nearest permutation of B (warm-started); a new one is scored and kept if best."""
        proxy = {k: t.detach() for k, t in self.theta.items()}
        seed = _mix(self.seed, step)
        res = weight_matching(proxy, self.b, spec=self.spec, seed=seed, init=self.current, max_iter=self.cfg.max_iter)
        if _same(res.perm, self.current):
            return
        self.current = res.perm
        loss = self.score(self.current)
        self.rec["perm_changes"] += 1
        self.rec["last_loss"] = loss
        self.rec["scores"].append([step, loss])
        if loss < self.rec["best_loss"]:  # strictly lower: ties keep the earlier (the start first)
            self.best, self.rec["best_loss"], self.rec["best_step"] = dict(self.current), loss, step

    def ste_step(self, step: int) -> float:
        """Algorithm steps 2-3: the straight-through midpoint's loss on the step's batch, one Adam step on θ̃."""
        pb = apply_permutation(self.b, self.current, spec=self.spec)
        mid = {}
        for k in self.midpoint.names:
            p = self.theta[k] + (pb[k] - self.theta[k]).detach() if k in self.theta else pb[k]  # straight through
            mid[k] = (self.a[k] + p) * 0.5
        x, y = self.data.batch(step)
        loss = self.midpoint.loss(mid, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.rec["train_losses"].append(float(loss.detach()))
        return self.rec["train_losses"][-1]

    def result(self, t0: float, resumed_at: int | None) -> MatchResult:
        """The best permutation, its matching objective, and the record (``MatchResult.refine``) on top of ``base``'s."""
        base, rec, start_loss = self.base, self.rec, self.start_loss
        info = {
            "method": "ste",
            "config": self.cfg.to_dict(),
            "seed": int(self.seed),
            "start_method": base.method if base is not None else "given",
            "start_loss": start_loss,
            "best_loss": rec["best_loss"],
            "best_step": rec["best_step"],
            "final_loss": rec["last_loss"],
            "improved": rec["best_loss"] < start_loss,
            "perm_changes": rec["perm_changes"],
            "scores": rec["scores"],
            "train_losses": rec["train_losses"],
            "eval_samples": self.data.n_eval,
            "eval_held_out": self.data.held_out,
            "bn": BN_NOTE if self.midpoint.bn else None,
            "resumed_at": resumed_at,
        }
        objective = matching_objective(self.a, apply_permutation(self.b, self.best, spec=self.spec), spec=self.spec)
        return MatchResult(
            perm=self.best,
            objective=objective,
            sweeps=base.sweeps if base is not None else 0,
            history=list(base.history) if base is not None else [],
            converged=base.converged if base is not None else True,
            method=f"{base.method if base is not None else 'given'}+ste",
            seconds=(base.seconds if base is not None else 0.0) + time.perf_counter() - t0,
            stats={**(base.stats if base is not None else {}), "ste_start_loss": start_loss, "ste_best_loss": rec["best_loss"]},
            sweep_seconds=list(base.sweep_seconds) if base is not None else [],
            lap_solver=base.lap_solver if base is not None else "scipy",
            refine=info,
        )


@states_first("ste_refine(state_a, state_b, spec=spec, model=model, data=data, init=perm, ...)")
def ste_refine(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    spec: PermutationSpec,
    model: nn.Module,
    data: LabelledData | None,
    init: Mapping[str, Tensor] | None = None,
    config: SteConfig | Mapping[str, Any] | None = None,
    seed: int = 0,
    resume_path: str | os.PathLike[str] | None = None,
    progress: bool | ProgressConfig | None = False,
    on_step: Callable[[int], None] | None = None,
    base: MatchResult | None = None,
) -> MatchResult:
    """Refine the alignment ``init`` (a permutation of B onto A; None: weight matching's) by the STE.

    Returns a :class:`MatchResult` whose ``perm`` has the lowest midpoint loss on the held-out
    evaluation samples among the starting alignment and every projection visited (never above
    the start), ``objective`` the weight-matching objective ⟨θA, π(θB)⟩ of that permutation,
    and ``refine`` the record: settings, seed, starting/best/final midpoint losses, the step
    that found the best, and the per-step losses. ``base``: the starting alignment's result
    (its method, sweeps and history are carried over). ``resume_path``: a state file written
    every ``config.save_every`` steps and removed at the end; a state of another run (other
    pair, start, seed or settings) is refused. ``on_step(steps_done)`` runs after each step.
    """
    t0 = time.perf_counter()
    cfg = SteConfig.build(config)
    run = _Refinement(state_a, state_b, spec=spec, model=model, data=data, init=init, cfg=cfg, seed=seed, base=base)
    resumed_at = run.resume(resume_path) if resume_path is not None else None
    done = 0 if resumed_at is None else resumed_at
    meter = Progress("learned matching (STE)", cfg.steps, unit="step", progress=progress, initial=done)
    try:
        with torch.enable_grad():
            for step in range(done, cfg.steps):
                run.project(step)
                loss = run.ste_step(step)
                if resume_path is not None and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                    _save(resume_path, step + 1, run.theta, run.optimizer, run.current, run.best, run.rec, run.identity, model)
                meter.step(loss=loss, best=run.rec["best_loss"])
                if on_step is not None:
                    on_step(step + 1)
            run.project(cfg.steps)  # the projection of the last update
    finally:
        meter.close()
    if resume_path is not None:
        from stardomain.training.state import remove_training_state

        remove_training_state(resume_path)
    return run.result(t0, resumed_at)


def _save(
    path: str | os.PathLike[str],
    step: int,
    theta: Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer,
    current: Perm,
    best: Perm,
    rec: Mapping[str, Any],
    identity: Mapping[str, Any],
    model: nn.Module,
) -> None:
    from stardomain.training.state import save_training_state

    extra = {f"perm.{g}": p for g, p in current.items()} | {f"best.{g}": p for g, p in best.items()}
    save_training_state(
        path,
        kind=STATE_KIND,
        epoch=step,
        model={k: t.detach() for k, t in theta.items()},
        optimizer=optimizer,
        arch=getattr(model, "arch", None),
        extra=extra,
        identity=dict(identity),
        refine_state=dict(rec),
    )


def refine_alignment(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    base: MatchResult,
    *,
    method: str,
    spec: PermutationSpec,
    model: nn.Module | None,
    data: LabelledData | None,
    config: SteConfig | Mapping[str, Any] | None = None,
    seed: int = 0,
    resume_path: str | os.PathLike[str] | None = None,
    progress: bool | ProgressConfig | None = False,
) -> MatchResult:
    """What :func:`stardomain.permute.align` calls after its matcher: ``base`` refined by ``method``."""
    if method not in REFINE_METHODS:
        raise StardomainError(f"unknown refinement {method!r}; use one of {', '.join(REFINE_METHODS)}")
    if method == "none":
        return base
    if model is None:
        raise StardomainError("learned matching (refine='ste') needs model= (the architecture it evaluates the midpoint with)")
    return ste_refine(
        state_a,
        state_b,
        spec=spec,
        model=model,
        data=data,
        init=base.perm,
        config=config,
        seed=seed,
        resume_path=resume_path,
        progress=progress,
        base=base,
    )
