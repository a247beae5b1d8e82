"""Starlight (Algorithm 1 of the paper): train a star model θ⋆ from a zoo of source models.

Each step samples a source θn and a point t on the segment, evaluates the loss at
(1-t)·θ + t·πn(θn) and descends in θ. The interpolation is formed functionally
(``torch.lerp`` feeding ``torch.func.functional_call``), so autograd gives exactly the
paper's update θ ← θ − λ(1−t)·∇L((1−t)θ + tθn): the factor (1−t) is the chain rule of the
interpolation, not a hand-written scale. Sources are re-aligned to θ by weight matching at the
start of every epoch (or every ``realign_every`` steps), warm-started from their previous
permutation and always applied to the *original* source weights, so permutations never drift.
The optional fusion term μ·L(θ) (Eq. 9) adds the cross-entropy of θ itself.
"""

from __future__ import annotations

import functools
import operator
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from stardomain._util.metrics import LossAccuracy
from stardomain._util.progress import Progress, ProgressConfig
from stardomain.errors import StardomainError
from stardomain.starlight.config import STATE_KIND, StarlightConfig
from stardomain.training.loop import evaluate_split, lr_at, make_loader, make_optimizer

if TYPE_CHECKING:
    from stardomain.data.protocol import Data


class TSampler:
    """Draws interpolation coefficients t in [0, 1] with a private generator."""

    def __init__(self, config: StarlightConfig, generator: torch.Generator):
        self.config = config
        self.g = generator
        self._strata: list[int] = []

    def sample(self, k: int) -> list[float]:
        c = self.config
        if c.t_sampling == "constant":
            return [c.t_constant] * k
        u = torch.rand(k, generator=self.g, dtype=torch.float64)
        if c.t_sampling == "uniform":
            return u.tolist()
        if c.t_sampling == "beta":
            a, b = c.t_beta
            # Beta via the ratio of Gammas, drawn from our own generator for reproducibility
            ga = torch._standard_gamma(torch.full((k,), a, dtype=torch.float64), generator=self.g)
            gb = torch._standard_gamma(torch.full((k,), b, dtype=torch.float64), generator=self.g)
            return (ga / (ga + gb)).tolist()
        # stratified: [0,1] in 8 (or k) equal strata, each visited once per cycle in a random order
        strata = max(8, k) if k > 1 else 8
        out = []
        for ui in u.tolist():
            if not self._strata:
                self._strata = torch.randperm(strata, generator=self.g).tolist()
            s = self._strata.pop()
            out.append((s + ui) / strata)
        return out


@dataclass
class StarlightResult:
    """What :meth:`Starlight.fit` returns; the last ``history`` record holds the star's ``star_test_acc`` (a fraction in [0, 1])."""

    history: list[dict[str, Any]]
    permutations: list[dict[str, torch.Tensor]]
    realignments: int
    seconds: float


def fused_loss(interp: torch.Tensor, own: torch.Tensor, mu: float, fusion_loss: str = "sum") -> torch.Tensor:
    """Eq. 9's objective from the interpolated loss L~ and the star's own cross-entropy L: ``sum`` = L~ + μ·L
    (stardomain's), ``paper`` = (L~ + μ·L) / (1 + μ) (the authors' code); both are L~ at μ = 0."""
    total = interp + mu * own
    return total / (1 + mu) if fusion_loss == "paper" else total


def _float_keys(model: nn.Module) -> list[str]:
    return [k for k, _ in model.named_parameters()]


