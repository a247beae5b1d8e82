"""The ``stardomain`` command line: one command per pipeline stage, plus ``run`` and ``demo``.

Every user mistake surfaces as one line on stderr (``error: ...``) and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

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
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="stardomain")
def cli() -> None:
    """stardomain: test the star domain conjecture on real networks.

    \b
    Pipeline (each stage is a command; `run` does them all from one YAML file):
      train    train source / held-out models into a model zoo folder
      eval     test loss and accuracy of a checkpoint
      align    permute a model into another's basin (weight or activation matching)
      barrier  loss/accuracy along the linear path between two models, and its barrier
      star     Starlight (Algorithm 1): train a star model from a zoo of sources
      bma      Bayesian model averaging over the star domain vs a deep ensemble
      run      a whole experiment from one YAML file (resumable)
      demo     the whole pipeline on the embedded digits dataset, on a CPU
    """


@cli.command()
def info() -> None:
    """List the datasets, model architectures and assignment solvers this installation has."""
    from stardomain import data, models
    from stardomain.permute.lap import available_lap_solvers

    click.echo("datasets: " + ", ".join(data.available_datasets()))
    click.echo("models:   " + ", ".join(models.available_models()))
    solvers = available_lap_solvers()
    hint = "" if "lapjv" in solvers else "  (pip install 'stardomain[fast]' adds lapjv, ~3x faster)"
    click.echo("matching LAP solvers: " + ", ".join(solvers) + hint)


@cli.command()
@click.option("--dataset", "-d", default="digits", show_default=True, help="Dataset name (see `stardomain info`).")
@click.option("--model", "-m", "model_name", default="mlp", show_default=True, help="Architecture name (see `stardomain info`).")
@click.option("--opt", "-o", "opts", multiple=True, metavar="KEY=VALUE", help="Architecture option, repeatable (e.g. -o width=64 -o depth=2).")
@click.option("--epochs", "-e", type=int, default=None, help="Epochs (default: the dataset's recipe).")
@click.option("--seed", "-s", type=int, default=None, help="Seed of a single model (default 0).")
@click.option("--n", "n_models", type=int, default=None, help="Train N models with seeds seed-start .. seed-start+N-1 into one zoo folder.")
@click.option("--seed-start", type=int, default=0, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: the recipe's).")
@click.option("--batch-size", type=int, default=None)
@click.option("--weight-decay", type=float, default=None)
@click.option("--subset", type=int, default=None, help="Train on a seeded subset of this many training samples.")
@click.option("--image-size", type=int, default=None, help="imagefolder only: side of the square images in pixels (default 64).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (model zoo).")
@data_root_option
@device_option
@quiet_option
def train(dataset: str, model_name: str, opts: tuple[str, ...], epochs: int | None, seed: int | None, n_models: int | None,
          seed_start: int, optimizer: str, lr: float | None, batch_size: int | None, weight_decay: float | None,
          subset: int | None, image_size: int | None, out_dir: str, data_root: str | None, device: str, quiet: bool) -> None:
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
    if model_name not in models.available_models():
        raise StardomainError(f"unknown model '{model_name}'; choose one of: {', '.join(models.available_models())}")
    ds = data.load_dataset(dataset, root=data_root, subset=subset, image_size=image_size)
    recipe = default_recipe(dataset, optimizer).replace(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay)
    seeds = [seed if seed is not None else 0] if n_models is None else list(range(seed_start, seed_start + n_models))
    dev = resolve_device(device)
    options = parse_options(opts)
    for s in seeds:
        path = zoo.train_member(ds, model_name, options, recipe, s, out_dir, device=dev, progress=not quiet and None, subset=subset)
        m = json.loads(Path(path).with_suffix(".json").read_text())["metrics"]
        click.echo(f"{path}: test_loss={m['test_loss']:.4f} test_acc={100 * m['test_acc']:.2f}%")


@cli.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--dataset", "-d", default=None, help="Dataset (default: the one the model was trained on).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@data_root_option
@device_option
def eval_cmd(checkpoint: str, dataset: str | None, as_json: bool, data_root: str | None, device: str) -> None:
    """Test loss and accuracy of CHECKPOINT (a .safetensors file)."""
    from stardomain import store
    from stardomain.train import evaluate

    dev = resolve_device(device)
    model = store.load(checkpoint, device=dev)
    name = dataset or model.meta.get("dataset", "digits")
    ds = load_data_for(model.meta, dataset, data_root)
    loss, acc = evaluate(model, ds.test_x, ds.test_y, device=dev)
    result = {"checkpoint": str(checkpoint), "dataset": name, "test_loss": loss, "test_acc": acc, "n": len(ds.test_y)}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{checkpoint} on {name} test: loss={loss:.4f} acc={100 * acc:.2f}% (n={len(ds.test_y)})")


def load_data_for(meta: dict[str, Any], dataset: str | None, data_root: str | None, subset: int | None = None) -> Any:
    """The dataset a checkpoint is used on (``--dataset``, else the one it was trained on), checked against it.

    For a dataset that resizes on reading (imagefolder), images come at the size the
    checkpoint was trained at.
    """
    from stardomain import data

    name = dataset or meta.get("dataset", "digits")
    shape = meta.get("arch", {}).get("in_shape")
    image_size = int(shape[-1]) if data.accepts_image_size(name) and shape else None
    ds = data.load_dataset(name, root=data_root, subset=subset, image_size=image_size)
    check_shapes(meta, ds)
    return ds


def check_shapes(meta: dict[str, Any], ds: Any) -> None:
    """A model can only be evaluated on data of the shape and class count it was built for."""
    arch = meta["arch"]
    if list(arch["in_shape"]) != list(ds.in_shape) or int(arch["num_classes"]) != ds.num_classes:
        raise StardomainError(
            f"model expects input {tuple(arch['in_shape'])} with {arch['num_classes']} classes but {ds.name} has "
            f"{tuple(ds.in_shape)} with {ds.num_classes}; pass the --dataset it was trained on ({meta.get('dataset')})"
        )


def _load_pair(a: str, b: str) -> tuple[dict, dict, dict, dict]:
    """Both checkpoints' states and metadata, refusing pairs of different architectures."""
    from stardomain import store

    state_a, meta_a = store.load_state(a)
    state_b, meta_b = store.load_state(b)
    if meta_a["arch"] != meta_b["arch"]:
        raise StardomainError(f"{a} and {b} have different architectures ({meta_a['arch']['name']} vs {meta_b['arch']['name']}); "
                              "only models of one architecture can be aligned or interpolated")
    return state_a, state_b, meta_a, meta_b


