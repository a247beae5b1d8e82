"""Loss/accuracy along the linear path between two solutions, and its barriers (Eq. 1-2).

Conventions used everywhere in outputs: losses are mean cross-entropy in nats; accuracies
are fractions in [0, 1] (reports multiply by 100 for percent / percentage points).

At every t the interpolated state is loaded into one working copy of the model, its
BatchNorm statistics are re-estimated once on (un-augmented) training data, and then every
split is evaluated in one pass — so the BN reset is never repeated per split.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stardomain._util.logits import logits_of
from stardomain._util.metrics import LossAccuracy
from stardomain._util.progress import Progress, ProgressConfig
from stardomain.barrier.batched import batchable, evaluate_states
from stardomain.barrier.bn import sample_order
from stardomain.barrier.interpolate import EvalEngine, check_compatible, interpolation_points, lerp_state
from stardomain.data.protocol import split_size, split_tensors, streams
from stardomain.defaults import DEFAULT_POINTS
from stardomain.errors import StardomainError
from stardomain.permute import l2_distance
from stardomain.permute.spec import states_first

if TYPE_CHECKING:
    from stardomain.data.protocol import AnyData

__all__ = ["METRICS", "Curve", "barrier_profile", "barriers", "curve", "evaluate_splits", "l2_distance"]

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
BN_PROTOCOLS = ("reset", "interpolate")  # per-t re-estimation (the paper's) | lerp of the running statistics


@dataclass
class Curve:
    """Metrics at each t of (1 - t)·A + t·B (accuracies as fractions in [0, 1]); a split that was not evaluated has empty lists."""

    t: list[float]
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # how it was computed (bn samples, ...)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (plain floats and lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Curve":
        """Inverse of :meth:`to_dict`; unknown keys are ignored so old files keep loading."""
        if "t" not in d:
            raise StardomainError("curve dict has no 't' entry; pass the output of Curve.to_dict()")
        return cls(t=[float(v) for v in d["t"]], **{m: [float(v) for v in d.get(m, [])] for m in METRICS}, info=dict(d.get("info", {})))

    def metric(self, name: str) -> list[float]:
        """Values of ``name`` (one of train_loss, train_acc, test_loss, test_acc) along t."""
        if name not in METRICS:
            raise StardomainError(f"unknown curve metric {name!r}; use one of {', '.join(METRICS)}")
        return getattr(self, name)


def _fixed_subset(n: int, k: int | None, seed: int, what: str = "eval_train_samples") -> Tensor | None:
    """Seeded subset indices (sorted, so slices stay contiguous in memory), or None for all."""
    if k is None or k >= n:
        return None
    if k < 1:
        raise StardomainError(f"{what} must be >= 1 (got {k}); use None for the whole split")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


@torch.inference_mode()
def evaluate_splits(forward: Any, splits: Mapping[str, tuple[Tensor, Tensor]], batch_size: int) -> dict[str, tuple[float, float]]:
    """(mean cross-entropy, accuracy) of ``forward`` on each split, summed in float64."""
    out: dict[str, tuple[float, float]] = {}
    for name, (x, y) in splits.items():
        if len(x) == 0:  # a mean over nothing would read as a perfect 0 loss
            raise StardomainError(f"the {name} split is empty; evaluate a split with at least one sample")
        meter = LossAccuracy()  # sums stay device tensors: no sync per batch
        for i in range(0, len(x), batch_size):
            logits = logits_of(forward(x[i : i + batch_size]))  # a Hugging Face model's ModelOutput too
            yb = y[i : i + batch_size].to(logits.device, non_blocking=True)
            meter.update(logits, yb, F.cross_entropy(logits.float(), yb, reduction="sum"))
        out[name] = meter.compute()
    return out


def _check_curve_options(splits: Sequence[str], bn_estimator: str, bn: str) -> None:
    for s in splits:
        if s not in ("train", "test"):
            raise StardomainError(f"unknown split {s!r}; splits are 'train' and 'test'")
    if bn_estimator not in ("pooled", "cumulative"):
        raise StardomainError(f"unknown bn_estimator {bn_estimator!r}; use 'pooled' or 'cumulative'")
    if bn not in BN_PROTOCOLS:
        raise StardomainError(f"unknown bn protocol {bn!r}; use 'reset' (re-estimate at every t) or 'interpolate'")


def _curve_splits(
    dataset: AnyData, splits: Sequence[str], dev: torch.device, caps: Mapping[str, tuple[int | None, int]]
) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor | None]:
    """The evaluated splits on ``dev`` (``caps``: split -> (subset size, its seed)), and the whole
    train_x on ``dev`` when the train split already holds it (else None)."""
    eval_splits: dict[str, tuple[Tensor, Tensor]] = {}
    full_train: Tensor | None = None
    for s in splits:
        idx = _fixed_subset(split_size(dataset, s), caps[s][0], caps[s][1], f"eval_{s}_samples")
        x, y = split_tensors(dataset, s, idx)
        eval_splits[s] = (x.to(dev), y.to(dev))
        if s == "train" and idx is None:
            full_train = eval_splits[s][0]
    return eval_splits, full_train


def _bn_samples(dataset: AnyData, dev: torch.device, bn_samples: int | None, seed: int, full_train: Tensor | None) -> tuple[Tensor, Tensor]:
    """The BN pass's inputs on ``dev`` and their pass order: always from the whole training split (or
    ``bn_samples`` of it); a streamed dataset's subset is decoded once, in its pass order, rather than at every t."""
    order = sample_order(split_size(dataset, "train"), bn_samples, seed=seed)
    if streams(dataset):
        return split_tensors(dataset, "train", order)[0].to(dev), torch.arange(len(order), device=dev)
    x_bn = full_train if full_train is not None else split_tensors(dataset, "train")[0].to(dev)
    return x_bn, order.to(dev)


