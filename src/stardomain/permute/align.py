"""One call from two checkpoints to an aligned B: pick the matcher, apply its permutation."""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from stardomain.errors import StardomainError
from stardomain.permute.activation_matching import activation_matching
from stardomain.permute.apply import apply_permutation
from stardomain.permute.spec import PermutationSpec, trace_spec
from stardomain.permute.weight_matching import MatchResult, weight_matching

__all__ = ["align"]


def align(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    spec: PermutationSpec | None = None,
    method: str = "weight",
    model: nn.Module | None = None,
    x: Tensor | None = None,
    seed: int = 0,
    init: Mapping[str, Tensor] | None = None,
    **options: Any,
) -> tuple[dict[str, Tensor], MatchResult]:
    """Return ``(B permuted into A's unit order, MatchResult)``.

    ``method="weight"`` needs only the states (and a spec, or a ``model`` to trace one);
    ``method="activation"`` also needs ``model`` and inputs ``x``. Extra ``options`` go to
    the matcher (``max_iter``, ``include_buffers``, ``batch_size``...).
    """
    if spec is None:
        if model is None:
            raise StardomainError("align needs a PermutationSpec or the model to trace one from")
        spec = trace_spec(model)
    if method == "weight":
        result = weight_matching(spec, state_a, state_b, seed=seed, init=init, **options)
    elif method == "activation":
        if model is None or x is None:
            raise StardomainError("activation matching needs model= (the architecture) and x= (input batch)")
        result = activation_matching(model, spec, state_a, state_b, x, **options)
    else:
        raise StardomainError(f"unknown alignment method {method!r}; use 'weight' or 'activation'")
    return apply_permutation(spec, result.perm, state_b), result
