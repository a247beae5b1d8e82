"""Defaults named once: every front end (CLI options, YAML dataclasses, Python signatures) reads them from here.

A module of plain constants, importable without torch, so the CLI's option table costs no import time.
"""

from types import MappingProxyType

DEFAULT_POINTS = 21  # values of t on a path: the paper's grid 0, 0.05, ..., 1
MIN_POINTS = 2  # a path's t values include both end points


def points_problem(points: int) -> str | None:
    """The one check of a path's number of t values, whichever view gives it (``eval.points``, ``--points``,
    ``evaluate_pair(points=)``, ``interpolation_points``): what is wrong, or None."""
    return None if points >= MIN_POINTS else f"must be >= {MIN_POINTS} to include both end points (got {points})"


DEFAULT_MATCHING_SAMPLES = 1024  # training inputs activation matching correlates on (seeded, every class)

# learned matching (permute.learned, Git Re-Basin's straight-through estimator): its budget
REFINE_STEPS = 100  # Adam steps on the proxy
REFINE_BATCH_SIZE = 128  # training samples per step
REFINE_LR = 1e-3  # Adam's learning rate
REFINE_EVAL_SAMPLES = 1024  # held-out training samples every projection's midpoint loss is scored on

# Algorithm 1's knobs, the paper's choices: StarlightConfig and the YAML star block both default to these
T_SAMPLING = "uniform"  # t ~ U[0, 1]
T_BETA = (1.0, 1.0)  # Beta(a, b) of t_sampling: beta
T_CONSTANT = 0.5  # the fixed t of t_sampling: constant
PAIRS_PER_STEP = 1  # one (source, t) pair per step
MU = 0.0  # no fusion term (Eq. 9 sets mu > 0)
MATCHING = "weight"  # sources re-aligned by weight matching
# how Eq. 9's fusion term enters the loss (mu > 0 only): "sum" = L~ + mu*L(theta), what stardomain has always trained
# (the default: every recorded fusion star, the demo's included, keeps its identity and numbers); "paper" = the
# authors' code (aktsonthalia/starlight, utils.StarDomain): (L~ + mu*L(theta)) / (1 + mu), the same direction with a
# step 1/(1 + mu) as long (at mu = 1: half the step on every weight, weight decay's relative pull doubled)
FUSION_LOSS = "sum"
FUSION_LOSSES = ("paper", "sum")
STAR_ACC_MARGIN = 0.01  # a star this far (fraction, 0.01 = 1 pp) below its sources' mean test acc is flagged (poor star)
# the matchers that align two networks, in the one order every list of them shows (permute.align dispatches on these
# names): the API's align(method=...), the YAML's eval.align and star.matching, the CLI's align --method,
# barrier --align and star --matching read them from here
MATCHERS = MappingProxyType(
    {
        "weight": "units paired to maximise the inner product of the two models' weights (needs no data)",
        "activation": "units paired by the correlation of their activations on training inputs",
    }
)
NO_ALIGNMENT = "none"  # where an alignment is optional: the models interpolated as they are
ALIGNMENTS = (*MATCHERS, NO_ALIGNMENT)  # eval.align, star.matching, barrier --align, star --matching


def matchers_help(none: str | None = None) -> str:
    """Each matcher's one line (MATCHERS, in its order) for an option's help; ``none``: what the option's ``none``
    does, where it takes one. Here, not in the CLI, because the star's settings (starlight.config) carry their help."""
    lines = [f"{name}: {about}" for name, about in MATCHERS.items()]
    return "; ".join(lines + ([f"{NO_ALIGNMENT}: {none}"] if none else [])) + "."


# the symmetry classes an alignment may use (permute.symmetry): named once for the API, the YAML and the CLI
SYMMETRIES = ("permutation", "orthogonal", "invertible")
# the barrier every verdict is judged on (eval.metric): the ICLR version of the paper (v2) builds its findings on the
# training loss and shows test metrics in an appendix; v1's figures used the test loss. Reports show both losses.
BARRIER_METRIC = "train_loss"
BARRIER_METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")
VERDICT_METRICS_SHOWN = ("train_loss", "test_loss")  # the verdicts report.md and `run` show side by side