def _append(out: Curve, metrics: Mapping[str, tuple[float, float]]) -> None:
    for s, (loss, acc) in metrics.items():
        getattr(out, f"{s}_loss").append(loss)
        getattr(out, f"{s}_acc").append(acc)


def _batched_curve(
    out: Curve,
    model: nn.Module,
    states: tuple[Mapping[str, Tensor], Mapping[str, Tensor]],
    eval_splits: Mapping[str, tuple[Tensor, Tensor]],
    batch_size: int,
    dev: torch.device,
    meter: Progress,
) -> bool:
    """The whole t-grid in vmapped chunks (:mod:`stardomain.barrier.batched`); False, having done nothing, when the model does not allow it."""
    if not eval_splits or not batchable(model, next(iter(eval_splits.values()))[0][:2], frozen_batchnorm=True):
        return False
    t_values = out.t
    results = evaluate_states(
        model, lambda i: lerp_state(states[0], states[1], t_values[i]), len(t_values), eval_splits, batch_size, dev, on_done=meter.step
    )
    meter.close()
    for metrics in results:
        _append(out, metrics)
    return True


def _walk(
    out: Curve,
    engine: EvalEngine,
    states: tuple[Mapping[str, Tensor], Mapping[str, Tensor]],
    eval_splits: Mapping[str, tuple[Tensor, Tensor]],
    batch_size: int,
    meter: Progress,
    bn_pass: tuple[Tensor, Tensor] | None,
    bn_batch_size: int,
    bn_estimator: str,
) -> None:
    """One t at a time: load the interpolated state, re-estimate BN from ``bn_pass`` (inputs, order) if given, evaluate."""
    for t in meter.wrap(out.t):
        engine.load(lerp_state(states[0], states[1], t))
        if bn_pass is not None:
            engine.reset_bn(bn_pass[0], bn_pass[1], batch_size=bn_batch_size, estimator=bn_estimator)
        _append(out, evaluate_splits(engine.forward, eval_splits, batch_size))


