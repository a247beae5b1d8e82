"""Commands about single models: ``info``, ``train`` (one model or a zoo), ``eval`` and ``spec``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import click

from stardomain._util.console import event_logger, notice, progress_config
from stardomain._util.device import resolve_device
from stardomain._util.units import pct
from stardomain.cli.app import cli
from stardomain.cli.common import (
    checked_first,
    data_root_option,
    device_option,
    echo_json,
    executor_options,
    json_option,
    load_data_for,
    log_option,
    parse_options,
    plain_model_option,
    quiet_option,
    read_plain,
    say_assumed,
    threads_option,
    warn_unconverged,
)
from stardomain.errors import StardomainError
from stardomain.training.recipe import DEFAULT_RECIPE_NAME, RECIPE_NAMES


@cli.command(short_help="versions, devices, datasets, models and LAP solvers of this installation")
def info() -> None:
    """Versions, devices, datasets, model architectures and assignment solvers of this installation."""
    from stardomain import data, models
    from stardomain._util.console import environment_lines
    from stardomain.permute.lap import available_lap_solvers

    for line in environment_lines():
        click.echo(line)
    click.echo("datasets: " + ", ".join(data.available_datasets()))
    click.echo("models:   " + ", ".join(models.available_models()))
    solvers = available_lap_solvers()
    hint = "" if "lapjv" in solvers else "  (pip install lapjv adds a ~3x faster solver; it builds from source off CPython 3.11 x86-64)"
    click.echo("matching LAP solvers: " + ", ".join(solvers) + hint)


@cli.command(short_help="train source / held-out models into a model zoo folder")
@checked_first(lambda kw: _train_checks(**kw))
@click.option("--dataset", "-d", default="digits", show_default=True, help="Dataset name (see `stardomain info`).")
@click.option("--model", "-m", "model_name", default="mlp", show_default=True, help="Architecture name (see `stardomain info`).")
@click.option(
    "--opt", "-o", "opts", multiple=True, metavar="KEY=VALUE", help="Architecture option, repeatable (e.g. -o width=64 -o depth=2)."
)
@click.option(
    "--init",
    "init",
    type=click.Choice(["paper", "kaiming", "default", "xavier"]),
    default=None,
    help="Weight init scheme (default paper: the authors' init for this architecture; README 'Initialisation').",
)
@click.option(
    "--epochs", "-e", type=int, default=None, help="Epochs (default: the dataset's recipe; required for data without one: your own)."
)
@click.option("--seed", "-s", type=int, default=None, help="Seed of a single model (default 0).")
@click.option("--n", "n_models", type=int, default=None, help="Train N models with seeds seed-start .. seed-start+N-1 into one zoo folder.")
@click.option("--seed-start", type=int, default=0, show_default=True, help="First seed of a zoo trained with --n.")
@click.option(
    "--role",
    type=click.Choice(["source", "held_out"]),
    default="source",
    show_default=True,
    help="What the models are for, recorded in each checkpoint: `star` takes only sources.",
)
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adam"]),
    default="sgd",
    show_default=True,
    help="SGD with Nesterov momentum (paper recipe) or Adam (lr 1e-3).",
)
@click.option(
    "--recipe",
    "recipe_name",
    type=click.Choice(list(RECIPE_NAMES)),
    default=DEFAULT_RECIPE_NAME,
    show_default=True,
    help="Named recipe the other options override: paper = the paper's CIFAR recipe (200 epochs) on any data (docs/recipes.md).",
)
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: the recipe's).")
@click.option("--batch-size", type=int, default=None, help="Mini-batch size (default: the recipe's).")
@click.option("--weight-decay", type=float, default=None, help="L2 weight decay (default: the recipe's).")
@click.option("--subset", type=int, default=None, help="Train on a seeded, class-stratified subset of this many training samples.")
@click.option("--subset-seed", type=int, default=None, help="Seed that draws --subset (default 0; recorded in each checkpoint).")
@click.option("--image-size", type=int, default=None, help="imagefolder only: side of the square images in pixels (default 64).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (model zoo).")
@click.option(
    "--batch-models",
    type=int,
    default=1,
    show_default=True,
    help="Train M models per pass (vmapped; same weights as one at a time). 1: one at a time.",
)
@data_root_option
@device_option
@threads_option
@executor_options
@log_option
@quiet_option
def train(
    dataset: str,
    model_name: str,
    opts: tuple[str, ...],
    init: str | None,
    epochs: int | None,
    seed: int | None,
    n_models: int | None,
    seed_start: int,
    role: str,
    optimizer: str,
    recipe_name: str,
    lr: float | None,
    batch_size: int | None,
    weight_decay: float | None,
    subset: int | None,
    subset_seed: int | None,
    image_size: int | None,
    out_dir: str,
    batch_models: int,
    data_root: str | None,
    device: str,
    executor: str | None,
    workers: int | None,
    log_sinks: tuple[str, ...],
    quiet: bool,
) -> None:
    """Train one model (--seed) or a zoo of N models (--n) and write OUT/seed-S.safetensors (+ .json).

    Members already complete with the same configuration are skipped; a folder holding a
    different run is refused.
    """
    from stardomain import data, models
    from stardomain._util.plugins import is_import_path, load_plugins
    from stardomain.checkpoints.meta import Metrics, read_checkpoint
    from stardomain.cli.app import resumable
    from stardomain.experiment.sinks import EventLog, Sinks
    from stardomain.experiment.zoo_units import zoo_executor
    from stardomain.training.zoo_run import run_zoo

    resumable(f"the finished models in {out_dir} and the last finished epoch of the one in training")
    # seeds, sizes and --n were checked before any import (_train_checks)
    load_plugins([n for n in (dataset, model_name) if is_import_path(n)])  # import paths typed here: the user named them
    subset_seed = 0 if subset_seed is None else subset_seed
    dataset, model_name = data.canonical_name(dataset), models.canonical_name(model_name)
    recipe, notes = _train_recipe(dataset, recipe_name, optimizer, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay)
    options = _train_options(opts, init)
    ds = data.load_dataset(dataset, root=data_root, subset=subset, seed=subset_seed, image_size=image_size)
    try:  # a width 0 or 2^40 fails here, on the meta device, before any model is allocated or trained
        models.build_on_meta(model_name, ds.num_classes, tuple(ds.in_shape), **options)
    except StardomainError as e:
        raise StardomainError(f"-o/--opt: {e}") from None
    seeds = [seed if seed is not None else 0] if n_models is None else list(range(seed_start, seed_start + n_models))

    def report(path: Path, reused: bool) -> None:
        m = (read_checkpoint(path).metrics or Metrics()).printable()  # null in the file: a diverged loss, "nan" here
        click.echo(
            f"{path}: test_loss={m['test_loss']:.4f} test_acc={pct(m['test_acc'])} "
            f"(train_loss={m['train_loss']:.4f} train_acc={pct(m['train_acc'])})"
            + (" reused: finished before with these settings" if reused else "")
        )

    # --log: each epoch (train_epoch: seed, epoch, losses, accuracies) and each unit of an executor to the sinks, in
    # OUT/tensorboard or OUT/wandb; every epoch's record is in each member's .json already: train keeps no events.jsonl
    identity = {"dataset": dataset, "model": model_name, "options": options, "recipe": recipe.to_dict(), "seeds": seeds, "role": role}
    with EventLog(None, Sinks({sink: True for sink in log_sinks}, out_dir, Path(out_dir).name, config=identity, where="--log")) as events:
        run_units = None
        if executor not in (None, "local") or workers is not None:  # one unit per member, on Ray or SLURM workers
            record = {"name": dataset, "root": data_root, "subset": subset, "subset_seed": subset_seed, "image_size": image_size}
            log = event_logger(quiet)
            run_units = zoo_executor(
                record,
                model_name,
                options,
                recipe,
                out_dir,
                role,
                device,
                local=ds,
                executor=executor,
                workers=workers,
                log=log,
                event=events.record,
            )
        run = run_zoo(
            ds,
            model_name,
            options,
            recipe,
            seeds,
            out_dir,
            role=role,
            device=resolve_device(device),
            progress=progress_config(quiet),
            batch_models=batch_models,
            notes=notes,
            notify=lambda line: notice("note", line),
            on_member=report,
            on_epoch=lambda s, rec: events.record("train_epoch", seed=s, **rec),
            run_units=run_units,
        )
    warn_unconverged([read_checkpoint(p) for p in run.paths])


def _train_recipe(dataset: str, recipe_name: str, optimizer: str, **typed: Any) -> tuple[Any, list[str]]:
    """The recipe ``train``'s options name (a bad value named by its option, never 200 epochs nobody chose), and the
    note a dataset without a recipe of its own gets (said just before training, once the inputs are known good)."""
    from stardomain._util import budget
    from stardomain.training.loop import generic_values, has_default_recipe, no_recipe_refusal
    from stardomain.training.recipe import named_recipe

    generic = recipe_name == DEFAULT_RECIPE_NAME and not has_default_recipe(dataset)  # --recipe paper chooses 200 epochs
    if typed["epochs"] is None and generic:
        raise no_recipe_refusal(
            dataset, "--epochs N (and --lr, --batch-size, --weight-decay where the generic SGD recipe does not suit), or --recipe paper"
        )
    try:  # before any data is read: every recipe value names its option
        recipe = named_recipe(dataset, recipe_name, optimizer).replace(**typed)
    except StardomainError as e:
        raise StardomainError(_name_option(str(e))) from None
    budget.check("--epochs", recipe.epochs, "epochs", "the epochs of each model")
    chosen = [k for k in ("lr", "batch_size", "weight_decay") if typed[k] is not None]
    return recipe, [f"{dataset} has no default recipe: {recipe.epochs} epochs (--epochs), then {generic_values(recipe, chosen)}"] * generic


def _train_options(opts: tuple[str, ...], init: str | None) -> dict[str, Any]:
    """-o KEY=VALUE options with --init among them (the same init given twice must agree)."""
    options = parse_options(opts)
    if init is not None:
        if "init" in options and options["init"] != init:
            raise StardomainError(f"--init {init} and -o init={options['init']} disagree; give the init once")
        options["init"] = init
    return options


_OPTION_OF = {"epochs": "--epochs", "lr": "--lr", "batch_size": "--batch-size", "weight_decay": "--weight-decay"}


def _name_option(message: str) -> str:
    """``recipe: lr must be ...`` -> ``--lr: must be ...``: the option the user typed, not the recipe key."""
    rest = message.removeprefix("recipe: ")
    key = rest.split(" ", 1)[0]
    if key in _OPTION_OF and rest.startswith(f"{key} must"):
        return f"{_OPTION_OF[key]}: {rest[len(key) + 1 :]}"
    return message


def _check_train_numbers(**values: int | None) -> None:
    """Seeds and sizes of ``train`` that click types as int but no recipe checks: refused before any work."""
    least = {"seed": 0, "seed_start": 0, "subset": 1, "subset_seed": 0, "image_size": 1, "batch_models": 1}
    for key, value in values.items():
        if value is not None and value < least[key]:
            raise StardomainError(f"--{key.replace('_', '-')} must be >= {least[key]} (got {value})")


def _train_checks(
    seed: int | None,
    n_models: int | None,
    seed_start: int,
    subset: int | None,
    subset_seed: int | None,
    image_size: int | None,
    batch_models: int,
    epochs: int | None,
    optimizer: str,
    lr: float | None,
    batch_size: int | None,
    weight_decay: float | None,
    executor: str | None,
    workers: int | None,
    **_: object,
) -> None:
    """``train``'s option values that need no data, refused before torch is imported (:func:`checked_first`); the
    recipe values typed are checked here too (the dataset's own recipe, in the body: naming it imports the data)."""
    from stardomain._util import budget
    from stardomain.training.recipe import Recipe

    if seed is not None and n_models is not None:
        raise StardomainError("give either --seed (one model) or --n with --seed-start (a zoo), not both")
    if n_models is not None and n_models < 1:
        raise StardomainError(f"--n must be >= 1 (got {n_models})")
    _check_train_numbers(
        seed=seed, seed_start=seed_start, subset=subset, subset_seed=subset_seed, image_size=image_size, batch_models=batch_models
    )
    if subset_seed is not None and subset is None:
        raise StardomainError("--subset-seed chooses which --subset is drawn; give --subset N too, or drop --subset-seed")
    if batch_models > 1 and (executor not in (None, "local") or workers is not None):
        raise StardomainError("--batch-models trains in this process; drop it, or drop --executor/--workers")
    try:  # each value names its option
        Recipe(optimizer=optimizer).replace(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay)
    except StardomainError as e:
        raise StardomainError(_name_option(str(e))) from None
    if epochs is not None:
        budget.check("--epochs", epochs, "epochs", "the epochs of each model")
    budget.check("--n", n_models or 1, "units", "the models to train")


@cli.command("eval", short_help="test loss and accuracy of a checkpoint")
@click.argument("checkpoint", type=click.Path())
@click.option("--dataset", "-d", default=None, help="Dataset (default: the one the model was trained on).")
@plain_model_option
@json_option
@data_root_option
@device_option
@threads_option
def eval_cmd(checkpoint: str, dataset: str | None, plain_model: str | None, as_json: bool, data_root: str | None, device: str) -> None:
    """Test loss and accuracy of CHECKPOINT (a .safetensors file, or a save_pretrained folder with --dataset, or a
    plain state dict with --model pkg.mod:build and --dataset)."""
    from stardomain.checkpoints import store
    from stardomain.checkpoints.meta import Checkpoint
    from stardomain.training.loop import evaluate

    read_plain([checkpoint], plain_model, dataset, data_root)
    dev = resolve_device(device)
    model = store.load(checkpoint, device=dev)
    meta = Checkpoint.of(cast("dict[str, Any]", model.meta), checkpoint)  # the checkpoint's metadata, set by store.load
    assumed = say_assumed([meta.labelled(str(checkpoint))])
    ds, data_info = load_data_for([meta.labelled(str(checkpoint))], dataset, data_root)
    loss, acc = evaluate(model, ds.test_x, ds.test_y, device=dev)
    result = {
        "checkpoint": str(checkpoint),
        "dataset": ds.name,
        "test_loss": loss,
        "test_acc": acc,
        "n": len(ds.test_y),
        "data": data_info,
        "role": meta.role,
        "seed": meta.seed,
        **({"assumed": assumed} if assumed else {}),
    }
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{checkpoint} on {ds.name} test: loss={loss:.4f} acc={pct(acc)} (n={len(ds.test_y)})")
        if assumed:
            from stardomain.checkpoints.provenance import data_line

            click.echo(data_line(data_info))


def load_example_input(path: str) -> Any:
    """A batch to trace on, from a .npy array (no pickles) or a .safetensors file with exactly one tensor."""
    from pathlib import Path

    import torch

    p = Path(path)
    if not p.is_file():
        raise StardomainError(f"--example-input {path}: no such file; give a .npy array or a .safetensors file with one tensor")
    try:
        if p.suffix == ".npy":
            import numpy as np

            return torch.from_numpy(np.load(p, allow_pickle=False))
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(p))
            if len(tensors) != 1:
                raise StardomainError(
                    f"--example-input {path}: holds {len(tensors)} tensors ({', '.join(sorted(tensors)) or 'none'}); "
                    "save exactly one, the batch to trace on"
                )
            return next(iter(tensors.values()))
    except StardomainError:
        raise
    except Exception as e:  # a corrupt or foreign file: say which, in one line
        raise StardomainError(
            f"--example-input {path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "give a .npy array or a .safetensors file with one tensor"
        ) from None
    raise StardomainError(f"--example-input {path}: unknown format {p.suffix or '(no suffix)'}; give a .npy or .safetensors file")


