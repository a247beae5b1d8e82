"""Commands about two models: ``align`` (permute B into A's basin) and ``barrier`` (the linear path and Eq. 1-2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stardomain._util.console import progress_config
from stardomain._util.device import resolve_device
from stardomain._util.units import pp
from stardomain.cli.app import cli
from stardomain.cli.common import (
    allow_unpermuted_option,
    checked_first,
    data_options,
    data_root_option,
    device_option,
    echo_json,
    json_option,
    load_data_for,
    load_pair,
    matchers_help,
    matching_samples_option,
    plain_model_option,
    quiet_option,
    read_plain,
    reads_token_ids,
    say_assumed,
    threads_option,
    warn_unconverged,
)
from stardomain.defaults import (
    ALIGNMENTS,
    DEFAULT_POINTS,
    MATCHERS,
    MATCHING,
    NO_ALIGNMENT,
    REFINE_BATCH_SIZE,
    REFINE_EVAL_SAMPLES,
    REFINE_LR,
    REFINE_STEPS,
    SYMMETRIES,
    points_problem,
)
from stardomain.errors import StardomainError


def refine_cli_options(fn: Any) -> Any:
    """--refine and its budget: learned matching (Git Re-Basin's straight-through estimator) after the matcher."""
    opts = [
        click.option(
            "--refine",
            type=click.Choice(["none", "ste"]),
            default="none",
            show_default=True,
            help="Refine the alignment by learned matching (straight-through estimator): lower loss at the midpoint.",
        ),
        click.option("--refine-steps", type=int, default=REFINE_STEPS, show_default=True, help="Learned matching: Adam steps."),
        click.option(
            "--refine-batch-size", type=int, default=REFINE_BATCH_SIZE, show_default=True, help="Learned matching: samples per step."
        ),
        click.option("--refine-lr", type=float, default=REFINE_LR, show_default=True, help="Learned matching: Adam's learning rate."),
        click.option(
            "--refine-eval-samples",
            type=int,
            default=REFINE_EVAL_SAMPLES,
            show_default=True,
            help="Learned matching: held-out training samples each permutation's midpoint loss is scored on.",
        ),
        click.option(
            "--refine-start",
            type=click.Choice(["a", "aligned"]),
            default="a",
            show_default=True,
            help="Learned matching: the proxy starts at A (Git Re-Basin) or at the aligned B.",
        ),
        click.option(
            "--refine-state",
            type=click.Path(dir_okay=False),
            default=None,
            help="Learned matching: resumable state file (written as it goes, resumed from, removed at the end).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def refine_settings(kw: dict[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """Pop the --refine* values out of a command's keyword arguments: (method, SteConfig settings, state file)."""
    method = kw.pop("refine")
    settings = {k: kw.pop(f"refine_{k}") for k in ("steps", "batch_size", "lr", "eval_samples", "start")}
    return method, settings, kw.pop("refine_state")


def _refine_checks(kw: dict[str, Any]) -> None:
    """The --refine-steps budget, refused before any import (:func:`checked_first`)."""
    from stardomain._util import budget

    budget.check("--refine-steps", kw["refine_steps"], "length", "learned-matching steps")


def _align_checks(kw: dict[str, Any]) -> None:
    """align's option values that need no data: refused before torch is imported (:func:`checked_first`)."""
    _refine_checks(kw)
    if kw["method"] == "activation" and kw["matching_samples"] < 1:
        raise StardomainError(f"--matching-samples must be >= 1 (got {kw['matching_samples']})")


def _barrier_checks(kw: dict[str, Any]) -> None:
    """barrier's option values that need no data: refused before torch is imported (:func:`checked_first`)."""
    from stardomain._util import budget

    points, align_method, symmetry = kw["points"], kw["align_method"], kw["symmetry"]
    if (problem := points_problem(points)) is not None:
        raise StardomainError(f"--points {problem}")
    if kw["matching_samples"] < 1:
        raise StardomainError(f"--matching-samples must be >= 1 (got {kw['matching_samples']})")
    budget.check("--points", points, "length", "t values per curve")
    for flag, n in (("--eval-train-samples", kw["eval_train_samples"]), ("--eval-test-samples", kw["eval_test_samples"])):
        if n is not None and n < 1:
            raise StardomainError(f"{flag} must be >= 1 (got {n}); omit it to evaluate the whole split")
    _refine_checks(kw)
    if kw["refine"] != "none" and align_method == NO_ALIGNMENT:
        raise StardomainError(f"--refine ste refines an alignment; pass --align {' or '.join(MATCHERS)} with it")
    if symmetry != "permutation" and align_method == NO_ALIGNMENT:
        raise StardomainError(f"--symmetry {symmetry} extends an alignment; pass --align {' or '.join(MATCHERS)} with it")


def symmetry_option(fn: Any) -> Any:
    """--symmetry: maps beyond permutations after the matcher (orthogonal residual stream, invertible heads)."""
    return click.option(
        "--symmetry",
        type=click.Choice(SYMMETRIES),
        default="permutation",
        show_default=True,
        help="Symmetry class: permutations only, + an orthogonal map of the residual stream (pre-norm transformers), "
        "+ invertible per-head QK/OV maps. Refused in one line where the model cannot take it.",
    )(fn)


def symmetry_line(info: dict[str, Any] | None) -> str:
    """One line on the maps after the permutation (empty without them)."""
    if not info:
        return ""
    d = info["distance"]
    return f"; {info['symmetry']} maps: squared distance (folded) {d['before']:.4g} -> {d['after']:.4g}"


def refine_line(info: dict[str, Any] | None) -> str:
    """One line on what learned matching did (empty without it)."""
    if not info:
        return ""
    return (
        f"; learned matching ({info['config']['steps']} steps): midpoint loss {info['start_loss']:.4f} -> {info['best_loss']:.4f} "
        f"(held-out training samples: {info['eval_samples']})"
    )


@cli.command(short_help="permute a model into another's basin (weight or activation matching)")
@checked_first(_align_checks)
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@click.option(
    "--method",
    type=click.Choice(list(MATCHERS)),
    default=MATCHING,
    show_default=True,
    help=f"How B is matched to A: {matchers_help()}",
)
@data_options
@matching_samples_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the coordinate-descent order.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write B permuted into A's basin here (default: only print the distances).",
)
@refine_cli_options
@symmetry_option
@allow_unpermuted_option
@plain_model_option
@json_option
@data_root_option
@device_option
@threads_option
def align(
    model_a: str,
    model_b: str,
    method: str,
    dataset: str | None,
    subset: str | None,
    subset_seed: int | None,
    matching_samples: int,
    seed: int,
    out_path: str | None,
    allow_unpermuted: bool,
    as_json: bool,
    data_root: str | None,
    device: str,
    symmetry: str,
    plain_model: str | None,
    **refine_kw: Any,
) -> None:
    """Permute MODEL_B into MODEL_A's basin (same function, new unit order) and report the ℓ2 distance."""
    from stardomain.checkpoints import store
    from stardomain.permute.pair import align_pair

    read_plain([model_a, model_b], plain_model, dataset, data_root)  # plain state dicts: --model's, for --dataset
    dev = resolve_device(device)
    state_a, state_b, meta, meta_b = load_pair(model_a, model_b)
    model = store.build_model(meta.arch.record).to(dev)
    data_info, ds = None, None
    refine, refine_options, refine_state = refine_settings(refine_kw)
    labelled = [meta.labelled(model_a), meta_b.labelled(model_b)]
    assumed = say_assumed(labelled)
    # the data when matching or refinement reads it, --dataset names it, or the model reads token ids (its spec is
    # traced on the data's own inputs, never random floats)
    if method == "activation" or refine != "none" or dataset is not None or reads_token_ids(model):
        ds, data_info = load_data_for(labelled, dataset, data_root, subset, subset_seed)
    pair = align_pair(
        state_a,
        state_b,
        model=model,
        dataset=ds,
        method=method,
        matching_samples=matching_samples,
        seed=seed,
        allow_unpermuted=allow_unpermuted,
        refine=refine,
        refine_options=refine_options,
        refine_resume_path=refine_state,
        symmetry=symmetry,
        device=dev,
    )
    aligned, match, spec, before, after = pair.state_b, pair.match, pair.spec, pair.l2_before, pair.l2_after
    meta_out = {
        **meta_b.raw,  # B's metadata as written (its keys kept), with where it was aligned to
        "aligned_to": {
            "path": str(model_a),
            "sha256": store.content_hash(model_a),
            "method": method,
            "objective": float(match.objective),
            "data": data_info,
            **({"refine": match.refine} if match.refine is not None else {}),
            **({"symmetry": match.symmetry} if match.symmetry is not None else {}),
            **({"assumed": assumed} if assumed else {}),
        },
    }
    meta_out.pop("sha256", None)
    if out_path:
        store.save(out_path, aligned, meta_out)
    result = {
        "l2_before": before,
        "l2_after": after,
        "objective": float(match.objective),
        "method": method,
        "out": str(out_path) if out_path else None,
        "groups": len(spec.groups),
        "data": data_info,
        "spec_coverage": match.coverage,
        "function_check": match.check,
        "function_gap": match.function_gap,
        "refine": match.refine,
        "symmetry": symmetry,
        "symmetry_maps": match.symmetry,
        **({"assumed": assumed} if assumed else {}),
    }
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"aligned {model_b} to {model_a} by {method} matching ({len(spec.groups)} permutation groups covering "
            f"{100 * (match.coverage or 0):.1f}% of parameters; function check {match.check}): "
            f"l2 {before:.4f} -> {after:.4f}{refine_line(match.refine)}{symmetry_line(match.symmetry)}; "
            + (f"wrote {out_path}" if out_path else "not saved (pass --out to keep it)")
        )
        if data_info is not None:
            from stardomain.checkpoints.provenance import data_line

            click.echo(data_line(data_info))


@cli.command(short_help="loss/accuracy along the linear path between two models, and its barrier")
@checked_first(_barrier_checks)
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@data_options
@click.option(
    "--align",
    "align_method",
    type=click.Choice(ALIGNMENTS),
    default=NO_ALIGNMENT,
    show_default=True,
    help=f"Permute B into A's basin first: {matchers_help('interpolate A and B as they are')}",
)
@matching_samples_option
@click.option("--points", type=int, default=DEFAULT_POINTS, show_default=True, help="Values of t in [0, 1].")
@click.option("--bn-samples", type=int, default=None, help="Training samples for BatchNorm re-estimation at each t (default: all).")
@click.option(
    "--bn",
    "bn_protocol",
    type=click.Choice(["reset", "interpolate"]),
    default="reset",
    show_default=True,
    help="BatchNorm at each t: re-estimate the statistics (the paper's protocol) or keep their interpolation (ablation).",
)
@click.option("--eval-train-samples", type=int, default=None, help="Evaluate the train split on this seeded subset (default: all).")
@click.option("--eval-test-samples", type=int, default=None, help="Evaluate the test split on this seeded subset (default: all).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Write the curve, barriers and distances as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a PNG of loss and accuracy along t.")
@refine_cli_options
@symmetry_option
@allow_unpermuted_option
@plain_model_option
@data_root_option
@device_option
@threads_option
@quiet_option
def barrier(
    model_a: str,
    model_b: str,
    dataset: str | None,
    subset: str | None,
    subset_seed: int | None,
    align_method: str,
    matching_samples: int,
    points: int,
    bn_samples: int | None,
    bn_protocol: str,
    eval_train_samples: int | None,
    eval_test_samples: int | None,
    out_path: str | None,
    plot_path: str | None,
    allow_unpermuted: bool,
    data_root: str | None,
    device: str,
    quiet: bool,
    symmetry: str,
    plain_model: str | None,
    **refine_kw: Any,
) -> None:
    """Loss and accuracy along (1-t)·A + t·B on train and test data, and the barriers (Eq. 1-2)."""
    import torch

    from stardomain.barrier import evaluate_pair
    from stardomain.checkpoints import store
    from stardomain.checkpoints.provenance import data_line

    # the option values were checked before any import (_barrier_checks)
    refine, refine_options, refine_state = refine_settings(refine_kw)
    read_plain([model_a, model_b], plain_model, dataset, data_root)  # plain state dicts: --model's, for --dataset
    dev = resolve_device(device)
    state_a, state_b, meta, meta_b = load_pair(model_a, model_b)
    labelled = [meta.labelled(model_a), meta_b.labelled(model_b)]
    assumed = say_assumed(labelled)
    ds, data_info = load_data_for(labelled, dataset, data_root, subset, subset_seed)
    model = store.build_model(meta.arch.record).to(dev)
    pair = evaluate_pair(
        state_a,
        state_b,
        model=model,
        dataset=ds,
        align=align_method,
        points=points,
        bn=bn_protocol,
        bn_samples=bn_samples,
        eval_train_samples=eval_train_samples,
        eval_test_samples=eval_test_samples,
        matching_samples=matching_samples,
        allow_unpermuted=allow_unpermuted,
        device=dev,
        progress=progress_config(quiet),
        refine=refine,
        refine_options=refine_options,
        refine_resume_path=refine_state,
        symmetry=symmetry,
    )
    c = pair.curve
    result: dict[str, Any] = {
        "a": str(model_a),
        "b": str(model_b),
        "dataset": ds.name,
        "data": data_info,
        "align": align_method,
        **pair.record(),
        "function_check": pair.function_check,
        "threads": torch.get_num_threads(),  # --threads: the curve's digits depend on it
        "not_converged": warn_unconverged([meta, meta_b]) or None,  # said on stderr too: not the paper's quantity
        **({"assumed": assumed} if assumed else {}),
    }
    if out_path:
        store.atomic_write_json(Path(out_path), result)
    if plot_path:
        from stardomain.report.plots import plot_loss_acc

        plot_loss_acc({f"{Path(model_a).stem} – {Path(model_b).stem}": [c]}, Path(plot_path))
    b = result["barriers"]
    click.echo(
        f"barriers (align={align_method}): test loss {b['test_loss']:.4f}, test acc {pp(b['test_acc'])}, "
        f"train loss {b['train_loss']:.4f}, train acc {pp(b['train_acc'])}; "
        f"l2 {result['l2']:.3f} -> {result['l2_aligned']:.3f}"
        + refine_line(result.get("refine"))
        + symmetry_line(result.get("symmetry"))
        + (
            f"; permutation spec covers {100 * result['spec_coverage']:.1f}% of parameters, function check {result['function_check']}"
            if result.get("spec_coverage") is not None
            else ""
        )
    )
    click.echo(f"{data_line(data_info)}; train n={len(ds.train_y)}, test n={len(ds.test_y)}")
