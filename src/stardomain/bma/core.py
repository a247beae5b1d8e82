"""Star-domain Bayesian model averaging and the model-fusion table (paper Section 4).

Section 4.1 uses the star domain as a posterior: the union of line segments between the star
model θ⋆ and the (already aligned) sources πn(θn). A posterior sample is drawn exactly as in
Starlight's Monte-Carlo step -- a source index n uniformly, then t ~ U[0, 1] -- and gives the
model (1-t)·θ⋆ + t·πn(θn). BMA is the post-softmax average over K such samples; the baseline
is a deep ensemble (the post-softmax average of the first K sources). Both are scored with
:func:`stardomain.bma.metrics.summary` at every K = 1..max so the curves of Figure 5 come from a
single pass.

Memory stays at one model: every sample is loaded into the *same* ``nn.Module`` and only a
running sum of probabilities is kept, never K models or K probability tensors.

Section 4.2 (Table 2), the fused star against its sources, is :mod:`.fusion`; Figure 5 is drawn by
:func:`stardomain.report.bma_plot.plot_bma`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from stardomain._util.logits import logits_of
from stardomain._util.progress import Progress, ProgressConfig
from stardomain.barrier.bn import model_device
from stardomain.bma import bootstrap, metrics
from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.data.protocol import Splits

__all__ = [
    "bma_study",
    "ensemble_bma",
    "predict_probs",
    "sample_star_domain",
    "single_model",
    "star_domain_bma",
]

State = Mapping[str, Tensor]

# metric name -> panel title, in the order of the Figure-5 panels


def check_state(model: nn.Module, state: State, what: str = "state") -> None:
    """A state must fill the model exactly; a mismatch means the wrong architecture or checkpoint."""
    if not isinstance(state, Mapping):
        raise StardomainError(f"bma: {what} must be a state dict (name -> tensor); got {type(state).__name__}")
    expected = set(model.state_dict().keys())
    got = set(state.keys())
    if got != expected:
        missing = sorted(expected - got)[:3]
        extra = sorted(got - expected)[:3]
        raise StardomainError(
            f"bma: {what} does not match the model (missing {missing}, unexpected {extra}); "
            "build the model with the checkpoint's architecture (metadata['arch'])"
        )


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StardomainError(f"bma: {name} must be an integer >= 1; got {value!r}")
    return value


def _bar(iterable: Sequence[Any], desc: str, progress: bool | ProgressConfig | None) -> Iterator[Any]:
    return Progress(desc, len(iterable), unit="model", progress=progress, each_step=False).wrap(iterable)


@contextlib.contextmanager
def _borrowed(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Use ``model`` as a scratch container on ``device``; give it back as it was.

    Costs one copy of the weights, so callers' models are not silently overwritten by the last
    posterior sample.
    """
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    original_device = model_device(model)
    was_training = model.training
    model.to(device)
    try:
        yield model
    finally:
        model.load_state_dict(original)
        model.to(original_device)
        model.train(was_training)


