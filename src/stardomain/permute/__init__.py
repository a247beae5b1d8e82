"""Permutation symmetry of networks: specs, applying permutations, and matching two networks.

``trace_spec(model)`` finds which tensor axes each hidden-unit group permutes, from a ``torch.fx``
graph of the model or, where fx cannot follow the forward (Hugging Face ``transformers``), a
``torch.export`` graph of ATen ops (``capture="auto"``, the default, picks);
``weight_matching`` / ``activation_matching`` find the permutation of B that best lines its
units up with A's; ``align`` does both steps, checks that B kept its function, and returns
the aligned state. Every two-model function takes the states first and the spec, model and
options as keywords: ``weight_matching(a, b, spec=spec)``, ``apply_permutation(state, perm,
spec=spec)``, ``align(a, b, model=model, x=x)``.
"""

from stardomain.permute.activation_matching import activation_matching
from stardomain.permute.align import align
from stardomain.permute.apply import (
    apply_permutation,
    check_permutation,
    compose,
    identity_permutation,
    invert,
    is_identity,
    l2_distance,
    random_permutation,
)
from stardomain.permute.learned import SteConfig, ste_refine
from stardomain.permute.spec import Axis, PermutationSpec
from stardomain.permute.trace import trace_spec
from stardomain.permute.weight_matching import MatchResult, matching_objective, weight_matching

__all__ = [
    "Axis",
    "MatchResult",
    "PermutationSpec",
    "SteConfig",
    "activation_matching",
    "align",
    "apply_permutation",
    "check_permutation",
    "compose",
    "identity_permutation",
    "invert",
    "is_identity",
    "l2_distance",
    "matching_objective",
    "random_permutation",
    "ste_refine",
    "trace_spec",
    "weight_matching",
]
