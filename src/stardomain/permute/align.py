"""One call from two checkpoints to an aligned B: pick the matcher, apply its permutation, prove it.

Every align ends with a function check: the aligned B must compute what B computed (max
|logit difference| on a batch), so a wrong spec can never hand back a silently changed
network. Skipping the check (``check=False``) is recorded in the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from torch import Tensor, nn

from stardomain.defaults import MATCHERS
from stardomain.errors import StardomainError
from stardomain.permute.activation_matching import activation_matching
from stardomain.permute.apply import apply_permutation, compose
from stardomain.permute.learned import REFINE_METHODS, SteConfig, example_inputs, refine_alignment
from stardomain.permute.spec import PermutationSpec, states_first
from stardomain.permute.symmetry import check_symmetry, fit_symmetry
from stardomain.permute.trace import check_ties, example_batch, function_gap, trace_spec
from stardomain.permute.weight_matching import MatchResult, weight_matching

if TYPE_CHECKING:
    from stardomain.permute.learned import LabelledData

__all__ = ["align"]

_TRACE_BATCH = 8  # rows of ``x`` used to trace the spec and check the function


def _weight(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    spec: PermutationSpec,
    model: nn.Module | None,
    x: Tensor | None,
    seed: int,
    init: Mapping[str, Tensor] | None,
    **options: Any,
) -> MatchResult:
    return weight_matching(state_a, state_b, spec=spec, seed=seed, init=init, **options)


def _activation(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    spec: PermutationSpec,
    model: nn.Module | None,
    x: Tensor | None,
    seed: int,
    init: Mapping[str, Tensor] | None,
    **options: Any,
) -> MatchResult:
    if model is None or x is None:
        raise StardomainError("activation matching needs model= (the architecture) and x= (input batch)")
    return activation_matching(state_a, state_b, spec=spec, model=model, x=x, **options)


# what align(method=...) calls for each matcher of the registry (defaults.MATCHERS: the names, their descriptions and
# their order live there, torch-free, for the CLI and the YAML checks); a test holds the two to the same names
MATCHER_FUNCTIONS: Mapping[str, Callable[..., MatchResult]] = {"weight": _weight, "activation": _activation}


@states_first("align(state_a, state_b, spec=..., method=..., model=..., x=...)")
def align(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    spec: PermutationSpec | None = None,
    method: str = "weight",
    model: nn.Module | None = None,
    x: Tensor | None = None,
    seed: int = 0,
    init: Mapping[str, Tensor] | None = None,
    check: bool = True,
    allow_unpermuted: bool = False,
    refine: str = "none",
    data: LabelledData | None = None,
    refine_options: Mapping[str, Any] | None = None,
    symmetry: str = "permutation",
    **options: Any,
) -> tuple[dict[str, Tensor], MatchResult]:
    """Return ``(B permuted into A's unit order, MatchResult)``.

    ``method`` names a matcher of :data:`stardomain.defaults.MATCHERS`. ``method="weight"`` needs the
    states and a spec, or a ``model`` to trace one (traced on ``x`` when given, else on a random batch
    of ``model.arch["in_shape"]``);
    ``method="activation"`` also needs inputs ``x``. A spec that permutes nothing is refused
    unless ``allow_unpermuted``. With ``check`` (default; needs ``model``) the aligned B is run
    against B and any output difference beyond float rounding raises; ``result.function_gap``
    holds the max |logit difference| (``None`` when skipped, ``result.check`` says which).
    Extra ``options`` go to the matcher (``max_iter``, ``include_buffers``, ``batch_size``...).

    ``refine="ste"`` then refines the matcher's permutation by learned matching
    (:mod:`stardomain.permute.learned`, Git Re-Basin's straight-through estimator: lower loss at
    the midpoint, never above the start's); it needs ``model`` and training ``data`` (a dataset
    or an ``(x, y)`` pair). Its budget comes from ``refine_options`` (a ``SteConfig`` or a
    mapping) and ``refine_<setting>=`` keywords (``refine_steps``, ``refine_batch_size``,
    ``refine_lr``, ``refine_eval_samples``, ...); ``refine_resume_path`` and
    ``refine_progress`` go to :func:`~stardomain.permute.learned.ste_refine`. The record is
    ``result.refine``.

    ``symmetry="orthogonal"`` / ``"invertible"`` then moves the permuted B further by maps that keep its
    function (:mod:`stardomain.permute.symmetry`: an orthogonal map of the residual stream, invertible
    per-head QK/OV maps); it needs ``model``, B comes back in A's norm parameterisation, and the record
    is ``result.symmetry``. A model that cannot take the maps is refused in one line.
    """
    sample = x[:_TRACE_BATCH] if x is not None else None
    if method not in MATCHER_FUNCTIONS:
        raise StardomainError(f"unknown alignment method {method!r}; use one of {', '.join(MATCHERS)}")
    check_symmetry(symmetry)
    if symmetry != "permutation" and model is None:
        raise StardomainError(f"align(symmetry={symmetry!r}) needs model= (the maps are proved on the architecture)")
    refine_kw = {k[len("refine_") :]: options.pop(k) for k in [k for k in options if k.startswith("refine_")]}
    refine_run = {k: refine_kw.pop(k) for k in ("resume_path", "progress") if k in refine_kw}
    config = SteConfig.build(refine_options, **refine_kw)  # checked before matching, even when unused: a typo is an error
    if refine not in REFINE_METHODS:
        raise StardomainError(f"unknown refinement {refine!r}; use one of {', '.join(REFINE_METHODS)}")
    if refine != "none" and data is None:
        raise StardomainError("align(refine='ste') needs data= (training data: a dataset or an (x, y) pair of tensors)")
    if sample is None and refine != "none":  # trace and check on the training inputs at hand
        sample = example_inputs(data, _TRACE_BATCH)
    if spec is None:
        if model is None:
            raise StardomainError("align needs spec= or model= (to trace a spec from)")
        spec = trace_spec(model, example_input=sample)
    spec.require_coverage("align", allow_unpermuted)
    check_ties(spec, model, state_b, "align")
    result = MATCHER_FUNCTIONS[method](state_a, state_b, spec=spec, model=model, x=x, seed=seed, init=init, **options)
    if refine != "none":
        result = refine_alignment(
            state_a, state_b, result, method=refine, spec=spec, model=model, data=data, config=config, seed=seed, **refine_run
        )
    aligned = apply_permutation(state_b, result.perm, spec=spec)
    if symmetry != "permutation":
        aligned = _symmetry_maps(state_a, aligned, result, symmetry, spec, model, sample, method, seed, options)
    result.coverage = float(spec.summary()["covered_share"])
    if not check:
        result.check = "skipped (check=False)"
        return aligned, result
    if model is None:
        raise StardomainError("align checks that B keeps its function and needs model=; pass model= or check=False")
    gap, scale = function_gap(model, state_b, aligned, example_batch(model, sample))
    if gap > 1e-4 * max(scale, 1.0):
        raise StardomainError(
            f"aligned B computes a different function (max |logit difference| {gap:.3g}); the permutation spec "
            "does not fit this model: run `stardomain spec` on it and pass a hand-written PermutationSpec"
        )
    result.function_gap, result.check = gap, "passed"
    return aligned, result


def _symmetry_maps(
    state_a: Mapping[str, Tensor],
    aligned: dict[str, Tensor],
    result: MatchResult,
    symmetry: str,
    spec: PermutationSpec,
    model: nn.Module | None,
    sample: Tensor | None,
    method: str,
    seed: int,
    options: Mapping[str, Any],
) -> dict[str, Tensor]:
    """The maps of ``symmetry`` after the permutation (weight matching re-permutes the other groups between
    rounds); ``result.perm`` takes the re-permutation, ``result.symmetry`` the record."""
    assert model is not None
    wm = {k: v for k, v in options.items() if k in ("max_iter", "include_buffers", "lap_solver", "dtype")}

    def rematch(a: Mapping[str, Tensor], b: Mapping[str, Tensor], sub: PermutationSpec) -> dict[str, Tensor]:
        return weight_matching(a, b, spec=sub, seed=seed, **wm).perm

    out, record = fit_symmetry(
        state_a,
        aligned,
        symmetry=symmetry,
        model=model,
        spec=spec,
        args=example_batch(model, sample),
        rematch=rematch if method == "weight" else None,
    )
    if "rematch" in record:
        result.perm = compose(record.pop("rematch"), result.perm, spec=spec)
        record["rematched"] = True
    record["perm"] = "result.perm is the permutation; the maps above come after it"
    result.symmetry = record
    return out
