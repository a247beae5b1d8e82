"""BMA of one star, written once: the CLI's ``bma`` and the pipeline's BMA study both call :func:`star_bma`.

Why one function: the two used to align the sources differently and only the study ran the posterior tests, so
the same star gave two answers. The alignment is now an explicit parameter of the one computation: the star's
recorded matching (:func:`recorded_alignment`, the faithful choice: the star was trained against sources aligned
that way) or the experiment's ``eval.align``; whoever calls says which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from stardomain._util.progress import ProgressConfig
from stardomain.bma import bootstrap
from stardomain.bma.core import bma_study, posterior_tests
from stardomain.defaults import DEFAULT_MATCHING_SAMPLES, NO_ALIGNMENT
from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.data.protocol import AnyData, Splits

State = Mapping[str, Tensor]


def recorded_alignment(starlight: Mapping[str, Any] | None) -> dict[str, Any]:
    """How the star's own training aligned its sources (its metadata's ``starlight`` record): ``align``,
    ``symmetry`` and ``matching_samples``, the keyword arguments of :func:`star_bma` that reproduce it."""
    rec = starlight or {}
    return {
        "align": str(rec.get("matching", "weight")),
        "symmetry": str(rec.get("symmetry", "permutation")),
        "matching_samples": int(rec.get("matching_samples", DEFAULT_MATCHING_SAMPLES)),
    }


def align_sources(
    star_state: State,
    model: nn.Module,
    source_states: Sequence[State],
    dataset: AnyData,
    *,
    align: str,
    symmetry: str = "permutation",
    spec: Any = None,
    matching_samples: int = DEFAULT_MATCHING_SAMPLES,
    device: str | torch.device = "cpu",
    allow_unpermuted: bool = False,
) -> list[dict[str, Tensor]]:
    """Each source in the star's unit order (``align="none"``: as they are), through the one alignment step of a
    pair (:func:`stardomain.permute.pair.align_on_data`): the spec, when not given, is traced once on the data's own
    inputs (token ids stay ids), every aligned source checked on them; activation matching reads the one seeded
    matching sample."""
    from stardomain.data.protocol import data_example
    from stardomain.permute import trace_spec
    from stardomain.permute.pair import align_on_data, alignment_problem

    if (problem := alignment_problem(align, symmetry=symmetry)) is not None:
        raise StardomainError(f"bma: {problem}")
    if align == NO_ALIGNMENT:
        return [dict(s) for s in source_states]
    example = data_example(dataset).to(device)
    spec = trace_spec(model, example_input=example) if spec is None else spec
    return [
        align_on_data(
            star_state,
            s,
            model=model,
            dataset=dataset,
            method=align,
            matching_samples=matching_samples,
            seed=0,
            allow_unpermuted=allow_unpermuted,
            symmetry=symmetry,
            spec=spec,
            example_input=example,
            device=device,
        )[0]
        for s in source_states
    ]


def star_bma(
    star_state: State,
    model: nn.Module,
    source_states: Sequence[State],
    dataset: Splits,
    *,
    align: str,
    symmetry: str = "permutation",
    spec: Any = None,
    matching_samples: int = DEFAULT_MATCHING_SAMPLES,
    max_samples: int = 20,
    seed: int = 0,
    bn_samples: int | None = None,
    device: str | torch.device = "cpu",
    allow_unpermuted: bool = False,
    progress: bool | ProgressConfig | None = False,
    n_boot: int = bootstrap.RESAMPLES,
) -> dict[str, Any]:
    """Star-domain BMA against the deep ensemble of the same sources (paper Sec. 4.1), aligned by ``align``
    (a matcher of :data:`stardomain.defaults.MATCHERS` or ``"none"``) and ``symmetry``.

    Returns :func:`~stardomain.bma.core.bma_study`'s section (curves with bootstrap intervals, star, single,
    config) plus ``tests``: :func:`~stardomain.bma.core.posterior_tests` of the two posteriors at their final K.
    """
    aligned = align_sources(
        star_state,
        model,
        source_states,
        dataset,
        align=align,
        symmetry=symmetry,
        spec=spec,
        matching_samples=matching_samples,
        device=device,
        allow_unpermuted=allow_unpermuted,
    )
    out = bma_study(
        model,
        star_state,
        aligned,
        dataset,
        max_samples=max_samples,
        seed=seed,
        bn_samples=bn_samples,
        device=device,
        progress=progress,
        return_probs=True,
        n_boot=n_boot,
    )
    probs = {k: out[k].pop("probs") for k in ("star_domain", "ensemble")}
    out["tests"] = posterior_tests(probs["star_domain"], probs["ensemble"], dataset.test_y, seed=seed)
    return out
