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

from stardomain.errors import StardomainError


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when present; an unavailable device is a user error, not a crash."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StardomainError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    return device


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
                                help="Dataset folder (default: $STARDOMAIN_DATA, else the per-user cache).")
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
    """List the datasets and model architectures this version knows."""
    from stardomain import data, models

    click.echo("datasets: " + ", ".join(data.available_datasets()))
    click.echo("models:   " + ", ".join(models.available_models()))


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
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (model zoo).")
@data_root_option
@device_option
@quiet_option
def train(dataset: str, model_name: str, opts: tuple[str, ...], epochs: int | None, seed: int | None, n_models: int | None,
          seed_start: int, optimizer: str, lr: float | None, batch_size: int | None, weight_decay: float | None,
          subset: int | None, out_dir: str, data_root: str | None, device: str, quiet: bool) -> None:
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
    ds = data.load_dataset(dataset, root=data_root, subset=subset)
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
    from stardomain import data, store
    from stardomain.train import evaluate

    dev = resolve_device(device)
    model = store.load(checkpoint, device=dev)
    name = dataset or model.meta.get("dataset", "digits")
    ds = data.load_dataset(name, root=data_root)
    check_shapes(model.meta, ds)
    loss, acc = evaluate(model, ds.test_x, ds.test_y, device=dev)
    result = {"checkpoint": str(checkpoint), "dataset": name, "test_loss": loss, "test_acc": acc, "n": len(ds.test_y)}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{checkpoint} on {name} test: loss={loss:.4f} acc={100 * acc:.2f}% (n={len(ds.test_y)})")


def check_shapes(meta: dict[str, Any], ds: Any) -> None:
    """A model can only be evaluated on data of the shape and class count it was built for."""
    arch = meta["arch"]
    if list(arch["in_shape"]) != list(ds.in_shape) or int(arch["num_classes"]) != ds.num_classes:
        raise StardomainError(
            f"model expects input {tuple(arch['in_shape'])} with {arch['num_classes']} classes but {ds.name} has "
            f"{tuple(ds.in_shape)} with {ds.num_classes}; pass the --dataset it was trained on ({meta.get('dataset')})"
        )


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