class Starlight:
    """Algorithm 1. Build with the star model (θ0, trained in place) and the source state dicts.

    ``sources`` are never modified: aligned copies are made with :func:`stardomain.permute.apply_permutation`.
    They may stay on ``source_device`` (e.g. CPU) and stream to ``device`` per step when they do not fit.
    """

    def __init__(
        self,
        model: nn.Module,
        sources: Sequence[Mapping[str, torch.Tensor]],
        dataset: Data,
        config: StarlightConfig,
        seed: int = 0,
        device: str | torch.device = "cpu",
        source_device: str | torch.device | None = None,
        spec: Any = None,
        example_input: Any = None,
        allow_unpermuted: bool = False,
    ):
        from stardomain.permute import trace_spec

        if len(sources) < 1:
            raise StardomainError("starlight: needs at least one source model")
        self.model = model.to(device)
        self.device = torch.device(device)
        self.source_device = torch.device(source_device) if source_device is not None else self.device
        self.dataset = dataset
        self.config = config
        self.seed = seed
        self.param_keys = _float_keys(self.model)
        own = self.model.state_dict()
        for i, src in enumerate(sources):
            missing = [k for k in own if k not in src]
            if missing or any(tuple(src[k].shape) != tuple(own[k].shape) for k in own):
                raise StardomainError(
                    f"starlight: source {i} does not have the star model's architecture (first mismatch: {(missing or [k for k in own if tuple(src[k].shape) != tuple(own[k].shape)])[0]})"
                )
        self.sources = list(sources)
        self.example_input = example_input
        self.spec = (
            spec if spec is not None else (trace_spec(self.model, example_input=example_input) if config.matching != "none" else None)
        )
        if self.spec is not None:  # realigning under a spec that permutes nothing would do nothing, silently
            self.spec.require_coverage("star", allow_unpermuted)
        if config.symmetry != "permutation":  # a model that cannot take the maps is refused now, not after an epoch
            self._symmetry_maps(self.model.state_dict(), self.model.state_dict())
        self.perms: list[dict[str, torch.Tensor] | None] = [None] * len(sources)
        self.aligned: list[dict[str, torch.Tensor]] = [self._on_source_device(s) for s in sources]
        self.optimizer = make_optimizer(self.model.parameters(), config.recipe)
        self.realignments = 0
        self.match_objectives: list[float] = []
        self.bn_is_own = False  # whether θ⋆'s BN buffers hold its own statistics (see realign)

    def _on_source_device(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: state[k].detach().to(self.source_device) for k in self.param_keys}

    # -- the two pieces of Algorithm 1 -------------------------------------------------------
    def realign(self) -> list[float]:
        """Step 1: permute every source into the current star model's basin (warm-started).

        Activation matching uses ``data.matching_sample`` and θ⋆'s own BN statistics on it
        (its buffers as they are right after :meth:`finalize_bn`, else re-estimated on the sample).
        """
        from stardomain.permute import activation_matching, apply_permutation, weight_matching

        self.realignments += 1
        if self.config.matching == "none":
            return []
        star = {k: v.detach() for k, v in self.model.state_dict().items()}
        x = None
        if self.config.matching == "activation":
            from stardomain.data import matching_sample

            x = matching_sample(self.dataset, self.config.matching_samples).to(self.device)
            if not self.bn_is_own:
                star.update(self.own_bn_stats(x))
        objectives = []
        spec = self.spec
        assert spec is not None  # matching is not "none": __init__ traced one
        for n, src in enumerate(self.sources):
            src_dev = {k: v.to(self.device) for k, v in src.items()}
            if self.config.matching == "weight":
                res = weight_matching(star, src_dev, spec=spec, seed=self.seed + n, init=self.perms[n])
            else:
                assert x is not None
                res = activation_matching(star, src_dev, spec=spec, model=self.model, x=x)
            self.perms[n] = res.perm
            moved = apply_permutation(src_dev, res.perm, spec=spec)
            if self.config.symmetry != "permutation":
                moved = self._symmetry_maps(star, moved)
            self.aligned[n] = self._on_source_device(moved)
            objectives.append(float(res.objective))
        self.match_objectives = objectives
        return objectives

    def _symmetry_maps(self, star: Mapping[str, torch.Tensor], permuted: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The permuted source moved further towards θ⋆ by the maps of ``config.symmetry`` (orthogonal residual-stream,
        invertible per-head maps; :func:`stardomain.permute.symmetry.fit_symmetry`): the same function, in θ⋆'s norm
        gains. The maps are proved on the model by probes on the example batch; weight matching's permutation stays
        the warm start of the next re-alignment."""
        from stardomain.permute.symmetry import fit_symmetry
        from stardomain.permute.trace import example_batch

        assert self.spec is not None  # symmetry needs a matching, so __init__ traced a spec
        out, _ = fit_symmetry(
            star,
            permuted,
            symmetry=self.config.symmetry,
            model=self.model,
            spec=self.spec,
            args=example_batch(self.model, self.example_input),
        )
        return out

    def own_bn_stats(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """θ⋆'s own BatchNorm statistics on ``x``, leaving the model's buffers as they were.

        Training forwards the *interpolated* networks through the star's BatchNorm modules, so
        their running buffers describe those, not θ⋆ (1.7-1.9x off); activation matching runs
        in eval mode and would normalise θ⋆'s activations by those foreign statistics.
        """
        from stardomain.barrier.bn import bn_state, has_batchnorm, reset_bn

        if not has_batchnorm(self.model):
            return {}
        saved = bn_state(self.model)
        try:
            return reset_bn(self.model, x)
        finally:
            self.model.load_state_dict(saved, strict=False)

    def interpolated_params(self, n: int, t: float) -> dict[str, torch.Tensor]:
        """(1-t)·θ + t·πn(θn) as a differentiable function of θ (the star's parameters)."""
        src = self.aligned[n]
        params = dict(self.model.named_parameters())
        return {k: torch.lerp(params[k], src[k].to(self.device, non_blocking=True), t) for k in self.param_keys}

    def loss(self, xb: torch.Tensor, yb: torch.Tensor, pairs: Sequence[tuple[int, float]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective of one step: mean interpolated loss over ``pairs`` (+ μ·L(θ), divided by 1 + μ under
        ``fusion_loss: paper``, the authors' normalisation); returns (total, interpolated)."""
        losses = [F.cross_entropy(functional_call(self.model, self.interpolated_params(n, t), (xb,)), yb) for n, t in pairs]
        interp = functools.reduce(operator.add, losses) / len(pairs)  # summed in order, as sum() would
        if self.config.mu > 0:
            return fused_loss(interp, F.cross_entropy(self.model(xb), yb), self.config.mu, self.config.fusion_loss), interp
        return interp, interp

    def step(self, xb: torch.Tensor, yb: torch.Tensor, pairs: Sequence[tuple[int, float]], lr: float | None = None) -> float:
        """Steps 2c-2f: one optimiser update of θ on batch (xb, yb)."""
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.model.train()
        self.bn_is_own = False  # this forward writes the interpolated networks' statistics into θ⋆'s buffers
        total, interp = self.loss(xb, yb, pairs)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return float(interp.detach())

    # -- the loop ----------------------------------------------------------------------------
    def _epoch_generator(self, epoch: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1))
        return g

    def fit(
        self,
        progress: bool | ProgressConfig | None = None,
        resume_path: str | os.PathLike | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> StarlightResult:
        """Run Algorithm 1 for ``recipe.epochs`` epochs, then re-estimate BN statistics of θ⋆."""
        recipe = self.config.recipe
        loader = make_loader(self.dataset, recipe, self.seed, self.device)  # tensor or streamed data
        steps_per_epoch = len(loader)
        total_steps = recipe.epochs * steps_per_epoch
        every = self.config.realign_every or steps_per_epoch
        history: list[dict[str, Any]] = []
        start_epoch = self._resume(resume_path, history) if resume_path is not None else 0
        t0 = time.perf_counter()
        meter = Progress(f"starlight ({len(self.sources)} sources)", recipe.epochs, unit="epoch", progress=progress, initial=start_epoch)
        n_src = len(self.sources)
        for epoch in range(start_epoch, recipe.epochs):
            g = self._epoch_generator(epoch)
            sampler = TSampler(self.config, g)
            loader.epoch = epoch
            interp = LossAccuracy()  # the interpolated loss only: a Starlight step reports no logits
            for i, (xb, yb) in enumerate(loader):
                step = epoch * steps_per_epoch + i
                if step % every == 0:
                    self.realign()
                k = self.config.pairs_per_step
                ns = torch.randint(0, n_src, (k,), generator=g).tolist()
                pairs = list(zip(ns, sampler.sample(k)))
                interp.add(self.step(xb, yb, pairs, lr=lr_at(recipe, step, total_steps, steps_per_epoch)) * len(yb), len(yb))
                meter.inner(i + 1, steps_per_epoch)
            record = {
                "epoch": epoch + 1,
                "interp_train_loss": interp.loss,
                "match_objective_mean": (sum(self.match_objectives) / len(self.match_objectives)) if self.match_objectives else None,
            }
            history.append(record)
            meter.step(interp_train_loss=record["interp_train_loss"], match_objective=record["match_objective_mean"])
            if on_epoch is not None:
                on_epoch(record)
            if resume_path is not None and epoch + 1 < recipe.epochs:
                self._save_state(resume_path, epoch + 1, history)
        meter.close()
        self.finalize_bn()
        if history:
            history[-1]["star_test_loss"], history[-1]["star_test_acc"] = evaluate_split(
                self.model, self.dataset, "test", device=self.device
            )
        if resume_path is not None:
            from stardomain.training.state import remove_training_state

            remove_training_state(resume_path)
        # the star's final alignment of every source, for BMA and barrier evaluation
        self.realign()
        return StarlightResult(history, [p for p in self.perms if p is not None], self.realignments, time.perf_counter() - t0)

    def finalize_bn(self) -> None:
        """Re-estimate θ⋆'s BatchNorm statistics on training data (they saw only interpolated batches)."""
        from stardomain.barrier.bn import has_batchnorm, reset_bn

        if has_batchnorm(self.model):
            from stardomain.data.protocol import split_tensors, streams

            data = self.dataset if streams(self.dataset) else split_tensors(self.dataset, "train")[0].to(self.device)
            reset_bn(self.model, data, num_samples=self.config.bn_samples)
        self.bn_is_own = True
        self.model.eval()

    def aligned_sources(self) -> list[dict[str, torch.Tensor]]:
        """Full state dicts of the sources permuted into θ⋆'s basin (buffers included)."""
        from stardomain.permute import apply_permutation

        if self.config.matching == "none" or self.spec is None:
            return [dict(s) for s in self.sources]
        return [apply_permutation(s, p or {}, spec=self.spec) for p, s in zip(self.perms, self.sources)]

    # -- resumable training state --------------------------------------------------------------
    def _save_state(self, path: str | os.PathLike, epoch: int, history: list[dict[str, Any]]) -> None:
        from stardomain.training.state import save_training_state

        extra = {f"perm.{n}.{group}": p for n, perm in enumerate(self.perms) for group, p in (perm or {}).items()}
        save_training_state(
            path,
            kind=STATE_KIND,
            epoch=epoch,
            model=self.model.state_dict(),
            optimizer=self.optimizer,
            arch=getattr(self.model, "arch", None),
            extra=extra,
            history=history,
            realignments=self.realignments,
        )

    def _resume(self, path: str | os.PathLike, history: list[dict[str, Any]]) -> int:
        from stardomain.permute import apply_permutation
        from stardomain.training.state import load_training_state

        saved = load_training_state(path, self.optimizer, kind=STATE_KIND)
        if saved is None:
            return 0
        self.model.load_state_dict(saved.model)
        perms: dict[int, dict[str, torch.Tensor]] = {}
        for name, v in saved.prefixed("perm").items():
            index, group = name.split(".", 1)
            perms.setdefault(int(index), {})[group] = v.to(self.device)
        for n, perm in perms.items():
            self.perms[n] = perm
            src = {k: v.to(self.device) for k, v in self.sources[n].items()}
            if self.spec is not None:
                self.aligned[n] = self._on_source_device(apply_permutation(src, perm, spec=self.spec))
        self.realignments = int(saved.meta.get("realignments", 0))
        history.extend(saved.meta["history"])
        return saved.epoch
