"""The ``stardomain`` command line: one command per pipeline stage, plus ``run`` and ``demo``.

Every user mistake surfaces as one line on stderr (``error: ...``) and exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from stardomain.console import event_logger, progress_config
from stardomain.device import resolve_device
from stardomain.errors import StardomainError


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
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


device_option = click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, or auto.")
data_root_option = click.option("--data-root", type=click.Path(file_okay=False), default=None,
                                help="Dataset folder (default: $STARDOMAIN_DATA, else the per-user cache); "
                                     "for imagefolder, the folder holding train/ and val/ (required).")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr (bars, progress and log lines).")
allow_unpermuted_option = click.option("--allow-unpermuted", is_flag=True,
                                        help="Go on even when the permutation spec covers 0% of the parameters "
                                             "(matching would then do nothing; see `stardomain spec`).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (machine-readable).")


def executor_options(fn: Any) -> Any:
    """--executor/--workers: where units run (the YAML's `executor:` block otherwise); never changes a result."""
    fn = click.option("--workers", type=int, default=None,
                      help="ray: workers of the local Ray instance (default: all cores); slurm: array jobs running at once.")(fn)
    return click.option("--executor", type=click.Choice(["local", "ray", "slurm"]), default=None,
                        help="local: one unit after another here (default); ray: a Ray cluster or all cores/GPUs of this machine; "
                             "slurm: job arrays through submitit.")(fn)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from stardomain.console import version_message

        click.echo(version_message())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the stardomain, torch and Python versions and exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr, for every command (results still print).")
@click.option("--log-json", is_flag=True, help="Progress and log events as JSON lines on stderr (for log collectors).")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE first (repeatable): it may register models and datasets, or define the factory a "
                   "checkpoint names. Nothing is imported because a checkpoint says so.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, log_json: bool, plugins: tuple[str, ...]) -> None:
    """stardomain: test the star domain conjecture on real networks.

    Progress goes to stderr: a bar on a terminal, plain lines (every epoch and at least
    every 30 s) when stderr is a file, as under SLURM or nohup.

    \b
    Pipeline (each stage is a command; `run` does them all from one YAML file):
      spec     how a model's hidden units can be permuted (groups, coverage, a check)
      train    train source / held-out models into a model zoo folder
      eval     test loss and accuracy of a checkpoint
      align    permute a model into another's basin (weight or activation matching)
      barrier  loss/accuracy along the linear path between two models, and its barrier
      star     Starlight (Algorithm 1): train a star model from a zoo of sources
      bma      Bayesian model averaging over the star domain vs a deep ensemble
      run      a whole experiment from one YAML file (resumable)
      demo     the whole pipeline on the embedded digits dataset, on a CPU
    """
    from stardomain.plugins import load_plugins

    load_plugins(plugins)
    ctx.obj = {"quiet": quiet, "log_json": log_json, "plugins": list(plugins)}


@cli.command()
def info() -> None:
    """Versions, devices, datasets, model architectures and assignment solvers of this installation."""
    from stardomain import data, models
    from stardomain.console import environment_lines
    from stardomain.permute.lap import available_lap_solvers

    for line in environment_lines():
        click.echo(line)
    click.echo("datasets: " + ", ".join(data.available_datasets()))
    click.echo("models:   " + ", ".join(models.available_models()))
    solvers = available_lap_solvers()
    hint = "" if "lapjv" in solvers else "  (pip install lapjv adds a ~3x faster solver; it builds from source off CPython 3.11 x86-64)"
    click.echo("matching LAP solvers: " + ", ".join(solvers) + hint)


@cli.command()
@click.option("--dataset", "-d", default="digits", show_default=True, help="Dataset name (see `stardomain info`).")
@click.option("--model", "-m", "model_name", default="mlp", show_default=True, help="Architecture name (see `stardomain info`).")
@click.option("--opt", "-o", "opts", multiple=True, metavar="KEY=VALUE", help="Architecture option, repeatable (e.g. -o width=64 -o depth=2).")
@click.option("--epochs", "-e", type=int, default=None, help="Epochs (default: the dataset's recipe).")
@click.option("--seed", "-s", type=int, default=None, help="Seed of a single model (default 0).")
@click.option("--n", "n_models", type=int, default=None, help="Train N models with seeds seed-start .. seed-start+N-1 into one zoo folder.")
@click.option("--seed-start", type=int, default=0, show_default=True, help="First seed of a zoo trained with --n.")
@click.option("--role", type=click.Choice(["source", "held_out"]), default="source", show_default=True,
              help="What the models are for, recorded in each checkpoint: `star` takes only sources.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True,
              help="SGD with Nesterov momentum (paper recipe) or Adam (lr 1e-3).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: the recipe's).")
@click.option("--batch-size", type=int, default=None, help="Mini-batch size (default: the recipe's).")
@click.option("--weight-decay", type=float, default=None, help="L2 weight decay (default: the recipe's).")
@click.option("--subset", type=int, default=None, help="Train on a seeded, class-stratified subset of this many training samples.")
@click.option("--subset-seed", type=int, default=None, help="Seed that draws --subset (default 0; recorded in each checkpoint).")
@click.option("--image-size", type=int, default=None, help="imagefolder only: side of the square images in pixels (default 64).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (model zoo).")
@click.option("--batch-models", type=int, default=1, show_default=True,
              help="Train M models per pass (vmapped; same weights as one at a time). 1: one at a time.")
@data_root_option
@device_option
@executor_options
@quiet_option
def train(dataset: str, model_name: str, opts: tuple[str, ...], epochs: int | None, seed: int | None, n_models: int | None,
          seed_start: int, role: str, optimizer: str, lr: float | None, batch_size: int | None, weight_decay: float | None,
          subset: int | None, subset_seed: int | None, image_size: int | None, out_dir: str, batch_models: int, data_root: str | None,
          device: str, executor: str | None, workers: int | None, quiet: bool) -> None:
    """Train one model (--seed) or a zoo of N models (--n) and write OUT/seed-S.safetensors (+ .json).

    Members already complete with the same configuration are skipped; a folder holding a
    different run is refused.
    """
    from stardomain import data, models, zoo
    from stardomain.train import default_recipe

    if seed is not None and n_models is not None:
        raise StardomainError("give either --seed (one model) or --n with --seed-start (a zoo), not both")
    if n_models is not None and n_models < 1:
        raise StardomainError(f"--n must be >= 1 (got {n_models})")
    from stardomain.plugins import is_import_path, load_plugins

    load_plugins([n for n in (dataset, model_name) if is_import_path(n)])  # import paths typed here: the user named them
    if subset_seed is not None and subset is None:
        raise StardomainError("--subset-seed chooses which --subset is drawn; give --subset N too, or drop --subset-seed")
    subset_seed = 0 if subset_seed is None else subset_seed
    dataset, model_name = data.canonical_name(dataset), models.canonical_name(model_name)
    ds = data.load_dataset(dataset, root=data_root, subset=subset, seed=subset_seed, image_size=image_size)
    recipe = default_recipe(dataset, optimizer).replace(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay)
    seeds = [seed if seed is not None else 0] if n_models is None else list(range(seed_start, seed_start + n_models))
    dev = resolve_device(device)
    options = parse_options(opts)
    if batch_models < 1:
        raise StardomainError(f"--batch-models must be >= 1 (got {batch_models})")

    def report(path: Path) -> None:
        m = json.loads(Path(path).with_suffix(".json").read_text())["metrics"]
        click.echo(f"{path}: test_loss={m['test_loss']:.4f} test_acc={100 * m['test_acc']:.2f}%")

    if executor not in (None, "local") or workers is not None:  # one unit per member, on Ray or SLURM workers
        from stardomain.experiment.executors import ExecutorConfig, check_available, run_plan, with_overrides
        from stardomain.experiment.units import ZooJob

        ex = with_overrides(ExecutorConfig(), executor, workers)
        check_available(ex)
        if batch_models > 1:
            raise StardomainError("--batch-models trains in this process; drop it, or drop --executor/--workers")
        job = ZooJob({"name": dataset, "root": data_root, "subset": subset, "subset_seed": subset_seed, "image_size": image_size},
                     model_name, options, recipe.to_dict(), out_dir, role, device, local=ds)
        run_plan(job.plan(seeds), job, out_dir, ex, log=event_logger(quiet))
        for s in seeds:
            report(zoo.member_path(out_dir, s))
        return
    zoo.train_zoo(ds, model_name, options, recipe, seeds, out_dir, device=dev, progress=progress_config(quiet), role=role,
                  on_member=report, batch_models=batch_models, notify=lambda line: click.echo(f"note: {line}", err=True))


def data_options(fn: Any) -> Any:
    """--dataset/--subset/--subset-seed: by default the data recorded in the checkpoints, overridden only explicitly."""
    fn = click.option("--subset-seed", type=int, default=None,
                      help="Seed of the subset (default: the recorded one; 0 with an explicit --subset on full-data models).")(fn)
    fn = click.option("--subset", default=None, metavar="N|all",
                      help="Training samples to use instead of the recorded subset ('all': the whole split).")(fn)
    return click.option("--dataset", "-d", default=None, help="Dataset (default: the one recorded in the checkpoints).")(fn)


matching_samples_option = click.option("--matching-samples", type=int, default=1024, show_default=True,
                                       help="Size of the seeded, class-stratified sample activation matching correlates on.")


def load_data_for(models: list[tuple[str, dict[str, Any]]], dataset: str | None, data_root: str | None,
                  subset: str | None = None, subset_seed: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The data the checkpoints were trained on (or the explicit override), and a record of which it is."""
    from stardomain.provenance import load_recorded_data, parse_subset

    return load_recorded_data(models, dataset=dataset, subset=parse_subset(subset), subset_seed=subset_seed, data_root=data_root)


def matching_inputs(ds: Any, n: int, device: Any) -> Any:
    """The one activation-matching sample every command uses (seeded, every class)."""
    from stardomain.data import matching_sample

    if n < 1:
        raise StardomainError(f"--matching-samples must be >= 1 (got {n})")
    return matching_sample(ds, n).to(device)


@cli.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--dataset", "-d", default=None, help="Dataset (default: the one the model was trained on).")
@json_option
@data_root_option
@device_option
def eval_cmd(checkpoint: str, dataset: str | None, as_json: bool, data_root: str | None, device: str) -> None:
    """Test loss and accuracy of CHECKPOINT (a .safetensors file)."""
    from stardomain import store
    from stardomain.train import evaluate

    dev = resolve_device(device)
    model = store.load(checkpoint, device=dev)
    ds, data_info = load_data_for([(str(checkpoint), model.meta)], dataset, data_root)
    loss, acc = evaluate(model, ds.test_x, ds.test_y, device=dev)
    result = {"checkpoint": str(checkpoint), "dataset": ds.name, "test_loss": loss, "test_acc": acc, "n": len(ds.test_y),
              "data": data_info, "role": model.meta.get("role"), "seed": model.meta.get("seed")}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{checkpoint} on {ds.name} test: loss={loss:.4f} acc={100 * acc:.2f}% (n={len(ds.test_y)})")


def _load_pair(a: str, b: str) -> tuple[dict, dict, dict, dict]:
    """Both checkpoints' states and metadata, refusing pairs of different architectures."""
    from stardomain import store

    from stardomain.diff import describe_difference

    state_a, meta_a = store.load_state(a)
    state_b, meta_b = store.load_state(b)
    differs = describe_difference(meta_a["arch"], meta_b["arch"])
    if differs:
        raise StardomainError(f"{a} and {b} have different architectures ({differs}); "
                              "only models of one architecture can be aligned or interpolated")
    model = store.build_model(meta_a["arch"])
    store.check_fits(model, state_a, a)
    store.check_fits(model, state_b, b)
    return state_a, state_b, meta_a, meta_b


@cli.command()
@click.argument("model_a", type=click.Path(dir_okay=False))
@click.argument("model_b", type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(["weight", "activation"]), default="weight", show_default=True,
              help="Match weights directly, or activations on training data.")
@data_options
@matching_samples_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the coordinate-descent order.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write B permuted into A's basin here (default: only print the distances).")
@allow_unpermuted_option
@json_option
@data_root_option
@device_option
def align(model_a: str, model_b: str, method: str, dataset: str | None, subset: str | None, subset_seed: int | None,
          matching_samples: int, seed: int, out_path: str | None, allow_unpermuted: bool, as_json: bool, data_root: str | None,
          device: str) -> None:
    """Permute MODEL_B into MODEL_A's basin (same function, new unit order) and report the ℓ2 distance."""
    from stardomain import store
    from stardomain.permute import align as align_states, l2_distance, trace_spec

    dev = resolve_device(device)
    state_a, state_b, meta, meta_b = _load_pair(model_a, model_b)
    model = store.build_model(meta["arch"]).to(dev)
    keys = [k for k, _ in model.named_parameters()]
    x, data_info = None, None
    if method == "activation":
        ds, data_info = load_data_for([(model_a, meta), (model_b, meta_b)], dataset, data_root, subset, subset_seed)
        x = matching_inputs(ds, matching_samples, dev)
    spec = trace_spec(model)
    before = l2_distance(state_a, state_b, keys)
    aligned, match = align_states({k: v.to(dev) for k, v in state_a.items()}, {k: v.to(dev) for k, v in state_b.items()}, spec=spec,
                                  method=method, model=model, x=x, seed=seed, allow_unpermuted=allow_unpermuted)
    after = l2_distance(state_a, aligned, keys)
    meta_out = {**meta_b, "aligned_to": {"path": str(model_a), "sha256": store.content_hash(model_a), "method": method,
                                         "objective": float(match.objective), "data": data_info}}
    meta_out.pop("sha256", None)
    if out_path:
        store.save(out_path, aligned, meta_out)
    result = {"l2_before": before, "l2_after": after, "objective": float(match.objective), "method": method,
              "out": str(out_path) if out_path else None, "groups": len(spec.groups), "data": data_info,
              "spec_coverage": match.coverage, "function_check": match.check, "function_gap": match.function_gap}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"aligned {model_b} to {model_a} by {method} matching ({len(spec.groups)} permutation groups covering "
                   f"{100 * (match.coverage or 0):.1f}% of parameters; function check {match.check}): "
                   f"l2 {before:.4f} -> {after:.4f}; " + (f"wrote {out_path}" if out_path else "not saved (pass --out to keep it)"))
        if data_info is not None:
            from stardomain.provenance import data_line

            click.echo(data_line(data_info))


@cli.command()
@click.argument("model_a", type=click.Path(dir_okay=False))
@click.argument("model_b", type=click.Path(dir_okay=False))
@data_options
@click.option("--align", "align_method", type=click.Choice(["none", "weight", "activation"]), default="none", show_default=True,
              help="Permute B into A's basin first.")
@matching_samples_option
@click.option("--points", type=int, default=21, show_default=True, help="Values of t in [0, 1].")
@click.option("--bn-samples", type=int, default=None, help="Training samples for BatchNorm re-estimation at each t (default: all).")
@click.option("--bn", "bn_protocol", type=click.Choice(["reset", "interpolate"]), default="reset", show_default=True,
              help="BatchNorm at each t: re-estimate the statistics (the paper's protocol) or keep their interpolation (ablation).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Write the curve, barriers and distances as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a PNG of loss and accuracy along t.")
@data_root_option
@device_option
@quiet_option
def barrier(model_a: str, model_b: str, dataset: str | None, subset: str | None, subset_seed: int | None, align_method: str,
            matching_samples: int, points: int, bn_samples: int | None, bn_protocol: str, out_path: str | None,
            plot_path: str | None, data_root: str | None, device: str, quiet: bool) -> None:
    """Loss and accuracy along (1-t)·A + t·B on train and test data, and the barriers (Eq. 1-2)."""
    from stardomain import store
    from stardomain.barrier import barriers, curve
    from stardomain.permute import align as align_states, l2_distance, trace_spec
    from stardomain.provenance import data_line

    if points < 2:
        raise StardomainError(f"--points must be >= 2 (got {points})")
    dev = resolve_device(device)
    state_a, state_b, meta, meta_b = _load_pair(model_a, model_b)
    ds, data_info = load_data_for([(model_a, meta), (model_b, meta_b)], dataset, data_root, subset, subset_seed)
    model = store.build_model(meta["arch"]).to(dev)
    keys = [k for k, _ in model.named_parameters()]
    result: dict[str, Any] = {"a": str(model_a), "b": str(model_b), "dataset": ds.name, "data": data_info, "align": align_method,
                              "l2": l2_distance(state_a, state_b, keys)}
    if align_method != "none":
        x = matching_inputs(ds, matching_samples, dev)
        state_b, match = align_states(state_a, state_b, spec=trace_spec(model), method=align_method, model=model, x=x, seed=0)
        result["match_objective"] = float(match.objective)
        result["spec_coverage"], result["function_check"] = match.coverage, match.check
    result["l2_aligned"] = l2_distance(state_a, state_b, keys)
    c = curve(model, state_a, state_b, ds, num_points=points, bn_samples=bn_samples, device=dev, progress=progress_config(quiet),
              bn=bn_protocol)
    result["curve"] = c.to_dict()
    result["barriers"] = barriers(c)
    if out_path:
        store.atomic_write_json(Path(out_path), result)
    if plot_path:
        from stardomain.plots import plot_loss_acc

        plot_loss_acc({f"{Path(model_a).stem} – {Path(model_b).stem}": [c]}, Path(plot_path))
    b = result["barriers"]
    click.echo(f"barriers (align={align_method}): test loss {b['test_loss']:.4f}, test acc {100 * b['test_acc']:.2f} pp, "
               f"train loss {b['train_loss']:.4f}, train acc {100 * b['train_acc']:.2f} pp; "
               f"l2 {result['l2']:.3f} -> {result['l2_aligned']:.3f}"
               + (f"; permutation spec covers {100 * result['spec_coverage']:.1f}% of parameters, function check "
                  f"{result['function_check']}" if result.get("spec_coverage") is not None else ""))
    click.echo(f"{data_line(data_info)}; train n={len(ds.train_y)}, test n={len(ds.test_y)}")


def _repeat_path(out_path: str | Path, r: int) -> Path:
    """Where repeat ``r`` of ``star --repeats`` goes: star.safetensors -> star-r0.safetensors, ..."""
    out = Path(out_path)
    return out.with_name(f"{out.stem}-r{r}{out.suffix or '.safetensors'}")


@cli.command()
@click.option("--sources", "sources_dir", required=True, type=click.Path(file_okay=False),
              help="Model zoo folder: its source models (direct children, role source) are Z.")
@click.option("--n-sources", type=int, default=None, help="Use the K lowest-seed sources (default: all).")
@data_options
@click.option("--model", "-m", "model_name", default=None, help="Architecture (default and only allowed value: the sources').")
@click.option("--epochs", "-e", type=int, default=None, help="Epochs (default: the sources' recipe).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: the sources' recipe).")
@click.option("--seed", "-s", type=int, default=0, show_default=True,
              help="Star seed; the star's init and batch order come from its own stream (starlight.star_seed), never a source's.")
@click.option("--mu", type=float, default=0.0, show_default=True, help="Weight of the star's own cross-entropy (fusion variant, Eq. 9).")
@click.option("--t-sampling", type=click.Choice(["uniform", "beta", "constant", "stratified"]), default="uniform", show_default=True,
              help="How the interpolation coefficient t of each step is drawn (paper: uniform).")
@click.option("--t-beta", type=(float, float), default=(1.0, 1.0), show_default=True, help="Beta(a, b) for --t-sampling beta.")
@click.option("--t-constant", type=float, default=0.5, show_default=True, help="The fixed t of --t-sampling constant.")
@click.option("--pairs-per-step", type=int, default=1, show_default=True,
              help="(source, t) pairs averaged in each step's loss.")
@click.option("--realign-every", type=int, default=None, help="Steps between re-alignments (default: once per epoch).")
@click.option("--matching", type=click.Choice(["weight", "activation", "none"]), default="weight", show_default=True,
              help="How sources are re-aligned to the star each epoch (none: interpolate them as they are).")
@matching_samples_option
@click.option("--init", "init_path", type=click.Path(dir_okay=False), default=None, help="Start from this checkpoint instead of a fresh init.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Star model checkpoint (.safetensors).")
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Train K stars from the same sources, each from its own recorded seed: OUT-r0 .. OUT-r{K-1} (r0 is the star of --seed).")
@click.option("--force", is_flag=True, help="Replace an existing star model at --out (trained afresh; the old one stays until the new one is written).")
@allow_unpermuted_option
@data_root_option
@device_option
@quiet_option
def star(sources_dir: str, n_sources: int | None, dataset: str | None, subset: str | None, subset_seed: int | None,
         model_name: str | None, epochs: int | None, lr: float | None, seed: int, mu: float, t_sampling: str,
         t_beta: tuple[float, float], t_constant: float, pairs_per_step: int, realign_every: int | None, matching: str,
         matching_samples: int, init_path: str | None, out_path: str, repeats: int, force: bool, allow_unpermuted: bool,
         data_root: str | None, device: str, quiet: bool) -> None:
    """Starlight (Algorithm 1): train a star model linearly connected to every source (modulo permutations).

    One star's barriers vary markedly with its seed, so ``--repeats K`` trains K of them (seeds
    from the star stream, recorded) for figures given over stars as well as over pairs.
    """
    import hashlib
    import os

    from stardomain import models, store, zoo
    from stardomain.provenance import data_line
    from stardomain.starlight import Starlight, StarlightConfig, check_not_source_init, repeat_seed
    from stardomain.train import Recipe, final_metrics, seed_everything

    if repeats < 1:
        raise StardomainError(f"--repeats must be >= 1 (got {repeats})")
    outs = [Path(out_path)] if repeats == 1 else [_repeat_path(out_path, r) for r in range(repeats)]
    for out in outs:
        if store.is_complete(out) and not force:
            raise StardomainError(f"{out} already holds a star model; pass --force to replace it, or choose another --out")
    members = zoo.load_zoo(sources_dir, limit=n_sources)
    if n_sources is not None and len(members) < n_sources:
        raise StardomainError(f"--n-sources {n_sources} but {sources_dir} holds only {len(members)} complete source models")
    labelled = [(str(p), m) for p, _, m in members]
    meta0 = members[0][2]
    arch = meta0["arch"]
    if model_name is not None and models.canonical_name(model_name) != arch["name"]:
        raise StardomainError(f"--model {model_name} differs from the sources' architecture {arch['name']}; a star model must share it")
    ds, data_info = load_data_for(labelled, dataset, data_root, subset, subset_seed)
    recipe = Recipe.from_dict(meta0["recipe"]).without_execution().replace(epochs=epochs, lr=lr)  # stars train in fp32
    config = StarlightConfig(recipe=recipe, t_sampling=t_sampling, t_beta=t_beta, t_constant=t_constant, pairs_per_step=pairs_per_step,
                             mu=mu, realign_every=realign_every, matching=matching, matching_samples=matching_samples)
    dev = resolve_device(device)
    for r, out in enumerate(outs):
        own_seed = repeat_seed(seed, r)  # repeat r's own stream; r0 is the single star of --seed
        seed_everything(own_seed)
        model = store.build_model(arch)
        for p, s, _ in members:
            store.check_fits(model, s, p)
        if init_path:
            model.load_state_dict(store.load_state(init_path)[0])
        else:
            check_not_source_init(model.state_dict(), labelled)
        star_dir = out.resolve().parent
        sources = [{"path": os.path.relpath(p.resolve(), star_dir), "sha256": m["sha256"], "seed": m["seed"]} for p, _, m in members]
        ident = json.dumps({"sources": sources, "seed": own_seed, "config": config.to_dict(), "data": ds.record(), "init": init_path},
                           sort_keys=True, default=str)
        # the resume state is named by what it belongs to: a re-run with other sources or settings never picks it up
        resume = out.with_name(f".{out.stem}.{hashlib.sha256(ident.encode()).hexdigest()[:12]}.state.safetensors")
        runner = Starlight(model, [s for _, s, _ in members], ds, config, seed=own_seed, device=dev,
                           allow_unpermuted=allow_unpermuted)
        result = runner.fit(progress=progress_config(quiet), resume_path=resume)
        metrics = final_metrics(runner.model, ds, device=dev)
        # "seed" is what built it, as in every checkpoint; "seed_option" the --seed it was drawn from (starlight.star_seed)
        meta = {"kind": "star", "role": "star", "arch": arch, "dataset": ds.name, "data": ds.record(), "seed": own_seed, "seed_option": seed,
                "repeat": r, "repeats": repeats,
                "starlight": config.to_dict(), "history": result.history, "sources": sources, "metrics": metrics,
                "init": str(init_path) if init_path else "fresh",
                "spec_coverage": runner.spec.summary()["covered_share"] if runner.spec is not None else None}
        store.save(out, runner.model, meta)
        which = f" {r + 1}/{repeats}" if repeats > 1 else ""
        click.echo(f"star model{which} from {len(members)} sources ({zoo.seed_list(s['seed'] for s in sources)} of {sources_dir}), "
                   f"star seed {own_seed} (--seed {seed}): test_loss={metrics['test_loss']:.4f} test_acc={100 * metrics['test_acc']:.2f}%; "
                   + (f"permutation spec covers {100 * meta['spec_coverage']:.1f}% of parameters; " if meta["spec_coverage"] is not None else "")
                   + f"wrote {out}")
    click.echo(data_line(data_info))


@cli.command()
@click.option("--star", "star_path", required=True, type=click.Path(dir_okay=False), help="Star model checkpoint.")
@click.option("--sources", "sources_dir", default=None, type=click.Path(file_okay=False),
              help="Folder to find the star's own sources in when they moved (found by SHA-256).")
@click.option("--other-sources", "other_dir", default=None, type=click.Path(file_okay=False),
              help="Use this zoo's sources instead of the star's own (recorded in the output).")
@data_options
@click.option("--max-samples", type=int, default=20, show_default=True, help="Largest K (posterior samples / ensemble members).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the posterior samples (source index n, t).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="JSON with every metric for K = 1..max.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="PNG of AUROC/ECE/accuracy vs K.")
@data_root_option
@device_option
def bma(star_path: str, sources_dir: str | None, other_dir: str | None, dataset: str | None, subset: str | None,
        subset_seed: int | None, max_samples: int, seed: int, out_path: str | None, plot_path: str | None,
        data_root: str | None, device: str) -> None:
    """Bayesian model averaging over the star domain versus a deep ensemble of the same sources (paper Sec. 4.1).

    By default the sources are exactly the ones the star was trained on (paths and SHA-256 in its metadata).
    """
    from stardomain import bma as bma_mod, store, zoo
    from stardomain.diff import describe_difference
    from stardomain.permute import align as align_states, trace_spec
    from stardomain.provenance import data_line, star_sources

    if max_samples < 1:
        raise StardomainError(f"--max-samples must be >= 1 (got {max_samples})")
    if sources_dir is not None and other_dir is not None:
        raise StardomainError("give --sources (where the star's own sources are) or --other-sources (another set), not both")
    dev = resolve_device(device)
    star_state, meta = store.load_state(star_path)
    if meta.get("kind") != "star":
        raise StardomainError(f"{star_path} is not a star model (kind {meta.get('kind', 'regular')}); pass a checkpoint written by `stardomain star`")
    if other_dir is not None:
        members = [(p, m) for p, _, m in zoo.load_zoo(other_dir)]
    else:
        members = [(p, store.read_metadata(p)) for p in star_sources(star_path, meta, sources_dir)]
    differs = describe_difference(members[0][1]["arch"], meta["arch"])
    if differs:
        raise StardomainError(f"the sources ({members[0][0]}) and the star {star_path} have different architectures ({differs}: sources vs star)")
    states = [store.load_state(p)[0] for p, _ in members]
    ds, data_info = load_data_for([(star_path, meta)] + [(str(p), m) for p, m in members], dataset, data_root, subset, subset_seed)
    model = store.build_model(meta["arch"]).to(dev)
    store.check_fits(model, star_state, star_path)
    for (p, _), s in zip(members, states):
        store.check_fits(model, s, p)
    matching = meta.get("starlight", {}).get("matching", "weight")
    if matching == "none":  # the star was trained towards the sources as they are
        aligned = states
    else:
        spec = trace_spec(model)
        x = matching_inputs(ds, int(meta.get("starlight", {}).get("matching_samples", 1024)), dev) if matching == "activation" else None
        aligned = [align_states(star_state, s, spec=spec, model=model, method=matching, x=x, seed=0)[0] for s in states]
    result = bma_mod.bma_study(model, star_state, aligned, ds, max_samples=max_samples, seed=seed, device=dev,
                               progress=progress_config())
    result["sources"] = {"which": "other" if other_dir is not None else "the star's own", "other_sources": other_dir,
                         "models": [{"path": str(p), "sha256": m["sha256"], "seed": m.get("seed")} for p, m in members]}
    result["data"] = data_info
    if out_path:
        store.atomic_write_json(Path(out_path), result)
    if plot_path:
        bma_mod.plot_bma(result, Path(plot_path))
    for key in ("star_domain", "ensemble"):
        m = result[key]["metrics"]
        click.echo(f"{key:12s} K={result[key]['k'][-1]:3d}: acc={100 * m['accuracy'][-1]:.2f}% nll={m['nll'][-1]:.4f} ece={m['ece'][-1]:.4f} "
                   f"auroc(maxprob)={m['auroc_max_prob'][-1]:.4f} auroc(-entropy)={m['auroc_neg_entropy'][-1]:.4f}")
    which = f"other sources from {other_dir}" if other_dir is not None else "the star's own sources"
    click.echo(f"sources: {which}, {zoo.seed_list(m.get('seed', -1) for _, m in members)} (segments and ensemble); {data_line(data_info)}")


@cli.command()
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (resumable: re-run to continue).")
@click.option("--device", default=None, help="Override the config's device.")
@executor_options
@quiet_option
def run(experiment: str, out_dir: str, device: str | None, executor: str | None, workers: int | None, quiet: bool) -> None:
    """Run a whole experiment from one YAML file: zoo, star models, barriers, distances, BMA, fusion, report."""
    from stardomain.experiment import load_config, run_experiment
    from stardomain.experiment.executors import with_overrides

    cfg = load_config(experiment)
    if device:
        cfg.device = device
    cfg.executor = with_overrides(cfg.executor, executor, workers)
    run_experiment(cfg, out_dir, progress=progress_config(quiet), log=event_logger(quiet))
    click.echo(f"wrote {Path(out_dir) / 'results.json'} and {Path(out_dir) / 'report.md'}")


@cli.command()
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (resumable: re-run to continue).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the demo config's, auto).")
@quiet_option
def demo(out_dir: str, device: str | None, quiet: bool) -> None:
    """The whole pipeline on the embedded digits dataset (minutes on a laptop CPU, offline)."""
    from importlib import resources

    from stardomain.console import summary_line
    from stardomain.experiment import load_config, run_experiment

    with resources.as_file(resources.files("stardomain") / "configs" / "demo.yaml") as path:
        cfg = load_config(path)
    if device:
        cfg.device = device
    start = time.monotonic()
    results = run_experiment(cfg, out_dir, progress=progress_config(quiet), log=event_logger(quiet))
    click.echo(summary_line(results, Path(out_dir) / "report.md", time.monotonic() - start))


@cli.command("spec")
@click.argument("target")
@click.option("--option", "-o", "opts", multiple=True, metavar="KEY=VALUE", help="Model option (for a name or import path).")
@click.option("--in-shape", default=None, help="One sample's shape, e.g. 1,28,28 or 20 (default 3,32,32; a checkpoint records its own).")
@click.option("--classes", "num_classes", type=int, default=10, show_default=True, help="Number of classes (for a name or import path).")
@json_option
def spec_cmd(target: str, opts: tuple[str, ...], in_shape: str | None, num_classes: int, as_json: bool) -> None:
    """How TARGET's hidden units can be permuted: a checkpoint, a model name, or pkg.module:build.

    Lists the permutation groups (sizes, member tensors), the share of parameters covered,
    every unpermuted layer with the reason, and whether a random permutation keeps the
    function (max |logit difference|). Start here with your own architecture.
    """
    from stardomain.spec_report import format_report, model_for_spec, spec_report

    report = spec_report(model_for_spec(target, parse_options(opts), in_shape, num_classes))
    if as_json:
        echo_json(report)
    else:
        click.echo(format_report(report))


def main() -> None:
    """Entry point: user errors become one line and exit code 2."""
    try:
        cli.main(standalone_mode=False)
    except StardomainError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
