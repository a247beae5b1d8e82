"""Evaluate one pair of solutions: align, distances, the linear path and its barriers, written once.

The CLI's ``barrier``, the pipeline's pairs and the Python API call :func:`evaluate_pair` with one
option vocabulary (``align``, ``points``, ``bn``, ``bn_samples``, ``eval_train_samples``,
``eval_test_samples``, ``matching_samples``, ``allow_unpermuted``), so the same pair gives the same
numbers whoever asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor, nn

from stardomain._util.progress import ProgressConfig
from stardomain.barrier.path import Curve, barriers, curve, l2_distance
from stardomain.defaults import DEFAULT_MATCHING_SAMPLES, DEFAULT_POINTS, points_problem
from stardomain.errors import StardomainError
from stardomain.permute.pair import align_on_data, alignment_problem

if TYPE_CHECKING:
    from stardomain.data.protocol import Data


@dataclass
class PairResult:
    """One pair's evaluation; :meth:`record` is what results files store (without the aligned weights).
    ``curve`` accuracies and ``barriers["train_acc"]`` / ``["test_acc"]`` are fractions (0.05 = 5 pp)."""

    align: str
    l2: float
    l2_aligned: float
    curve: Curve
    barriers: dict[str, float]
    match_objective: float | None = None
    spec_coverage: float | None = None
    function_check: str | None = None
    state_b: dict[str, Tensor] = field(default_factory=dict, repr=False)  # B as evaluated (aligned to A)
    refine: dict[str, Any] | None = None  # learned matching's record (align refined by refine="ste"), else None
    symmetry: dict[str, Any] | None = None  # maps beyond permutations (align(symmetry=...)); None for permutations

    def record(self) -> dict[str, Any]:
        """The JSON record: ``l2``, (when aligned) ``match_objective`` and ``spec_coverage``, ``l2_aligned``, ``curve``, ``barriers``."""
        out: dict[str, Any] = {"l2": self.l2}
        if self.align != "none":
            out["match_objective"] = self.match_objective
            out["spec_coverage"] = self.spec_coverage
        if self.refine is not None:  # only refined pairs carry it: unrefined records stay as they were
            out["refine"] = self.refine
        if self.symmetry is not None:  # only pairs aligned beyond permutations carry it
            out["symmetry"] = self.symmetry
        return {**out, "l2_aligned": self.l2_aligned, "curve": self.curve.to_dict(), "barriers": self.barriers}


def evaluate_pair(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    model: nn.Module,
    dataset: Data,
    align: str = "weight",
    points: int = DEFAULT_POINTS,
    bn: str = "reset",
    bn_samples: int | None = None,
    eval_train_samples: int | None = None,
    eval_test_samples: int | None = None,
    matching_samples: int = DEFAULT_MATCHING_SAMPLES,
    allow_unpermuted: bool = False,
    spec: Any = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool | ProgressConfig | None = False,
    refine: str = "none",
    refine_options: Mapping[str, Any] | None = None,
    refine_resume_path: Any = None,
    symmetry: str = "permutation",
    example_input: Tensor | None = None,
) -> PairResult:
    """B permuted into A's basin (unless ``align="none"``), ℓ2 before and after, the curve and its barriers
    (accuracies and accuracy barriers as fractions: 0.05 = 5 pp; see :class:`PairResult`).

    ``model`` supplies the architecture (and the spec, traced when ``spec`` is None); activation
    matching correlates on :func:`stardomain.data.matching_sample` (``matching_samples``, seeded,
    every class). ``seed`` is the matcher's and the curve's subset seed. ``refine="ste"`` refines the
    alignment by learned matching on ``dataset``'s train split (``refine_options``: its budget, a
    :class:`~stardomain.permute.learned.SteConfig` or mapping; ``refine_resume_path``: its state file).
    ``symmetry="orthogonal"`` / ``"invertible"``: the alignment goes on with those maps after the
    permutation (:mod:`stardomain.permute.symmetry`); recorded as ``record()["symmetry"]``.
    ``example_input``: the batch the spec is traced and the alignment checked on (default: the dataset's first
    training inputs, :func:`stardomain.data.protocol.data_example`, in their own dtype: token ids stay ids), so any
    ``nn.Module`` works, a raw Hugging Face model included (its ``ModelOutput`` is read for ``logits``).
    """
    _check_options(align=align, points=points, matching_samples=matching_samples, refine=refine, symmetry=symmetry)
    keys = [k for k, _ in model.named_parameters()]
    l2 = l2_distance(state_a, state_b, keys)
    match = None
    if align != "none":  # the pair alignment, written once: the CLI's align runs it too (permute.pair)
        state_b, match, _ = align_on_data(
            state_a,
            state_b,
            model=model,
            dataset=dataset,
            method=align,
            matching_samples=matching_samples,
            seed=seed,
            allow_unpermuted=allow_unpermuted,
            refine=refine,
            refine_options=refine_options,
            refine_resume_path=refine_resume_path,
            symmetry=symmetry,
            spec=spec,
            example_input=example_input,
            device=device,
            progress=progress,
        )
    c = curve(
        state_a,
        state_b,
        model=model,
        dataset=dataset,
        num_points=points,
        bn_samples=bn_samples,
        device=device,
        progress=progress,
        eval_train_samples=eval_train_samples,
        eval_test_samples=eval_test_samples,
        bn=bn,
        seed=seed,
    )
    return PairResult(
        align=align,
        l2=l2,
        l2_aligned=l2_distance(state_a, state_b, keys),
        curve=c,
        barriers=barriers(c),
        state_b=dict(state_b),
        **_match_fields(match),
    )


def _match_fields(match: Any) -> dict[str, Any]:
    """What :class:`PairResult` keeps of the matcher's result; all None for an unaligned pair."""
    if match is None:
        return {"match_objective": None, "spec_coverage": None, "function_check": None, "refine": None, "symmetry": None}
    return {
        "match_objective": float(match.objective),
        "spec_coverage": match.coverage,
        "function_check": match.check,
        "refine": match.refine,
        "symmetry": match.symmetry,
    }


def _check_options(*, align: str, points: int, matching_samples: int, refine: str, symmetry: str) -> None:
    """Every option refused before any work, in one line naming the fix (a refinement or a symmetry needs an alignment)."""
    if (problem := alignment_problem(align, refine=refine, symmetry=symmetry)) is not None:
        raise StardomainError(f"evaluate_pair: {problem}")
    if (problem := points_problem(points)) is not None:
        raise StardomainError(f"evaluate_pair: points {problem}")
    if matching_samples < 1:
        raise StardomainError(f"evaluate_pair: matching_samples must be >= 1 (got {matching_samples})")
