"""Align one pair of models, with its distances: the CLI's ``align`` computes nothing of its own.

Why here: tracing the spec on the data's own inputs, the activation-matching sample and the ℓ2 distances before and
after are the alignment's application logic; the command only reads checkpoints, calls :func:`align_pair` and prints.
:func:`align_on_data` is the alignment step itself, written once: :func:`align_pair` and
:func:`stardomain.barrier.evaluate_pair` (the CLI's ``barrier``, the pipeline's pairs) both call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor, nn

from stardomain._util.progress import ProgressConfig
from stardomain.defaults import ALIGNMENTS, DEFAULT_MATCHING_SAMPLES, MATCHERS, NO_ALIGNMENT
from stardomain.errors import StardomainError
from stardomain.permute.spec import PermutationSpec
from stardomain.permute.weight_matching import MatchResult

if TYPE_CHECKING:
    from stardomain.data.protocol import AnyData


@dataclass
class AlignedPair:
    """B in A's unit order, the matcher's record, the spec it permuted and the ℓ2 distance to A before and after
    (parameters only: BatchNorm running statistics are not weights)."""

    state_b: dict[str, Tensor]
    match: MatchResult
    spec: PermutationSpec
    l2_before: float
    l2_after: float


def alignment_problem(align: str, *, refine: str = "none", symmetry: str = "permutation") -> str | None:
    """What is wrong with an alignment request, worded without its caller's name (``evaluate_pair``, the BMA), or None:
    ``align`` is a matcher or ``"none"``, and a refinement or a symmetry needs a matcher to refine or extend."""
    if align not in ALIGNMENTS:
        return f"align must be one of {', '.join(ALIGNMENTS)} (got {align!r})"
    if refine != "none" and align == NO_ALIGNMENT:
        return f"refine={refine!r} refines an alignment; pick align= one of {', '.join(MATCHERS)}"
    if symmetry != "permutation" and align == NO_ALIGNMENT:
        return f"symmetry={symmetry!r} extends an alignment; pick align= one of {', '.join(MATCHERS)}"
    return None


def align_pair(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    model: nn.Module,
    dataset: AnyData | None = None,
    method: str = "weight",
    matching_samples: int = DEFAULT_MATCHING_SAMPLES,
    seed: int = 0,
    allow_unpermuted: bool = False,
    refine: str = "none",
    refine_options: Mapping[str, Any] | None = None,
    refine_resume_path: Any = None,
    symmetry: str = "permutation",
    device: str | torch.device = "cpu",
) -> AlignedPair:
    """Permute B into A's basin by ``method`` (:func:`stardomain.permute.align`'s settings), both states moved to
    ``device`` first (:func:`align_on_data` aligns them where they are), with the ℓ2 distance before and after."""
    from stardomain.permute.apply import l2_distance

    keys = [k for k, _ in model.named_parameters()]
    aligned, match, spec = align_on_data(
        {k: v.to(device) for k, v in state_a.items()},
        {k: v.to(device) for k, v in state_b.items()},
        model=model,
        dataset=dataset,
        method=method,
        matching_samples=matching_samples,
        seed=seed,
        allow_unpermuted=allow_unpermuted,
        refine=refine,
        refine_options=refine_options,
        refine_resume_path=refine_resume_path,
        symmetry=symmetry,
        device=device,
    )
    before, after = l2_distance(state_a, state_b, keys), l2_distance(state_a, aligned, keys)
    return AlignedPair(state_b=aligned, match=match, spec=spec, l2_before=before, l2_after=after)


def align_on_data(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    model: nn.Module,
    dataset: AnyData | None,
    method: str,
    matching_samples: int = DEFAULT_MATCHING_SAMPLES,
    seed: int = 0,
    allow_unpermuted: bool = False,
    refine: str = "none",
    refine_options: Mapping[str, Any] | None = None,
    refine_resume_path: Any = None,
    symmetry: str = "permutation",
    spec: PermutationSpec | None = None,
    example_input: Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool | ProgressConfig | None = False,
) -> tuple[dict[str, Tensor], MatchResult, PermutationSpec]:
    """The one alignment step of a pair (:func:`align_pair`, :func:`stardomain.barrier.evaluate_pair`): B permuted
    into A's basin by ``method``, the matcher's result and the spec. The spec (unless given) is traced, and the
    aligned B checked, on ``example_input`` or ``dataset``'s own first training inputs (token ids stay ids), or on a
    random batch of the recorded shape without data; activation matching reads the one seeded matching sample of
    ``dataset`` (``matching_samples``, every class); a refinement trains on ``dataset`` (``progress``: its bar).
    The states are aligned on the device they are on; the inputs go to ``device``."""
    from stardomain.permute import align, trace_spec  # the package's names, as callers (and tests) see them

    example = example_input
    if example is None and dataset is not None:
        from stardomain.data.protocol import data_example

        example = data_example(dataset)
    example = example.to(device) if example is not None else None
    x = example
    if method == "activation":
        from stardomain.data import matching_sample

        if dataset is None:
            raise StardomainError("activation matching needs training data: pass dataset= (CLI: --dataset)")
        x = matching_sample(dataset, matching_samples).to(device)
    if spec is None:
        spec = trace_spec(model, example_input=example)
    aligned, match = align(
        state_a,
        state_b,
        spec=spec,
        method=method,
        model=model,
        x=x,  # weight matching reads it only to check the function
        seed=seed,
        allow_unpermuted=allow_unpermuted,
        refine=refine,
        data=dataset,
        refine_options=refine_options,
        refine_resume_path=refine_resume_path,
        refine_progress=progress,
        symmetry=symmetry,
    )
    return aligned, match, spec