@cli.command("spec", short_help="how a model's hidden units can be permuted (groups, coverage, a check)")
@click.argument("target")
@click.option("--option", "-o", "opts", multiple=True, metavar="KEY=VALUE", help="Model option (for a name or import path).")
@click.option("--in-shape", default=None, help="One sample's shape, e.g. 1,28,28 or 20 (default 3,32,32; a checkpoint records its own).")
@click.option("--classes", "num_classes", type=int, default=10, show_default=True, help="Number of classes (for a name or import path).")
@click.option(
    "--example-input",
    "example_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Trace on this batch instead of random floats: a .npy array or a .safetensors file holding one tensor "
    "(e.g. integer token ids for a model that starts with nn.Embedding).",
)
@plain_model_option
@click.option("--dataset", "-d", default=None, help="For a plain state dict with --model: the data it was trained on.")
@json_option
def spec_cmd(
    target: str,
    opts: tuple[str, ...],
    in_shape: str | None,
    num_classes: int,
    example_path: str | None,
    plain_model: str | None,
    dataset: str | None,
    as_json: bool,
) -> None:
    """How TARGET's hidden units can be permuted: a checkpoint, a model name, or pkg.module:build.

    Lists the permutation groups (sizes, member tensors), the share of parameters covered,
    every unpermuted layer with the reason, and whether a random permutation keeps the
    function (max |logit difference|). Start here with your own architecture.
    """
    from stardomain.permute.spec_report import format_report, model_for_spec, spec_report

    read_plain([target], plain_model, dataset, None)
    if dataset is not None and plain_model is None:
        raise StardomainError(f"--dataset names the data of a plain state dict read with --model; {target} needs neither")
    example = load_example_input(example_path) if example_path else None
    if example is not None and (example.dim() == 0 or example.numel() == 0):  # before any model is built
        raise StardomainError(
            f"--example-input {example_path}: an array of shape {tuple(example.shape)} holds no sample, so the check "
            "would compare nothing; save a batch of at least one sample"
        )
    model = model_for_spec(target, parse_options(opts), in_shape, num_classes)
    meta = getattr(model, "meta", None)
    assumed = say_assumed([(target, meta)]) if isinstance(meta, dict) else None
    report = spec_report(model, example)
    if assumed:
        report["assumed"] = assumed[target]
    if as_json:
        echo_json(report)
    else:
        click.echo(format_report(report))