@states_first("curve(state_a, state_b, model=model, dataset=dataset, ...)")
def curve(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    model: nn.Module,
    dataset: AnyData,
    num_points: int = DEFAULT_POINTS,
    bn_samples: int | None = None,
    splits: Sequence[str] = ("train", "test"),
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    progress: bool | ProgressConfig | None = False,  # None: a bar on a terminal, lines in a log
    eval_train_samples: int | None = None,
    eval_test_samples: int | None = None,
    bn_batch_size: int = 512,
    bn_estimator: str = "pooled",
    ts: Sequence[float] | None = None,
    seed: int = 0,
    fold_bn: bool = True,
    batched: bool | None = None,
    bn: str = "reset",
) -> Curve:
    """Evaluate (1 - t)·A + t·B at ``num_points`` values of t (or at ``ts``).

    ``model`` only supplies the architecture: a private working copy is made once and the
    caller's model is left untouched. ``dataset`` is a :class:`stardomain.data.Dataset`, any
    object with train_x/train_y/test_x/test_y, or a streamed folder (whose seeded subsets are
    decoded into memory once, before the first t). When the model has BatchNorm, its statistics are
    re-estimated at every t from ``bn_samples`` training samples (default: all) taken in one
    fixed seeded order, without augmentation. ``eval_train_samples`` evaluates the train
    split on a fixed seeded subset for speed, ``eval_test_samples`` the test split. ``batch_size`` None picks 64 on CPU (cache
    friendly) and 1024 elsewhere; it does not change the results beyond float rounding.
    ``batched`` (default: whenever possible) evaluates the t-grid of a model without
    BatchNorm (or with ``bn="interpolate"``) in vmapped chunks (:mod:`stardomain.barrier.batched`): the same numbers to float
    rounding, several times faster for small models; False forces one t at a time.
    ``bn`` is the BatchNorm protocol: "reset" (the paper's, App. A) re-estimates the statistics
    at every t; "interpolate" keeps the lerp of the end points' running statistics (no reset),
    the ablation that shows how much of a barrier the stale statistics make. Without
    BatchNorm both give the same curve. The protocol is recorded as ``info["bn"]``.
    """
    _check_curve_options(splits, bn_estimator, bn)
    check_compatible(state_a, state_b)
    dev = torch.device(device)
    bs = batch_size or (64 if dev.type == "cpu" else 1024)
    t_values = [float(t) for t in ts] if ts is not None else interpolation_points(num_points)
    if not t_values:
        raise StardomainError("curve needs at least one value of t")

    engine = EvalEngine(model, dev, fold_bn=fold_bn)
    caps = {"train": (eval_train_samples, seed + 1), "test": (eval_test_samples, seed + 2)}
    eval_splits, full_train = _curve_splits(dataset, splits, dev, caps)
    reset = engine.has_bn and bn == "reset"
    bn_pass = _bn_samples(dataset, dev, bn_samples, seed, full_train) if reset else None
    out = Curve(
        t=t_values,
        info={
            "num_points": len(t_values),
            "bn_reset": reset,
            "bn": bn if engine.has_bn else None,
            "bn_samples": len(bn_pass[1]) if bn_pass is not None else 0,
            "bn_estimator": bn_estimator if reset else None,
            "bn_batch_size": bn_batch_size if reset else None,
            "eval_train_samples": len(eval_splits["train"][0]) if "train" in eval_splits else 0,
            "eval_test_samples": len(eval_splits["test"][0]) if "test" in eval_splits else 0,
        },
    )
    meter = Progress("interpolation", len(t_values), unit="t", progress=progress, each_step=False)
    if not reset and batched is not False and _batched_curve(out, model, (state_a, state_b), eval_splits, bs, dev, meter):
        return out
    _walk(out, engine, (state_a, state_b), eval_splits, bs, meter, bn_pass, bn_batch_size, bn_estimator)
    return out


def barrier_profile(t: Sequence[float], values: Sequence[float], kind: str = "loss") -> list[float]:
    """Eq. 2 at every t: loss minus its linear interpolation (for accuracy: the drop below it).

    Written as v(0) + t·(v(1) - v(0)) so a flat curve gives exactly 0 at every t.
    """
    if len(t) != len(values) or len(t) < 2:
        raise StardomainError(f"need matching t and values with at least 2 points (got {len(t)} and {len(values)})")
    if t[0] != 0.0 or t[-1] != 1.0:
        raise StardomainError(f"barriers need a curve from t=0 to t=1 (got t from {t[0]} to {t[-1]})")
    v0, v1 = float(values[0]), float(values[-1])
    line = [v0 + float(ti) * (v1 - v0) for ti in t]
    if kind == "loss":
        return [float(v) - li for v, li in zip(values, line)]
    if kind == "acc":
        return [li - float(v) for v, li in zip(values, line)]
    raise StardomainError(f"unknown barrier kind {kind!r}; use 'loss' or 'acc'")


def barriers(c: Curve) -> dict[str, float]:
    """Eq. 1 for each evaluated metric: max over t of the excess loss / accuracy drop.

    Keys: train_loss, train_acc, test_loss, test_acc (only the splits the curve has).
    Accuracy barriers are fractions (0.05 = 5 percentage points; the CLI prints "5.00 pp"). Never negative, since the
    end points (excess 0) are part of the maximum; NaN when a value along the curve is NaN
    (a diverged interpolation), inf when the loss is.
    """
    out: dict[str, float] = {}
    for m in METRICS:
        values = c.metric(m)
        if values:
            profile = barrier_profile(c.t, values, "acc" if m.endswith("acc") else "loss")
            out[m] = math.nan if any(math.isnan(v) for v in profile) else max(profile)
    return out