@cli.command()
@click.argument("model_a", type=click.Path(dir_okay=False))
@click.argument("model_b", type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(["weight", "activation"]), default="weight", show_default=True)
@click.option("--dataset", "-d", default=None, help="Data for activation matching (default: the models' dataset).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the coordinate-descent order.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Where to write B permuted into A's basin.")
@click.option("--json", "as_json", is_flag=True)
@data_root_option
@device_option
def align(model_a: str, model_b: str, method: str, dataset: str | None, seed: int, out_path: str, as_json: bool,
          data_root: str | None, device: str) -> None:
    """Permute MODEL_B into MODEL_A's basin (same function, new unit order) and report the ℓ2 distance."""
    from stardomain import store
    from stardomain.permute import align as align_states, l2_distance, trace_spec

    dev = resolve_device(device)
    state_a, state_b, meta, meta_b = _load_pair(model_a, model_b)
    model = store.build_model(meta["arch"]).to(dev)
    keys = [k for k, _ in model.named_parameters()]
    x = None
    if method == "activation":
        x = load_data_for(meta, dataset, data_root).train_x[:1024].to(dev)
    spec = trace_spec(model)
    before = l2_distance(state_a, state_b, keys)
    aligned, match = align_states({k: v.to(dev) for k, v in state_a.items()}, {k: v.to(dev) for k, v in state_b.items()}, spec,
                                  method=method, model=model, x=x, seed=seed)
    after = l2_distance(state_a, aligned, keys)
    meta_out = {**meta_b, "aligned_to": {"path": str(model_a), "sha256": store.content_hash(model_a), "method": method,
                                         "objective": float(match.objective)}}
    meta_out.pop("sha256", None)
    store.save(out_path, aligned, meta_out)
    result = {"l2_before": before, "l2_after": after, "objective": float(match.objective), "method": method, "out": str(out_path),
              "groups": len(spec.groups)}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"aligned {model_b} to {model_a} by {method} matching ({len(spec.groups)} permutation groups): "
                   f"l2 {before:.4f} -> {after:.4f}; wrote {out_path}")


