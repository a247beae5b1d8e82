"""What defines a Starlight run besides its sources, data and seed (StarlightConfig and the checks of its knobs, written once), and the star seed streams."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence

import torch

from stardomain import defaults
from stardomain.defaults import ALIGNMENTS, DEFAULT_MATCHING_SAMPLES, SYMMETRIES
from stardomain.errors import StardomainError, reject_unknown_keys
from stardomain.training.loop import Recipe

STATE_KIND = "starlight-state"  # the kind of Starlight's resumable state (stardomain.training.state)
T_SAMPLING = ("uniform", "beta", "constant", "stratified")


# the knobs of Algorithm 1 that a YAML ``star:`` block sets under the same names (experiment.config.StarConfig)
KNOBS = ("t_sampling", "t_beta", "t_constant", "pairs_per_step", "mu", "realign_every", "matching", "symmetry", "fusion_loss")


def knob_problems(c: Any, *, mus: Sequence[float] | None = None) -> list[tuple[str, str]]:
    """What is wrong with the Starlight knobs of ``c`` (a StarlightConfig or a YAML star block), as (name, problem):
    the checks are written once, here, and worded by whoever asks (``starlight: mu ...``, ``star.mu: ...``).

    ``mus``: the μ of every star these knobs train (a StarlightConfig: its own; a YAML: the star block's and the
    fusion study's), against which a ``fusion_loss`` is checked; None leaves that check to the caller who knows them."""
    beta = list(c.t_beta)
    checks = [
        (
            "fusion_loss",
            c.fusion_loss in defaults.FUSION_LOSSES,
            f"must be one of {', '.join(defaults.FUSION_LOSSES)} (got {c.fusion_loss!r})",
        ),
        ("t_sampling", c.t_sampling in T_SAMPLING, f"must be one of {', '.join(T_SAMPLING)} (got {c.t_sampling!r})"),
        ("matching", c.matching in ALIGNMENTS, f"must be one of {', '.join(ALIGNMENTS)} (got {c.matching!r})"),
        ("symmetry", c.symmetry in SYMMETRIES, f"must be one of {', '.join(SYMMETRIES)} (got {c.symmetry!r})"),
        ("mu", c.mu >= 0, f"must be >= 0 (got {c.mu})"),
        ("pairs_per_step", c.pairs_per_step >= 1, f"must be >= 1 (got {c.pairs_per_step})"),
        ("t_constant", 0.0 <= c.t_constant <= 1.0, f"must be in [0, 1] (got {c.t_constant})"),
        ("t_beta", len(beta) == 2 and min(beta, default=0) > 0, f"must be two positive numbers (got {beta})"),
        (
            "realign_every",
            c.realign_every is None or c.realign_every >= 1,
            f"must be >= 1 step, or null for once per epoch (got {c.realign_every})",
        ),
        # an option another one makes meaningless is refused, never silently ignored (a value other than its default
        # counts as given: a YAML's identity leaves defaults out too)
        (
            "t_constant",
            c.t_sampling == "constant" or c.t_constant == defaults.T_CONSTANT,
            f"{c.t_constant} is the fixed t of t_sampling constant, but t_sampling is {c.t_sampling!r} (it would be "
            "ignored); set t_sampling to constant or remove t_constant",
        ),
        (
            "t_beta",
            c.t_sampling == "beta" or beta == list(defaults.T_BETA),
            f"{beta} is the Beta(a, b) of t_sampling beta, but t_sampling is {c.t_sampling!r} (it would be ignored); "
            "set t_sampling to beta or remove t_beta",
        ),
        (
            "realign_every",
            c.matching != "none" or c.realign_every is None,
            f"{c.realign_every} steps between re-alignments, but matching is 'none' (sources are never aligned, it would "
            "be ignored); choose a matching or remove realign_every",
        ),
        (
            "symmetry",
            c.matching != "none" or c.symmetry == "permutation",
            f"{c.symmetry} maps move the aligned sources, but matching is 'none' (sources are never aligned, it would be "
            "ignored); choose a matching or remove symmetry",
        ),
    ]
    if mus is not None:
        checks.append(
            (
                "fusion_loss",
                c.fusion_loss == defaults.FUSION_LOSS or any(m > 0 for m in mus),
                f"{c.fusion_loss} normalises the fusion term mu·L(θ⋆), but mu is 0 (no fusion term: it would be ignored); "
                "set mu > 0 or remove fusion_loss",
            )
        )
    return [(name, problem) for name, ok, problem in checks if not ok]


@dataclass
class StarlightConfig:
    """Everything that defines a Starlight run besides the sources, the data and the seed."""

    recipe: Recipe = field(default_factory=Recipe)
    t_sampling: str = defaults.T_SAMPLING
    t_beta: tuple[float, float] = defaults.T_BETA  # Beta(a, b) for t_sampling="beta"
    t_constant: float = defaults.T_CONSTANT  # for t_sampling="constant"
    pairs_per_step: int = defaults.PAIRS_PER_STEP  # (source, t) pairs per step; their losses are averaged
    mu: float = defaults.MU  # weight of the star model's own cross-entropy (fusion variant, Eq. 9)
    realign_every: int | None = None  # steps between re-alignments; None = once per epoch (paper)
    matching: str = defaults.MATCHING
    # after each re-alignment's permutation, also move the sources by orthogonal residual-stream / invertible per-head
    # maps (transformers: stardomain.permute.symmetry); the sources come back in the star's norm gains
    symmetry: str = "permutation"
    # mu > 0 only: "sum" = L~ + mu·L(θ) (stardomain's, the default: recorded stars keep their identity), "paper" =
    # (L~ + mu·L(θ)) / (1 + mu), the authors' code (defaults.FUSION_LOSS says why)
    fusion_loss: str = defaults.FUSION_LOSS
    matching_samples: int = DEFAULT_MATCHING_SAMPLES  # size of data.matching_sample, the inputs activation matching correlates on
    bn_samples: int | None = None  # samples for the final BatchNorm re-estimation (None = whole train set)

    def __post_init__(self) -> None:
        if isinstance(self.recipe, Mapping):
            self.recipe = Recipe.from_dict(self.recipe)
        fast = {k: getattr(self.recipe, k) for k in ("precision", "channels_last", "compile")}
        if fast != {"precision": "fp32", "channels_last": False, "compile": False}:  # recorded, so never silently ignored
            raise StardomainError(
                f"starlight: star models train in fp32 without channels_last/compile (the recipe asks "
                f"for {fast}); drop those options from the star's recipe (Recipe.without_execution())"
            )
        self.t_beta = tuple(float(v) for v in self.t_beta)  # type: ignore[assignment]
        for name, problem in knob_problems(self, mus=(self.mu,)):
            raise StardomainError(f"starlight: {name} {problem}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recipe"] = self.recipe.to_dict()
        d["t_beta"] = list(self.t_beta)
        if d["symmetry"] == "permutation":
            del d["symmetry"]  # the default: stars written before the setting keep their identity (and are reused)
        if d["fusion_loss"] == defaults.FUSION_LOSS:
            del d["fusion_loss"]  # likewise: a star recorded without the key was trained with the sum
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StarlightConfig":
        reject_unknown_keys("starlight", d, (f.name for f in fields(cls)))
        return cls(**dict(d))


def star_seed(seed: int, tag: str = "") -> int:
    """The seed a star model actually uses for its init, batch order and t draws, from a stream of its own.

    Sources use seeds 0, 1, 2, ... directly; a star seeded with the same number would start
    from exactly a source's initial weights and batch order. Hashing ``(seed, tag)`` gives
    every star (each ``tag``: |Z| size, fusion μ, optimizer) its own 31-bit seed, fixed by the
    user's seed; the CLI and the experiment pipeline both call this.
    """
    import hashlib

    digest = hashlib.blake2b(f"stardomain-star:{tag}:{int(seed)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


def repeat_seed(seed: int, repeat: int, tag: str = "") -> int:
    """The seed of repeat ``repeat`` of a star: repeat 0 is the single star (``star_seed(seed, tag)``).

    Repeat r >= 1 draws from the stream of the tag ``"{tag}-r{r}"`` (``"r{r}"`` without a tag),
    so the pipeline's star tagged ``"{tag}-r{r}"`` and the CLI's ``--repeats`` agree.
    """
    if repeat < 0:
        raise StardomainError(f"a star repeat index must be >= 0 (got {repeat})")
    return star_seed(seed, tag) if repeat == 0 else star_seed(seed, f"{tag}-r{repeat}" if tag else f"r{repeat}")


def check_not_source_init(state: Mapping[str, torch.Tensor], sources: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Refuse a star whose initial weights equal a source's (rebuilt from the source's recorded seed and arch).

    ``sources`` are (label, metadata) pairs. Such a star would be a copy of that source's start.
    """
    import torch

    from stardomain.checkpoints.meta import Checkpoint
    from stardomain.training.zoo import initial_state

    for label, meta in sources:
        ck = Checkpoint.of(meta, label)
        if ck.seed is None:  # a save_pretrained folder: no recorded init to compare with
            continue
        init = initial_state(ck)
        if init.keys() == state.keys() and all(torch.equal(init[k].cpu(), state[k].detach().cpu()) for k in init):
            raise StardomainError(f"the star's initial weights equal those of source {label} (seed {ck.seed}); choose another --seed")