@torch.no_grad()
def _predict_loaded(model: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Softmax of the model's *current* weights, eval mode, in batches."""
    model.eval()
    out = [torch.softmax(logits_of(model(x[i : i + batch_size].to(device))).float(), dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(out)


class RunningMean:
    """Running sum of probability tensors, in float64 where the device has it so summing K terms loses nothing."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def add(self, probs: Tensor) -> None:
        if self.total is None:
            dtype = torch.float32 if probs.device.type == "mps" else torch.float64
            self.total = torch.zeros(probs.shape, dtype=dtype, device=probs.device)
        self.total += probs
        self.count += 1

    def mean(self) -> Tensor:
        assert self.total is not None
        return self.total / self.count


def _check_resamples(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StardomainError(f"bma: n_boot (bootstrap resamples) must be an integer >= 0 (0: no intervals); got {value!r}")
    return value


class _Curves:
    """The metrics of the running average at every K, each with its bootstrap interval over test samples.

    The resamples are drawn once (from ``seed``) and reused at every K, so the interval of each point
    costs one weighted pass over probabilities that are in memory anyway; ``n_boot=0`` skips them.
    """

    def __init__(self, n_test: int, n_boot: int, seed: int) -> None:
        self.metrics: dict[str, list[float]] = {}
        self.ci: dict[str, list[list[float]]] = {}
        self.counts = bootstrap.resample_counts(n_test, n_boot, seed) if n_boot else None
        self.about = bootstrap.describe(n_test, n_boot, seed)

    def record(self, probs: Tensor, targets: Tensor) -> None:
        for name, value in metrics.summary(probs, targets).items():
            self.metrics.setdefault(name, []).append(value)
        if self.counts is not None:
            for name, pair in bootstrap.intervals(probs, targets, self.counts).items():
                self.ci.setdefault(name, []).append(pair)

    def into(self, result: dict[str, Any]) -> dict[str, Any]:
        """``metrics``, plus ``ci`` (metric -> [[lo, hi] at K=1..]) and ``bootstrap`` (what the intervals are)."""
        result["metrics"] = self.metrics
        if self.counts is not None:
            result["ci"] = self.ci
            result["bootstrap"] = self.about
        return result


def test_split(dataset: Splits, device: torch.device) -> tuple[Tensor, Tensor]:
    if not hasattr(dataset, "test_x") or not hasattr(dataset, "test_y"):
        raise StardomainError("bma: dataset must be a stardomain.data.Dataset (with test_x / test_y)")
    if len(dataset.test_x) == 0:
        raise StardomainError("bma: the dataset's test split is empty; BMA metrics need test samples")
    return dataset.test_x.to(device), dataset.test_y.to(device)


# -- prediction -----------------------------------------------------------------------------------
@torch.no_grad()
def predict_probs(model: nn.Module, state: State, x: Tensor, device: str | torch.device = "cpu", batch_size: int = 1024) -> Tensor:
    """Softmax outputs ``(N, C)`` (float32, on ``device``) of ``model`` with weights ``state``, eval mode.

    Uses ``torch.func.functional_call`` so the model itself is neither copied nor modified: one
    architecture instance serves every state.
    """
    check_state(model, state)
    _check_count(batch_size, "batch_size")
    if len(x) == 0:
        raise StardomainError("bma: predict_probs got no inputs (x is empty)")
    dev = torch.device(device)
    tensors = {k: v.to(dev) for k, v in state.items()}
    was_training = model.training
    model.eval()
    try:
        out = [
            torch.softmax(logits_of(functional_call(model, tensors, (x[i : i + batch_size].to(dev),), strict=True)).float(), dim=1)
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)


def single_model(
    model: nn.Module, state: State, dataset: Splits, device: str | torch.device = "cpu", batch_size: int = 1024
) -> dict[str, float]:
    """:func:`stardomain.bma.metrics.summary` of one model on the test split (the K=1 reference points)."""
    dev = torch.device(device)
    test_x, test_y = test_split(dataset, dev)
    return metrics.summary(predict_probs(model, state, test_x, dev, batch_size), test_y)


# -- posterior sampling ---------------------------------------------------------------------------
def sample_star_domain(n_sources: int, k: int, seed: int) -> list[tuple[int, float]]:
    """K posterior samples ``(source index n, t)``: n uniform over sources, then t ~ U[0, 1).

    A private generator draws n and t alternately, so the result depends only on the seed and
    the first k samples of a longer draw are exactly a shorter draw (growing K adds samples
    rather than reshuffling them).
    """
    _check_count(n_sources, "n_sources")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise StardomainError(f"bma: the number of samples must be an integer >= 0; got {k!r}")
    g = torch.Generator()
    g.manual_seed(int(seed))
    samples: list[tuple[int, float]] = []
    for _ in range(k):
        n = int(torch.randint(n_sources, (), generator=g))
        t = float(torch.rand((), generator=g, dtype=torch.float64))
        samples.append((n, t))
    return samples


# -- BMA curves -----------------------------------------------------------------------------------
def star_domain_bma(
    model: nn.Module,
    star_state: State,
    aligned_sources: Sequence[State],
    dataset: Splits,
    max_samples: int = 20,
    seed: int = 0,
    bn_samples: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 1024,
    progress: bool | ProgressConfig | None = False,
    return_probs: bool = False,
    n_boot: int = bootstrap.RESAMPLES,
) -> dict[str, Any]:
    """BMA over the star-domain posterior; metrics of the running average at every K.

    ``aligned_sources`` must already be permuted into θ⋆'s basin (e.g.
    ``Starlight.aligned_sources()``). Models with BatchNorm get their statistics re-estimated on
    the train split for every sample (``bn_samples`` of them, all when None), because
    interpolated weights need their own statistics. ``model`` is only a container for the
    weights; it is restored afterwards. Returns ``{"k": [1..K], "samples": [[n, t], ...],
    "metrics": {name: [value at K=1..K]}, "ci": {name: [[lo, hi] at K=1..K]}, "bootstrap": {...}}``
    (plus ``"probs"``, the final average, with ``return_probs``). ``ci`` holds 95% percentile-bootstrap
    intervals over the test samples (``n_boot`` resamples drawn from ``seed``; none with ``n_boot=0``):
    :mod:`stardomain.bma.bootstrap`.
    """
    from stardomain.barrier import bn as bn_module
    from stardomain.barrier.interpolate import lerp_state

    sources = list(aligned_sources)
    if not sources:
        raise StardomainError("bma: star_domain_bma needs at least one aligned source model")
    _check_count(max_samples, "max_samples")
    _check_count(batch_size, "batch_size")
    _check_resamples(n_boot)
    check_state(model, star_state, "star state")
    for i, s in enumerate(sources):
        check_state(model, s, f"aligned source {i}")
    dev = torch.device(device)
    test_x, test_y = test_split(dataset, dev)
    samples = sample_star_domain(len(sources), max_samples, seed)
    use_bn = bn_module.has_batchnorm(model)
    train_x = dataset.train_x.to(dev) if use_bn else None
    running = RunningMean()
    curves = _Curves(len(test_y), n_boot, seed)
    with _borrowed(model, dev):
        for n, t in _bar(samples, "star-domain BMA", progress):
            # lerp_state makes one transient state; load_state_dict copies it into the model
            model.load_state_dict(lerp_state(star_state, sources[n], t))
            if use_bn:
                bn_module.reset_bn(model, train_x, num_samples=bn_samples)
            running.add(_predict_loaded(model, test_x, batch_size, dev))
            curves.record(running.mean(), test_y)
    result = curves.into({"k": list(range(1, max_samples + 1)), "samples": [[n, t] for n, t in samples]})
    if return_probs:
        result["probs"] = running.mean().float().cpu()
    return result


def ensemble_bma(
    model: nn.Module,
    source_states: Sequence[State],
    dataset: Splits,
    max_members: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 1024,
    progress: bool | ProgressConfig | None = False,
    return_probs: bool = False,
    seed: int = 0,
    n_boot: int = bootstrap.RESAMPLES,
) -> dict[str, Any]:
    """Deep-ensemble baseline: post-softmax average of the first K sources, K = 1..max_members.

    Same output shape as :func:`star_domain_bma`; ``samples`` lists ``[i, 1.0]`` because member i
    is the t = 1 end of segment i. ``max_members`` defaults to every source. ``seed`` only draws the
    bootstrap resamples; with the star-domain curve's seed both curves are resampled alike.
    """
    sources = list(source_states)
    if not sources:
        raise StardomainError("bma: ensemble_bma needs at least one source model")
    k_max = len(sources) if max_members is None else _check_count(max_members, "max_members")
    if k_max > len(sources):
        raise StardomainError(f"bma: max_members={k_max} but only {len(sources)} source models were given")
    _check_resamples(n_boot)
    for i, s in enumerate(sources[:k_max]):
        check_state(model, s, f"source {i}")
    dev = torch.device(device)
    test_x, test_y = test_split(dataset, dev)
    running = RunningMean()
    curves = _Curves(len(test_y), n_boot, seed)
    for s in _bar(sources[:k_max], "deep ensemble", progress):
        running.add(predict_probs(model, s, test_x, dev, batch_size))
        curves.record(running.mean(), test_y)
    result = curves.into({"k": list(range(1, k_max + 1)), "samples": [[i, 1.0] for i in range(k_max)]})
    if return_probs:
        result["probs"] = running.mean().float().cpu()
    return result


def bma_study(
    model: nn.Module,
    star_state: State,
    aligned_sources: Sequence[State],
    dataset: Splits,
    max_samples: int = 20,
    seed: int = 0,
    bn_samples: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 1024,
    progress: bool | ProgressConfig | None = False,
    return_probs: bool = False,
    n_boot: int = bootstrap.RESAMPLES,
) -> dict[str, Any]:
    """Everything Figure 5 needs: star-domain BMA, deep ensemble, and the star / one source alone.

    The ensemble uses min(max_samples, number of sources) members; it is built from the aligned
    sources, which compute the same functions as the originals. ``return_probs`` keeps each
    posterior's final averaged probabilities (``["star_domain"]["probs"]``, ``["ensemble"]["probs"]``)
    for :func:`posterior_tests`. Both curves carry bootstrap intervals at every K (``n_boot``
    resamples of the test samples, drawn from ``seed``, the same resamples for both curves).
    Accuracies (``["metrics"]["accuracy"]`` and their intervals) are fractions in [0, 1], as everywhere in the API.
    """
    sources = list(aligned_sources)
    if not sources:
        raise StardomainError("bma: bma_study needs at least one aligned source model")
    _check_count(max_samples, "max_samples")
    return {
        "star_domain": star_domain_bma(
            model,
            star_state,
            sources,
            dataset,
            max_samples=max_samples,
            seed=seed,
            bn_samples=bn_samples,
            progress=progress,
            return_probs=return_probs,
            device=device,
            batch_size=batch_size,
            n_boot=n_boot,
        ),
        "ensemble": ensemble_bma(
            model,
            sources,
            dataset,
            max_members=min(max_samples, len(sources)),
            progress=progress,
            return_probs=return_probs,
            device=device,
            batch_size=batch_size,
            seed=seed,
            n_boot=n_boot,
        ),
        "star": single_model(model, star_state, dataset, device=device, batch_size=batch_size),
        "single": single_model(model, sources[0], dataset, device=device, batch_size=batch_size),
        "config": {"max_samples": max_samples, "seed": seed, "n_sources": len(sources), "bn_samples": bn_samples, "n_boot": n_boot},
    }


def posterior_tests(
    probs_a: Tensor, probs_b: Tensor, targets: Tensor, seed: int = 0, n_boot: int = 1000, n_bins: int = 15
) -> dict[str, Any]:
    """Star-domain BMA (a) vs deep ensemble (b) at their final K: paired bootstrap over test examples
    of the difference a − b in AUROC (max prob), AUROC (neg. entropy) and ECE.

    Scores, correctness and ECE bins are computed once, as :mod:`stardomain.bma.metrics` defines them;
    the resamples are item weights (vectorised). One run of each posterior exists, so this measures
    test-set noise only; the report says so.
    """
    from stardomain.analysis.stats import paired_bootstrap, weighted_auroc, weighted_ece

    y = targets.cpu()
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float32)
    parts = {}
    for name, p in (("a", probs_a.double().cpu()), ("b", probs_b.double().cpu())):
        conf, pred = p.max(dim=1)
        bins = (torch.bucketize(conf.float(), edges, right=True) - 1).clamp_(0, n_bins)
        parts[name] = {
            "max_prob": conf.numpy(),
            "neg_entropy": (-metrics.entropy(p)).numpy(),
            "correct": (pred == y).numpy(),
            "bins": bins.numpy(),
        }

    def auroc(score: str) -> Any:
        return lambda w: (
            weighted_auroc(parts["a"][score], parts["a"]["correct"], w) - weighted_auroc(parts["b"][score], parts["b"]["correct"], w)
        )

    def ece(w: Any) -> Any:
        a, b = parts["a"], parts["b"]
        return weighted_ece(a["bins"], a["max_prob"], a["correct"], w, n_bins + 1) - weighted_ece(
            b["bins"], b["max_prob"], b["correct"], w, n_bins + 1
        )

    n = len(y)
    return {
        "auroc_max_prob": paired_bootstrap(auroc("max_prob"), n, seed=seed, n_boot=n_boot),
        "auroc_neg_entropy": paired_bootstrap(auroc("neg_entropy"), n, seed=seed, n_boot=n_boot),
        "ece": paired_bootstrap(ece, n, seed=seed, n_boot=n_boot),
    }


# -- model fusion (Table 2) -----------------------------------------------------------------------