@cli.command()
@click.argument("model_a", type=click.Path(dir_okay=False))
@click.argument("model_b", type=click.Path(dir_okay=False))
@click.option("--dataset", "-d", default=None, help="Dataset (default: the models' dataset).")
@click.option("--align", "align_method", type=click.Choice(["none", "weight", "activation"]), default="none", show_default=True,
              help="Permute B into A's basin first.")
@click.option("--points", type=int, default=21, show_default=True, help="Values of t in [0, 1].")
@click.option("--bn-samples", type=int, default=None, help="Training samples for BatchNorm re-estimation at each t (default: all).")
@click.option("--subset", type=int, default=None, help="Use a seeded subset of the training split (as the models were trained on).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Write the curve, barriers and distances as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a PNG of loss and accuracy along t.")
@data_root_option
@device_option
@quiet_option
def barrier(model_a: str, model_b: str, dataset: str | None, align_method: str, points: int, bn_samples: int | None,
            subset: int | None, out_path: str | None, plot_path: str | None, data_root: str | None, device: str, quiet: bool) -> None:
    """Loss and accuracy along (1-t)·A + t·B on train and test data, and the barriers (Eq. 1-2)."""
    from stardomain import store
    from stardomain.barrier import barriers, curve
    from stardomain.permute import align as align_states, l2_distance, trace_spec

    if points < 2:
        raise StardomainError(f"--points must be >= 2 (got {points})")
    dev = resolve_device(device)
    state_a, state_b, meta, meta_b = _load_pair(model_a, model_b)
    ds = load_data_for(meta, dataset, data_root, subset)
    model = store.build_model(meta["arch"]).to(dev)
    keys = [k for k, _ in model.named_parameters()]
    result: dict[str, Any] = {"a": str(model_a), "b": str(model_b), "dataset": ds.name, "align": align_method,
                              "l2": l2_distance(state_a, state_b, keys)}
    if align_method != "none":
        state_b, match = align_states(state_a, state_b, trace_spec(model), method=align_method, model=model,
                                      x=ds.train_x[:1024].to(dev), seed=0)
        result["match_objective"] = float(match.objective)
    result["l2_aligned"] = l2_distance(state_a, state_b, keys)
    c = curve(model, state_a, state_b, ds, num_points=points, bn_samples=bn_samples, device=dev, progress=not quiet and None)
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
               f"l2 {result['l2']:.3f} -> {result['l2_aligned']:.3f}")


