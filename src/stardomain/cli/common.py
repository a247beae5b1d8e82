"""What the commands share: option decorators, KEY=VALUE parsing, and reading checkpoints and their data."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import click
import yaml

from stardomain._util import strictjson
from stardomain.defaults import DEFAULT_MATCHING_SAMPLES, matchers_help  # noqa: F401  (matchers_help: re-exported)
from stardomain.errors import StardomainError

if TYPE_CHECKING:
    from stardomain.checkpoints.meta import Checkpoint
    from stardomain.data.registry import Dataset


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``-o width=64 -o batchnorm=false`` -> {"width": 64, "batchnorm": False} (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise StardomainError(f"model option '{pair}' is not KEY=VALUE (e.g. -o width=64)")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def echo_json(obj: Any) -> None:
    click.echo(strictjson.dumps(obj, indent=2, sort_keys=True))  # NaN -> null (stardomain._util.strictjson)


device_option = click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto.")
data_root_option = click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Dataset folder (default: $STARDOMAIN_DATA, else the per-user cache); "
    "for imagefolder, the folder holding train/ and val/ (required).",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr (bars, progress and log lines).")
allow_unpermuted_option = click.option(
    "--allow-unpermuted",
    is_flag=True,
    help="Go on even when the permutation spec covers 0% of the parameters (matching would then do nothing; see `stardomain spec`).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (machine-readable).")


def _log_sinks(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """``--log tensorboard --log wandb`` or ``--log tensorboard,wandb`` -> the sink names, checked while the command
    line is parsed: an unknown name or a missing package is one line before any work (looked up, nothing imported)."""
    from stardomain.experiment.sinks import KNOWN, require

    names = [n.strip() for v in value for n in v.split(",") if n.strip()]
    bad = [n for n in names if n not in KNOWN]
    if bad:
        raise click.BadParameter(f"'{bad[0]}' is no sink; use {' or '.join(KNOWN)} (repeatable, or a comma list)", ctx, param)
    require(names, "--log")
    return tuple(n for n in KNOWN if n in names)


log_option = click.option(
    "--log",
    "log_sinks",
    multiple=True,
    metavar="tensorboard|wandb",
    callback=_log_sinks,
    help="Also log each epoch's (and unit's) numbers to TensorBoard or Weights & Biases (tensorboard/ or wandb/ in the "
    "output folder); repeatable or a comma list; needs the extra stardomain[tensorboard] / stardomain[wandb] "
    "(docs/experiments.md).",
)


def threads_option(fn: Any) -> Any:
    """--threads N: the command computes with N torch CPU threads (default 1, as `run`'s units), then restores
    the caller's count; results depend on it (sums split over threads round differently), never on the machine."""

    @functools.wraps(fn)
    def wrapper(*args: Any, threads: int, **kwargs: Any) -> Any:
        from stardomain._util.budget import check_threads

        check_threads(threads, "--threads")  # no more than this machine's CPUs (STARDOMAIN_BUDGET lifts it); no torch yet
        from stardomain.training.execution import fixed_threads

        with fixed_threads(threads):
            return fn(*args, **kwargs)

    return click.option(
        "--threads",
        type=click.IntRange(1, 4096),
        default=1,
        show_default=True,
        help="torch CPU threads to compute with; results depend on it (recorded in each checkpoint).",
    )(wrapper)


def checked_first(check: Callable[[dict[str, Any]], None]) -> Callable[[Any], Any]:
    """Run ``check`` on a command's arguments (a dict by parameter name) before anything else: right under
    ``@cli.command()``, it comes before the command's body and before :func:`threads_option`'s wrapper import torch.

    For the refusals of bad option values that need no data (issue 35: in under a second): ``check`` must import
    nothing heavy (no torch, numpy, scipy; :mod:`stardomain._util.budget` and :mod:`stardomain.defaults` are free).
    """

    def decorate(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check(kwargs)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def executor_options(fn: Any) -> Any:
    """--executor/--workers: where units run (the YAML's `executor:` block otherwise); never changes a result."""
    fn = click.option(
        "--workers",
        type=int,
        default=None,
        help="ray: workers of the local Ray instance (default: all cores); slurm: array jobs running at once.",
    )(fn)
    return click.option(
        "--executor",
        type=click.Choice(["local", "ray", "slurm"]),
        default=None,
        help="local: one unit after another here (default); ray: a Ray cluster or all cores/GPUs of this machine; "
        "slurm: job arrays through submitit.",
    )(fn)


def data_options(fn: Any) -> Any:
    """--dataset/--subset/--subset-seed: by default the data recorded in the checkpoints, overridden only explicitly."""
    fn = click.option(
        "--subset-seed",
        type=int,
        default=None,
        help="Seed of the subset (default: the recorded one; 0 with an explicit --subset on full-data models).",
    )(fn)
    fn = click.option(
        "--subset", default=None, metavar="N|all", help="Training samples to use instead of the recorded subset ('all': the whole split)."
    )(fn)
    return click.option("--dataset", "-d", default=None, help="Dataset (default: the one recorded in the checkpoints).")(fn)


MATCHING_SAMPLES_HELP = "Size of the seeded, class-stratified sample activation matching correlates on"

matching_samples_option = click.option(
    "--matching-samples",
    type=int,
    default=DEFAULT_MATCHING_SAMPLES,
    show_default=True,
    help=f"{MATCHING_SAMPLES_HELP}.",
)


def chosen_matching_samples_option(default: str) -> Callable[[Any], Any]:
    """:data:`matching_samples_option` whose default the command decides (None here: not given), ``default`` saying
    which in the help; :func:`check_matching_samples` refuses a value < 1 before torch is imported."""
    return click.option("--matching-samples", type=int, default=None, help=f"{MATCHING_SAMPLES_HELP} (default: {default}).")


def check_matching_samples(n: int | None) -> None:
    """--matching-samples, when given, is a sample size: >= 1."""
    if n is not None and n < 1:
        raise StardomainError(f"--matching-samples must be >= 1 (got {n})")


def load_data_for(
    models: Sequence[tuple[str, Mapping[str, Any]]],
    dataset: str | None,
    data_root: str | None,
    subset: str | None = None,
    subset_seed: int | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """The data the checkpoints were trained on (or the explicit override), and a record of which it is."""
    from stardomain.checkpoints.provenance import load_recorded_data, parse_subset

    return load_recorded_data(models, dataset=dataset, subset=parse_subset(subset), subset_seed=subset_seed, data_root=data_root)


def load_pair(a: str, b: str) -> tuple[dict, dict, Checkpoint, Checkpoint]:
    """Both checkpoints' states and typed metadata, refusing pairs of different architectures."""
    from stardomain._util.diff import describe_difference
    from stardomain.checkpoints import store
    from stardomain.checkpoints.meta import read_state

    state_a, meta_a = read_state(a)
    state_b, meta_b = read_state(b)
    differs = describe_difference(meta_a.arch.record, meta_b.arch.record)
    if differs:
        raise StardomainError(
            f"{a} and {b} have different architectures ({differs}); only models of one architecture can be aligned or interpolated"
        )
    model = store.build_model(meta_a.arch.record)
    store.check_fits(model, state_a, a)
    store.check_fits(model, state_b, b)
    return state_a, state_b, meta_a, meta_b


def warn_unconverged(checkpoints: Iterable[Checkpoint]) -> str:
    """Say, on stderr, when the regular models behind a number did not converge (a barrier between unconverged
    models is not the paper's quantity); returns the warning ('' when every model converged). Stars are left out:
    convergence is a property of the trained solutions a star is measured against."""
    from stardomain._util.console import notice
    from stardomain.analysis.convergence import DEFAULT_TRAIN_ACC, convergence_line

    line = convergence_line([ck.raw for ck in checkpoints if not ck.is_star], DEFAULT_TRAIN_ACC)
    if line:
        notice("warning", line)
    return line


def say_assumed(labelled: Any) -> dict[str, list[str]] | None:
    """Print (stderr, one ``note:`` line each) what is assumed for checkpoints that record no provenance
    (save_pretrained folders: :mod:`stardomain.checkpoints.pretrained`); returns it for the output's record."""
    from stardomain._util.console import notice
    from stardomain.checkpoints.provenance import assumed_by

    assumed = assumed_by(labelled)
    for line in dict.fromkeys(line for lines in assumed.values() for line in lines):
        notice("note", f"{', '.join(k for k, v in assumed.items() if line in v)}: assumed: {line}")
    return assumed or None


def reads_token_ids(model: Any) -> bool:
    """Whether a model's first layer is an ``nn.Embedding`` fed the input itself (token ids: a random float batch is
    refused), as opposed to stardomain's hf: wrappers, which quantise floats into ids themselves."""
    from torch import nn

    from stardomain.models.hf import HFClassifier

    if isinstance(model, HFClassifier):
        return False
    return any(isinstance(m, nn.Embedding) for m in model.modules())


def plain_model_option(fn: Any) -> Any:
    """--model for commands that read checkpoints: the builder of plain safetensors state dicts (no .json)."""
    return click.option(
        "--model",
        "-m",
        "plain_model",
        default=None,
        metavar="PKG.MOD:BUILD",
        help="For a plain safetensors state dict (no .json beside it): the import path of its model's builder, called "
        "with --dataset's (num_classes, in_shape).",
    )(fn)


def read_plain(paths: Any, model: str | None, dataset: str | None, data_root: str | None, own_option: bool = True) -> None:
    """For the rest of the command, read the plain state dicts among ``paths`` as checkpoints of the model ``--model``
    builds for ``--dataset`` (:mod:`stardomain.checkpoints.plain`); one line when either is missing. ``own_option``:
    --model is this helper's alone, so naming it for checkpoints that record their model is refused."""
    from stardomain.checkpoints import plain

    plains = [str(p) for p in paths if plain.is_plain(p)]
    if not plains:
        if model is not None and own_option:
            raise StardomainError(
                f"--model {model} names the model of a plain safetensors state dict; {', '.join(map(str, paths))} "
                "record their own: drop --model"
            )
        return
    if model is None:
        raise plain.refusal(plains[0])
    if dataset is None:
        raise StardomainError(
            f"{plains[0]} is a plain state dict: pass --dataset NAME, the data it was trained on (--model {model} is "
            "called with its classes and input shape)"
        )
    click.get_current_context().with_resource(plain.named_model(model, dataset, data_root))
