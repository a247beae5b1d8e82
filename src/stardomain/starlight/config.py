"""The star's settings, declared once (issue 34): each field of :class:`StarKnobs` carries its default, help, range
check and the views that show it, so the YAML ``star:`` block (experiment.config_blocks.StarConfig), StarlightConfig
and the ``stardomain star`` options (cli.star_options) are derived from one declaration. Also the star seed streams.

Torch-free: the CLI builds its options, and refuses bad values, from here before it imports anything heavy.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from stardomain import defaults
from stardomain.defaults import ALIGNMENTS, DEFAULT_MATCHING_SAMPLES, SYMMETRIES, matchers_help
from stardomain.errors import StardomainError, reject_unknown_keys
from stardomain.training.recipe import Recipe

if TYPE_CHECKING:
    import torch

STATE_KIND = "starlight-state"  # the kind of Starlight's resumable state (stardomain.training.state)
T_SAMPLING = ("uniform", "beta", "constant", "stratified")

# the views a setting may appear in: the experiment YAML's star block, StarlightConfig (what a star records), the CLI
YAML, CONFIG, CLI = "yaml", "config", "cli"
VIEWS = (YAML, CONFIG, CLI)
Check = Callable[[Any], "str | None"]  # a value -> what is wrong with it (``must be >= 1 (got 0)``), or None


def setting(
    default: Any = MISSING,
    *,
    help: str,
    check: Check | None = None,
    choices: Sequence[str] | None = None,
    views: Iterable[str] = VIEWS,
    cli: Mapping[str, Any] | None = None,
    omit_default: Iterable[str] = (),
    default_factory: Any = MISSING,
) -> Any:
    """A dataclass field that is one star setting: its ``help`` (the CLI's), its range ``check`` and ``choices``
    (checked by :func:`setting_problems` only), the ``views`` that show it, ``cli`` overrides of the generated option
    (``choices`` in the CLI's order, ``after``: the option it follows) and the views that leave it out of what they
    record while it is at its default (``omit_default``: records made before the setting keep their identity)."""
    views = frozenset(views)
    if not views <= set(VIEWS):
        raise ValueError(f"unknown views {sorted(views - set(VIEWS))}")
    metadata = {
        "help": help,
        "check": check,
        "choices": tuple(choices) if choices is not None else None,
        "views": views,
        "cli": dict(cli or {}),
        "omit_default": frozenset(omit_default),
    }
    return field(default=default, default_factory=default_factory, metadata=metadata)


def at_least(low: float, *, none: str | None = None) -> Check:
    """``value >= low`` (``none``: what a None means, where None is allowed)."""
    if none is None:
        return lambda v: None if v >= low else f"must be >= {low} (got {v})"
    return lambda v: None if v is None or v >= low else f"must be >= {low} {none} (got {v})"


def settings(cls: Any, view: str | None = None) -> list[Field[Any]]:
    """The setting fields of dataclass ``cls`` (or instance), in declaration order; ``view``: only those it shows."""
    return [f for f in fields(cls) if "views" in f.metadata and (view is None or view in f.metadata["views"])]


def default_of(f: Field[Any]) -> Any:
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def setting_problem(f: Field[Any], value: Any) -> str | None:
    """What is wrong with ``value`` for setting ``f``, worded without its name (the caller names it its own way)."""
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(choices)} (got {value!r})"
    check = f.metadata.get("check")
    return check(value) if check is not None else None


def setting_problems(obj: Any, values: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(name, problem) for every setting of ``obj`` out of its range: every range is written once, in its field."""
    out = []
    for f in settings(obj):
        problem = setting_problem(f, getattr(obj, f.name) if values is None else values[f.name])
        if problem is not None:
            out.append((f.name, problem))
    return out


def omit_unset(cls: Any, record: Mapping[str, Any], view: str) -> dict[str, Any]:
    """``record`` without the settings ``view`` leaves out while at their default (``omit_default``)."""
    unset = {f.name: default_of(f) for f in settings(cls) if view in f.metadata["omit_default"]}
    return {k: v for k, v in record.items() if not (k in unset and v == unset[k])}


def _in_unit_interval(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else f"must be in [0, 1] (got {v})"


def _beta_pair(v: Sequence[float]) -> str | None:
    beta = list(v)
    ok = len(beta) == 2 and min(beta, default=0) > 0 and all(math.isfinite(b) for b in beta)
    return None if ok else f"must be two finite positive numbers (got {beta})"


def _finite_at_least(low: float) -> Check:
    """A finite ``value >= low`` (an infinite weight or NaN would train a star of NaNs)."""
    return lambda v: f"must be a finite number (got {v})" if not math.isfinite(v) else at_least(low)(v)


@dataclass(kw_only=True)
class StarKnobs:
    """Algorithm 1's knobs, the same in all three views; field order is the CLI's option order."""

    # weight of the star model's own cross-entropy (fusion variant, Eq. 9)
    mu: float = setting(defaults.MU, help="Weight of the star's own cross-entropy (fusion variant, Eq. 9).", check=_finite_at_least(0))
    # mu > 0 only: "sum" = L~ + mu·L(θ) (stardomain's, the default: recorded stars keep their identity), "paper" =
    # (L~ + mu·L(θ)) / (1 + mu), the authors' code (defaults.FUSION_LOSS says why)
    fusion_loss: str = setting(
        defaults.FUSION_LOSS,
        help="With --mu > 0: sum = L~ + mu·L(θ⋆) (stardomain's, recorded stars unchanged), paper = (L~ + mu·L(θ⋆)) / (1 + mu) "
        "(the authors' code).",
        choices=defaults.FUSION_LOSSES,
        cli={"choices": ("sum", "paper")},
        omit_default=(CONFIG,),
    )
    t_sampling: str = setting(
        defaults.T_SAMPLING, help="How the interpolation coefficient t of each step is drawn (paper: uniform).", choices=T_SAMPLING
    )
    t_beta: tuple[float, float] = setting(defaults.T_BETA, help="Beta(a, b) for --t-sampling beta.", check=_beta_pair)
    t_constant: float = setting(defaults.T_CONSTANT, help="The fixed t of --t-sampling constant.", check=_in_unit_interval)
    pairs_per_step: int = setting(  # their losses are averaged
        defaults.PAIRS_PER_STEP, help="(source, t) pairs averaged in each step's loss.", check=at_least(1)
    )
    realign_every: int | None = setting(  # None = once per epoch (paper)
        None,
        help="Steps between re-alignments (default: once per epoch).",
        check=at_least(1, none="step, or null for once per epoch"),
    )
    matching: str = setting(
        defaults.MATCHING,
        help=f"How sources are re-aligned to the star each epoch: {matchers_help('interpolate them as they are')}",
        choices=ALIGNMENTS,
    )
    # the sources come back in the star's norm gains (transformers: stardomain.permute.symmetry)
    symmetry: str = setting(
        "permutation",
        help="After each re-alignment's permutation, also move the sources by orthogonal residual-stream or invertible "
        "per-head maps (transformers; docs/symmetry.md).",
        choices=SYMMETRIES,
        omit_default=(CONFIG,),
    )


# the knobs a YAML ``star:`` block sets under the same names (experiment.config_blocks.StarConfig extends StarKnobs)
KNOBS = tuple(f.name for f in settings(StarKnobs))


def knob_problems(c: Any, *, mus: Sequence[float] | None = None) -> list[tuple[str, str]]:
    """What is wrong with the settings of ``c`` (a StarlightConfig or a YAML star block), as (name, problem): each
    setting's range (:func:`setting_problems`), then the settings another one makes meaningless, worded by whoever
    asks (``starlight: mu ...``, ``star.mu: ...``).

    ``mus``: the μ of every star these knobs train (a StarlightConfig: its own; a YAML: the star block's and the
    fusion study's), against which a ``fusion_loss`` is checked; None leaves that check to the caller who knows them."""
    beta = list(c.t_beta)
    # an option another one makes meaningless is refused, never silently ignored (a value other than its default
    # counts as given: a YAML's identity leaves defaults out too)
    checks = [
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
    return setting_problems(c) + [(name, problem) for name, ok, problem in checks if not ok]


@dataclass(kw_only=True)
class StarlightConfig(StarKnobs):
    """Everything that defines a Starlight run besides the sources, the data and the seed: the knobs, the recipe
    and the sizes the experiment YAML takes from its eval block."""

    recipe: Recipe = setting(default_factory=Recipe, help="The star's recipe (CLI: --epochs/--lr/--weight-decay).", views=(CONFIG,))
    # size of data.matching_sample, the inputs activation matching correlates on (YAML: eval.matching_samples)
    matching_samples: int = setting(
        DEFAULT_MATCHING_SAMPLES,
        help="Size of the seeded, class-stratified sample activation matching correlates on.",
        check=at_least(1),
        views=(CONFIG, CLI),
        cli={"after": "matching"},
    )
    # samples for the final BatchNorm re-estimation (None = whole train set; YAML: eval.bn_samples)
    bn_samples: int | None = setting(
        None, help="Samples for the final BatchNorm re-estimation (None: the whole train set).", views=(CONFIG,)
    )

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
        return omit_unset(StarlightConfig, d, CONFIG)  # symmetry, fusion_loss at their defaults: stars keep their identity

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StarlightConfig":
        reject_unknown_keys("starlight", d, (f.name for f in fields(cls)))
        return cls(**dict(d))


def star_recipe(
    source_recipe: Mapping[str, Any] | None,
    dataset_name: str,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    how: str,
) -> Recipe:
    """The recipe a star of these sources trains with: the (first) source's recorded ``source_recipe`` without its
    execution options (fp32, eager: Starlight implements none), or, where the sources record none (save_pretrained
    folders), ``dataset_name``'s default recipe; ``epochs``/``lr``/``weight_decay`` replace its values where given.
    A dataset without a default recipe and no ``epochs`` is refused in one line (never 200 epochs nobody chose;
    ``how`` says where to choose them)."""
    from stardomain.training.recipe import default_recipe, has_default_recipe, no_recipe_refusal

    if source_recipe is not None:
        return Recipe.from_dict(source_recipe).without_execution().replace(epochs=epochs, lr=lr, weight_decay=weight_decay)
    if epochs is None and not has_default_recipe(dataset_name):
        raise no_recipe_refusal(dataset_name, how)
    return default_recipe(dataset_name).replace(epochs=epochs, lr=lr, weight_decay=weight_decay)


def check_step_budget(key: str, pairs_per_step: int, parameters: int) -> None:
    """The interpolated parameters one Starlight step holds (``pairs_per_step`` copies of the model's ``parameters``)
    against the values budget (:mod:`stardomain._util.budget`), refused in one line naming ``key``."""
    from stardomain._util import budget

    what = f"the interpolated parameters each star step holds ({pairs_per_step} pairs x {parameters:,} parameters)"
    budget.check(key, pairs_per_step * parameters, "values", what)


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