@cli.command()
@click.option("--sources", "sources_dir", required=True, type=click.Path(file_okay=False), help="Model zoo folder of source models Z.")
@click.option("--n-sources", type=int, default=None, help="Use the first K sources (default: all).")
@click.option("--dataset", "-d", default=None, help="Dataset (default: the sources' dataset).")
@click.option("--model", "-m", "model_name", default=None, help="Architecture (default and only allowed value: the sources').")
@click.option("--epochs", "-e", type=int, default=None, help="Epochs (default: the sources' recipe).")
@click.option("--lr", type=float, default=None)
@click.option("--seed", "-s", type=int, default=0, show_default=True)
@click.option("--mu", type=float, default=0.0, show_default=True, help="Weight of the star's own cross-entropy (fusion variant, Eq. 9).")
@click.option("--t-sampling", type=click.Choice(["uniform", "beta", "constant", "stratified"]), default="uniform", show_default=True)
@click.option("--t-beta", type=(float, float), default=(1.0, 1.0), show_default=True, help="Beta(a, b) for --t-sampling beta.")
@click.option("--t-constant", type=float, default=0.5, show_default=True)
@click.option("--pairs-per-step", type=int, default=1, show_default=True)
@click.option("--realign-every", type=int, default=None, help="Steps between re-alignments (default: once per epoch).")
@click.option("--matching", type=click.Choice(["weight", "activation", "none"]), default="weight", show_default=True)
@click.option("--init", "init_path", type=click.Path(dir_okay=False), default=None, help="Start from this checkpoint instead of a fresh init.")
@click.option("--subset", type=int, default=None)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Star model checkpoint (.safetensors).")
@data_root_option
@device_option
@quiet_option
def star(sources_dir: str, n_sources: int | None, dataset: str | None, model_name: str | None, epochs: int | None, lr: float | None,
         seed: int, mu: float, t_sampling: str, t_beta: tuple[float, float], t_constant: float, pairs_per_step: int,
         realign_every: int | None, matching: str, init_path: str | None, subset: int | None, out_path: str,
         data_root: str | None, device: str, quiet: bool) -> None:
    """Starlight (Algorithm 1): train a star model linearly connected to every source (modulo permutations)."""
    from stardomain import store, zoo
    from stardomain.starlight import Starlight, StarlightConfig
    from stardomain.train import Recipe, final_metrics, seed_everything

    if store.is_complete(out_path):
        raise StardomainError(f"{out_path} already exists; choose another --out or delete it")
    members = zoo.load_zoo(sources_dir, limit=n_sources)
    if n_sources is not None and len(members) < n_sources:
        raise StardomainError(f"--n-sources {n_sources} but {sources_dir} holds only {len(members)} complete models")
    meta0 = members[0][2]
    arch = meta0["arch"]
    if model_name is not None and model_name != arch["name"]:
        raise StardomainError(f"--model {model_name} differs from the sources' architecture {arch['name']}; a star model must share it")
    ds = load_data_for(meta0, dataset, data_root, subset if subset is not None else meta0.get("config", {}).get("subset"))
    recipe = Recipe.from_dict(meta0["recipe"]).replace(epochs=epochs, lr=lr)
    config = StarlightConfig(recipe=recipe, t_sampling=t_sampling, t_beta=t_beta, t_constant=t_constant, pairs_per_step=pairs_per_step,
                             mu=mu, realign_every=realign_every, matching=matching)
    dev = resolve_device(device)
    seed_everything(seed)
    model = store.build_model(arch)
    if init_path:
        model.load_state_dict(store.load_state(init_path)[0])
    runner = Starlight(model, [s for _, s, _ in members], ds, config, seed=seed, device=dev)
    resume = Path(out_path).with_name("." + Path(out_path).stem + ".state.safetensors")
    result = runner.fit(progress=not quiet and None, resume_path=resume)
    metrics = final_metrics(runner.model, ds, device=dev)
    meta = {"kind": "star", "arch": arch, "dataset": ds.name, "seed": seed, "starlight": config.to_dict(), "history": result.history,
            "sources": [{"path": str(p), "sha256": store.content_hash(p)} for p, _, _ in members], "metrics": metrics,
            "init": str(init_path) if init_path else "fresh"}
    store.save(out_path, runner.model, meta)
    click.echo(f"star model from {len(members)} sources: test_loss={metrics['test_loss']:.4f} test_acc={100 * metrics['test_acc']:.2f}%; wrote {out_path}")


@cli.command()
@click.option("--star", "star_path", required=True, type=click.Path(dir_okay=False), help="Star model checkpoint.")
@click.option("--sources", "sources_dir", required=True, type=click.Path(file_okay=False), help="Zoo of source models.")
@click.option("--dataset", "-d", default=None)
@click.option("--max-samples", type=int, default=20, show_default=True, help="Largest K (posterior samples / ensemble members).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--subset", type=int, default=None)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="JSON with every metric for K = 1..max.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="PNG of AUROC/ECE/accuracy vs K.")
@data_root_option
@device_option
def bma(star_path: str, sources_dir: str, dataset: str | None, max_samples: int, seed: int, subset: int | None,
        out_path: str | None, plot_path: str | None, data_root: str | None, device: str) -> None:
    """Bayesian model averaging over the star domain versus a deep ensemble of the sources (paper Sec. 4.1)."""
    from stardomain import bma as bma_mod, store, zoo
    from stardomain.permute import align as align_states, trace_spec

    if max_samples < 1:
        raise StardomainError(f"--max-samples must be >= 1 (got {max_samples})")
    dev = resolve_device(device)
    star_state, meta = store.load_state(star_path)
    members = zoo.load_zoo(sources_dir)
    if members[0][2]["arch"] != meta["arch"]:
        raise StardomainError(f"the sources in {sources_dir} are {members[0][2]['arch']['name']} but the star is {meta['arch']['name']}")
    ds = load_data_for(meta, dataset, data_root, subset)
    model = store.build_model(meta["arch"]).to(dev)
    spec = trace_spec(model)
    aligned = [align_states(star_state, s, spec, method="weight", seed=0)[0] for _, s, _ in members]
    result = bma_mod.bma_study(model, star_state, aligned, ds, max_samples=max_samples, seed=seed, device=dev)
    if out_path:
        store.atomic_write_json(Path(out_path), result)
    if plot_path:
        bma_mod.plot_bma(result, Path(plot_path))
    for key in ("star_domain", "ensemble"):
        m = result[key]["metrics"]
        click.echo(f"{key:12s} K={result[key]['k'][-1]:3d}: acc={100 * m['accuracy'][-1]:.2f}% nll={m['nll'][-1]:.4f} ece={m['ece'][-1]:.4f} "
                   f"auroc(maxprob)={m['auroc_max_prob'][-1]:.4f} auroc(-entropy)={m['auroc_neg_entropy'][-1]:.4f}")


@cli.command()
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (resumable: re-run to continue).")
@click.option("--device", default=None, help="Override the config's device.")
@quiet_option
def run(experiment: str, out_dir: str, device: str | None, quiet: bool) -> None:
    """Run a whole experiment from one YAML file: zoo, star models, barriers, distances, BMA, fusion, report."""
    from stardomain.experiment import load_config, run_experiment

    cfg = load_config(experiment)
    if device:
        cfg.device = device
    run_experiment(cfg, out_dir, progress=not quiet and None, log=None if quiet else (lambda m: click.echo(m, err=True)))
    click.echo(f"wrote {Path(out_dir) / 'results.json'} and {Path(out_dir) / 'report.md'}")


@cli.command()
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--device", default=None)
@quiet_option
def demo(out_dir: str, device: str | None, quiet: bool) -> None:
    """The whole pipeline on the embedded digits dataset (minutes on a laptop CPU, offline)."""
    from importlib import resources

    from stardomain.experiment import load_config, run_experiment

    with resources.as_file(resources.files("stardomain") / "configs" / "demo.yaml") as path:
        cfg = load_config(path)
    if device:
        cfg.device = device
    run_experiment(cfg, out_dir, progress=not quiet and None, log=None if quiet else (lambda m: click.echo(m, err=True)))
    click.echo(f"wrote {Path(out_dir) / 'report.md'}")


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
