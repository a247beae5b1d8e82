"""Starlight and what uses a star: ``star`` (Algorithm 1, repeats) and ``bma`` (star-domain BMA vs a deep ensemble)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import click

from stardomain._util.console import progress_config
from stardomain._util.device import resolve_device
from stardomain.cli.app import cli
from stardomain.cli.common import (
    allow_unpermuted_option,
    check_matching_samples,
    checked_first,
    chosen_matching_samples_option,
    data_options,
    data_root_option,
    device_option,
    load_data_for,
    log_option,
    quiet_option,
    read_plain,
    say_assumed,
    threads_option,
    warn_unconverged,
)
from stardomain.cli.settings import check_setting, repeats_option, star_cli_settings, star_options
from stardomain.defaults import ALIGNMENTS, DEFAULT_MATCHING_SAMPLES, MATCHERS, NO_ALIGNMENT, SYMMETRIES, matchers_help
from stardomain.errors import StardomainError
from stardomain.experiment.config_blocks import StarConfig

if TYPE_CHECKING:
    from stardomain.checkpoints.meta import Checkpoint


def _which(members: Sequence[Checkpoint]) -> str:
    """The sources in one phrase: their seeds, or their names where none is recorded (save_pretrained folders)."""
    from stardomain.training import zoo

    seeds = [ck.seed for ck in members]
    if all(s is not None for s in seeds):
        return zoo.seed_list(s for s in seeds if s is not None)
    return ", ".join(ck.path.name for ck in members)


def _read_plain_sources(sources_dir: str, model_name: str | None, dataset: str | None, data_root: str | None) -> None:
    """Plain safetensors state dicts in SOURCES (no .json beside them) are sources of the model --model builds for
    --dataset (cli.common.read_plain); a zoo of stardomain checkpoints is read as ever (a stray plain file ignored)."""
    from stardomain.checkpoints import plain, store

    root = Path(sources_dir)
    plains = sorted(p for p in root.glob("*.safetensors") if plain.is_plain(p)) if root.is_dir() else []
    if plains and (model_name is not None or not store.find_checkpoints(root, recursive=False)):
        read_plain(plains, model_name, dataset, data_root, own_option=False)


def repeat_path(out_path: str | Path, r: int) -> Path:
    """Where repeat ``r`` of ``star --repeats`` goes: star.safetensors -> star-r0.safetensors, ..."""
    out = Path(out_path)
    return out.with_name(f"{out.stem}-r{r}{out.suffix or '.safetensors'}")


def _refuse_meaningless_options(t_sampling: str, matching: str, mu: float = 0.0) -> None:
    """An option another one makes meaningless is refused in one line before any work, never silently ignored:
    given on the command line (or from the environment), not left at its default."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    matchers = " or ".join(MATCHERS)
    rules = (
        ("t_constant", "--t-constant", t_sampling != "constant", "the fixed t of --t-sampling constant", "add --t-sampling constant"),
        ("t_beta", "--t-beta", t_sampling != "beta", "the Beta(a, b) of --t-sampling beta", "add --t-sampling beta"),
        ("realign_every", "--realign-every", matching == NO_ALIGNMENT, "when sources are re-aligned", f"choose --matching {matchers}"),
        ("symmetry", "--symmetry", matching == NO_ALIGNMENT, "the maps that move aligned sources", f"choose --matching {matchers}"),
        (
            "matching_samples",
            "--matching-samples",
            matching != "activation",
            "the sample activation matching correlates on",
            "add --matching activation",
        ),
    )
    for param, flag, meaningless, what, fix in rules:
        source = ctx.get_parameter_source(param)
        if meaningless and source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            setting = f"--t-sampling {t_sampling}" if param.startswith("t_") else f"--matching {matching}"
            raise StardomainError(f"{flag} sets {what}, which {setting} never uses (it would be ignored); {fix} or drop {flag}")
    if mu == 0 and ctx.get_parameter_source("fusion_loss") in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
        raise StardomainError(
            "--fusion-loss sets how the fusion term mu·L(θ⋆) is normalised, which --mu 0 never has (it would be ignored); "
            "add --mu 1 (say) or drop --fusion-loss"
        )


def _star_checks(
    repeats: int,
    t_sampling: str,
    matching: str,
    mu: float,
    weight_decay: float | None,
    pairs_per_step: int,
    epochs: int | None,
    **kw: Any,
) -> None:
    """``star``'s option values that need no data, refused before torch is imported (:func:`checked_first`): each
    range as its setting declares it (the knobs by building the StarlightConfig they make, as the body will)."""
    from stardomain._util import budget
    from stardomain.starlight.config import StarlightConfig

    check_setting(StarConfig, "repeats", repeats)
    _refuse_meaningless_options(t_sampling, matching, mu)
    if weight_decay is not None and not weight_decay >= 0:
        raise StardomainError(f"--weight-decay must be >= 0, e.g. 5e-4 (got {weight_decay})")
    budget.check("--repeats", repeats, "units", "stars to train")
    budget.check("--pairs-per-step", pairs_per_step, "length", "(source, t) pairs per step")
    if epochs is not None:
        budget.check("--epochs", epochs, "epochs", "the star's epochs")
    given = {"t_sampling": t_sampling, "matching": matching, "mu": mu, "pairs_per_step": pairs_per_step, **kw}
    StarlightConfig(**{f.name: given[f.name] for f in star_cli_settings()})


def _bma_checks(
    max_samples: int,
    sources_dir: str | None,
    other_dir: str | None,
    align: str,
    symmetry: str | None,
    matching_samples: int | None,
    star_path: str,
    **_: object,
) -> None:
    """``bma``'s option values, refused before any data loads (:func:`checked_first`): those that need no file
    before torch is imported; those that --align star makes depend on the star's recorded matching after reading
    its metadata (only when --symmetry or --matching-samples is given with it)."""
    from stardomain._util import budget

    if max_samples < 1:
        raise StardomainError(f"--max-samples must be >= 1 (got {max_samples})")
    budget.check("--max-samples", max_samples, "length", "posterior samples")
    if sources_dir is not None and other_dir is not None:
        raise StardomainError("give --sources (where the star's own sources are) or --other-sources (another set), not both")
    check_matching_samples(matching_samples)
    if symmetry not in (None, "permutation") and align == NO_ALIGNMENT:
        raise StardomainError(f"--symmetry {symmetry} extends an alignment; pass --align star or {' or '.join(MATCHERS)} with it")
    if align != "star":
        if matching_samples is not None and align != "activation":
            raise _unused_matching_samples(f"--align {align}")
        return
    if symmetry in (None, "permutation") and matching_samples is None:
        return  # the star's recorded alignment as it is: nothing to check against it
    recorded = _recorded_matching(star_path)
    if symmetry not in (None, "permutation") and recorded == NO_ALIGNMENT:
        raise StardomainError(
            f"--symmetry {symmetry} extends an alignment, but the star {star_path} was trained without one (matching "
            f"{NO_ALIGNMENT}); pass --align {' or '.join(MATCHERS)} with it"
        )
    if matching_samples is not None and recorded != "activation":
        raise _unused_matching_samples(f"--align star (the star's recorded matching {recorded})")


def _unused_matching_samples(setting: str) -> StardomainError:
    """--matching-samples where no activation matching runs: refused, never ignored (as ``star`` refuses it)."""
    return StardomainError(
        f"--matching-samples sets the sample activation matching correlates on, which {setting} never uses "
        "(it would be ignored); add --align activation or drop --matching-samples"
    )


def _refuse_non_star(meta: Checkpoint, star_path: str) -> None:
    if not meta.is_star:
        raise StardomainError(f"{star_path} is not a star model (kind {meta.kind}); pass a checkpoint written by `stardomain star`")


def _recorded_matching(star_path: str) -> str:
    """The matcher the star's training aligned its sources by (its metadata only: no weights, no data)."""
    from stardomain.bma.study import recorded_alignment
    from stardomain.checkpoints.meta import read_checkpoint

    meta = read_checkpoint(star_path)
    _refuse_non_star(meta, star_path)
    return str(recorded_alignment(meta.starlight)["align"])


@cli.command(short_help="Starlight (Algorithm 1): train a star model from a zoo of sources")
@checked_first(lambda kw: _star_checks(**kw))
@click.option(
    "--sources",
    "sources_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model zoo folder: its source models (direct children, role source) are Z; or a folder of save_pretrained "
    "folders (each one source; --dataset names their data).",
)
@click.option("--n-sources", type=int, default=None, help="Use the K lowest-seed sources (default: all).")
@data_options
@click.option(
    "--model",
    "-m",
    "model_name",
    default=None,
    help="Architecture (default and only allowed value: the sources'); for plain .safetensors sources (no .json), "
    "the import path of their builder, pkg.mod:build, called with --dataset's (num_classes, in_shape).",
)
@click.option("--epochs", "-e", type=int, default=None, help="Epochs (default: the sources' recipe).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: the sources' recipe).")
@click.option("--weight-decay", type=float, default=None, help="The star's weight decay (default: the sources' recipe).")
@click.option(
    "--seed",
    "-s",
    type=int,
    default=0,
    show_default=True,
    help="Star seed; the star's init and batch order come from its own stream (starlight.star_seed), never a source's.",
)
@star_options
@click.option(
    "--init", "init_path", type=click.Path(dir_okay=False), default=None, help="Start from this checkpoint instead of a fresh init."
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Star model checkpoint (.safetensors).")
@repeats_option
@click.option(
    "--force",
    is_flag=True,
    help="Retrain and replace an existing star model at --out (the old one stays until the new one is written); without "
    "it a finished star of the same sources and settings is reused, one of other settings refused.",
)
@allow_unpermuted_option
@data_root_option
@device_option
@threads_option
@log_option
@quiet_option
def star(
    sources_dir: str,
    n_sources: int | None,
    dataset: str | None,
    subset: str | None,
    subset_seed: int | None,
    model_name: str | None,
    epochs: int | None,
    lr: float | None,
    weight_decay: float | None,
    seed: int,
    knobs: dict[str, Any],
    init_path: str | None,
    out_path: str,
    repeats: int,
    force: bool,
    allow_unpermuted: bool,
    data_root: str | None,
    device: str,
    log_sinks: tuple[str, ...],
    quiet: bool,
) -> None:
    """Starlight (Algorithm 1): train a star model linearly connected to every source (modulo permutations).

    One star's barriers vary markedly with its seed, so ``--repeats K`` trains K of them (seeds
    from the star stream, recorded) for figures given over stars as well as over pairs.
    """
    from stardomain import models
    from stardomain._util.console import notice
    from stardomain.checkpoints.meta import Checkpoint, Metrics
    from stardomain.checkpoints.provenance import data_line
    from stardomain.cli.app import resumable
    from stardomain.experiment.pairs import poor_star_warning
    from stardomain.experiment.sinks import EventLog, Sinks
    from stardomain.starlight import StarlightConfig, repeat_seed, train_star
    from stardomain.starlight.config import check_step_budget, star_recipe
    from stardomain.starlight.writer import existing_stars
    from stardomain.training import zoo

    # --repeats, the meaningless options, --weight-decay and the budgets were checked before any import (_star_checks)
    outs = [Path(out_path)] if repeats == 1 else [repeat_path(out_path, r) for r in range(repeats)]
    resumable(f"the finished stars and the last finished epoch of the one in training (a hidden state file beside {outs[0]})")
    _read_plain_sources(sources_dir, model_name, dataset, data_root)
    loaded = zoo.load_zoo(sources_dir, limit=n_sources)
    if n_sources is not None and len(loaded) < n_sources:
        raise StardomainError(f"--n-sources {n_sources} but {sources_dir} holds only {len(loaded)} complete source models")
    members = [Checkpoint.of(m, p) for p, _, m in loaded]
    labelled = [ck.labelled() for ck in members]
    meta0 = members[0]
    n_params = sum(t.numel() for t in loaded[0][1].values() if t.is_floating_point())
    check_step_budget("--pairs-per-step", knobs["pairs_per_step"], n_params)
    arch = meta0.arch
    if model_name is not None and models.canonical_name(model_name) != arch.name:
        raise StardomainError(f"--model {model_name} differs from the sources' architecture {arch.name}; a star model must share it")
    say_assumed(labelled)
    ds, data_info = load_data_for(labelled, dataset, data_root, subset, subset_seed)
    how = "--epochs N (and --lr where the generic SGD recipe's does not suit)"
    recipe = star_recipe(meta0.recipe, ds.name, epochs=epochs, lr=lr, weight_decay=weight_decay, how=how)  # fp32
    if meta0.recipe is None:  # save_pretrained sources record no recipe: the dataset's default, said so
        notice("note", f"the sources record no recipe: the star trains with {ds.name}'s default recipe {recipe.to_dict()}")
    config = StarlightConfig(recipe=recipe, **knobs)
    dev = resolve_device(device)
    reuse = existing_stars(outs, members, ds, config, seed, init_path or "fresh", force)  # before any star is trained
    # --log: each epoch of each star (star_epoch: tag = the checkpoint's name, epoch, interpolated loss, match objective)
    # to the sinks, in OUT's folder (tensorboard/, wandb/); every epoch's record is in the star's .json already
    sinks = Sinks({sink: True for sink in log_sinks}, outs[0].parent, outs[0].stem, config=config.to_dict(), where="--log")
    with EventLog(None, sinks) as events:
        for r, out in enumerate(outs):
            # repeat r's own stream; r0 is the single star of --seed ("seed" records what built it, "seed_option" the --seed)
            star = train_star(
                [ck.path for ck in members],
                ds,
                config,
                out,
                seed=repeat_seed(seed, r),
                seed_option=seed,
                init=init_path or "fresh",
                repeat=r,
                repeats=repeats,
                existing="reuse" if reuse[r] else "replace",
                device=dev,
                progress=progress_config(quiet),
                allow_unpermuted=allow_unpermuted,
                on_epoch=events.recorder("star_epoch", tag=out.stem),
            )
            meta = star.checkpoint
            metrics = (meta.metrics or Metrics()).printable()  # null in the file: "nan" here
            which = f" {r + 1}/{repeats}" if repeats > 1 else ""
            click.echo(
                f"star model{which} from {len(members)} sources ({_which(members)} of {sources_dir}), "
                f"star seed {meta.seed} (--seed {seed}): test_loss={metrics['test_loss']:.4f} test_acc={100 * metrics['test_acc']:.2f}%; "
                + (f"permutation spec covers {100 * meta.spec_coverage:.1f}% of parameters; " if meta.spec_coverage is not None else "")
                + (f"wrote {out}" if star.trained else f"reused {out}: finished before with these sources and settings (--force retrains)")
            )
            poor = poor_star_warning(meta.metrics_dict(), [ck.metrics_dict() for ck in members])  # as the pipeline flags it
            if poor:
                notice("warning", f"star{which}: {poor}")
    click.echo(data_line(data_info))
    warn_unconverged(members)  # a star of unconverged sources: not the paper's setting


def _bma_alignment(
    starlight: Mapping[str, Any] | None, align: str, symmetry: str | None, matching_samples: int | None = None
) -> dict[str, Any]:
    """--align/--symmetry/--matching-samples as :func:`stardomain.bma.study.star_bma`'s alignment settings, with who
    chose them: --align star (default) is the star's recorded alignment, the one its sources were aligned by while it
    trained; --symmetry and --matching-samples, when given, replace its parts."""
    from stardomain.bma.study import recorded_alignment

    if align == "star":
        chosen = {**recorded_alignment(starlight), "chosen_by": "the star's recorded matching"}
    else:
        chosen = {"align": align, "symmetry": "permutation", "matching_samples": DEFAULT_MATCHING_SAMPLES, "chosen_by": "--align"}
    if symmetry is not None:
        chosen["symmetry"] = symmetry
    if matching_samples is not None:
        chosen["matching_samples"] = matching_samples
    if chosen["align"] != "activation":
        del chosen["matching_samples"]  # read by activation matching only
    return chosen


def _alignment_words(a: Mapping[str, Any]) -> str:
    """The alignment in one phrase: what the sources were aligned to the star by, and who chose it."""
    if a["align"] == NO_ALIGNMENT:
        how = "sources taken as they are (no alignment)"
    else:
        maps = "" if a["symmetry"] == "permutation" else f" + {a['symmetry']} maps"
        sample = f" on {a['matching_samples']} samples" if a["align"] == "activation" else ""
        how = f"sources aligned to the star by {a['align']} matching{sample}{maps}"
    return f"{how} ({a['chosen_by']}; --align chooses another)"


def _echo_bma(result: Mapping[str, Any]) -> None:
    """The final K of both curves, each number with its bootstrap interval, and what the AUROC is."""
    from stardomain.report.bma_plot import AUROC_DEFINITION
    from stardomain.report.study_sections import bma_test_lines

    def cell(key: str, name: str, scale: float = 1.0, digits: int = 4) -> str:
        value, ci = result[key]["metrics"][name][-1], result[key].get("ci", {}).get(name)
        text = f"{scale * value:.{digits}f}"
        return text + (f" [{scale * ci[-1][0]:.{digits}f}, {scale * ci[-1][1]:.{digits}f}]" if ci else "")

    for key in ("star_domain", "ensemble"):
        click.echo(
            f"{key:12s} K={result[key]['k'][-1]:3d}: acc(%)={cell(key, 'accuracy', 100, 2)} nll={cell(key, 'nll')} "
            f"ece={cell(key, 'ece')} misclassification AUROC: max prob={cell(key, 'auroc_max_prob')} "
            f"neg. entropy={cell(key, 'auroc_neg_entropy')}"
        )
    boot = result["star_domain"].get("bootstrap")
    if boot and "ci" in result["star_domain"]:
        click.echo(
            f"[..]: {100 * boot['level']:g}% bootstrap interval over the {boot['n_test']} test images, {boot['resamples']} resamples"
        )
    click.echo(f"{AUROC_DEFINITION}.")
    for line in bma_test_lines(result, result["tests"]):
        click.echo(line)
    click.echo(f"alignment: {_alignment_words(result['alignment'])}")


@cli.command(short_help="Bayesian model averaging over the star domain vs a deep ensemble")
@checked_first(lambda kw: _bma_checks(**kw))
@click.option("--star", "star_path", required=True, type=click.Path(dir_okay=False), help="Star model checkpoint.")
@click.option(
    "--sources",
    "sources_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder to find the star's own sources in when they moved (found by SHA-256).",
)
@click.option(
    "--other-sources",
    "other_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Use this zoo's sources instead of the star's own (recorded in the output).",
)
@data_options
@click.option(
    "--align",
    type=click.Choice(["star", *ALIGNMENTS]),
    default="star",
    show_default=True,
    help="How the sources are aligned to the star: star = the star's recorded matching (and symmetry), as it was trained; "
    f"{matchers_help('the sources as they are')}",
)
@click.option(
    "--symmetry",
    type=click.Choice(SYMMETRIES),
    default=None,
    help="Maps beyond permutations after the matcher (default: the star's recorded one with --align star, else permutation).",
)
@chosen_matching_samples_option(f"the star's recorded one with --align star, else {DEFAULT_MATCHING_SAMPLES}")
@click.option("--max-samples", type=int, default=20, show_default=True, help="Largest K (posterior samples / ensemble members).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the posterior samples (source index n, t).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="JSON with every metric for K = 1..max.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG of misclassification AUROC / NLL / ECE / accuracy vs K, with 95% bootstrap bands.",
)
@allow_unpermuted_option
@data_root_option
@device_option
@threads_option
def bma(
    star_path: str,
    sources_dir: str | None,
    other_dir: str | None,
    dataset: str | None,
    subset: str | None,
    subset_seed: int | None,
    align: str,
    symmetry: str | None,
    matching_samples: int | None,
    max_samples: int,
    seed: int,
    out_path: str | None,
    plot_path: str | None,
    allow_unpermuted: bool,
    data_root: str | None,
    device: str,
) -> None:
    """Bayesian model averaging over the star domain versus a deep ensemble of the same sources (paper Sec. 4.1).

    By default the sources are exactly the ones the star was trained on (paths and SHA-256 in its metadata), aligned
    as the star's training aligned them; the output records the alignment and the posterior tests.
    """
    from stardomain._util.diff import describe_difference
    from stardomain.bma.study import star_bma
    from stardomain.checkpoints import store
    from stardomain.checkpoints.meta import read_checkpoint, read_state
    from stardomain.checkpoints.provenance import data_line, star_sources
    from stardomain.report.bma_plot import plot_bma
    from stardomain.training import zoo

    # --max-samples, --sources/--other-sources, --matching-samples and --symmetry were checked before any data loads (_bma_checks)
    dev = resolve_device(device)
    star_state, meta = read_state(star_path)
    _refuse_non_star(meta, star_path)
    if other_dir is not None:  # the zoo's members as load_zoo picks them; their weights are read once, below
        members = zoo.zoo_checkpoints(other_dir)
    else:
        members = [read_checkpoint(p) for p in star_sources(star_path, meta, sources_dir)]
    differs = describe_difference(members[0].arch.record, meta.arch.record)
    if differs:
        raise StardomainError(
            f"the sources ({members[0].path}) and the star {star_path} have different architectures ({differs}: sources vs star)"
        )
    states = [store.load_state(ck.path)[0] for ck in members]
    labelled = [meta.labelled(star_path)] + [ck.labelled() for ck in members]
    ds, data_info = load_data_for(labelled, dataset, data_root, subset, subset_seed)
    model = store.build_model(meta.arch.record).to(dev)
    store.check_fits(model, star_state, star_path)
    for ck, s in zip(members, states):
        store.check_fits(model, s, ck.path)
    alignment = _bma_alignment(meta.starlight, align, symmetry, matching_samples)
    settings = {k: v for k, v in alignment.items() if k != "chosen_by"}
    result = star_bma(
        star_state,
        model,
        states,
        ds,
        **settings,
        max_samples=max_samples,
        seed=seed,
        device=dev,
        allow_unpermuted=allow_unpermuted,
        progress=progress_config(),
    )
    result["alignment"] = alignment
    result["sources"] = {
        "which": "other" if other_dir is not None else "the star's own",
        "other_sources": other_dir,
        "models": [{"path": str(ck.path), "sha256": ck.sha256, "seed": ck.seed} for ck in members],
    }
    result["data"] = data_info
    if out_path:
        store.atomic_write_json(Path(out_path), result)
    if plot_path:
        plot_bma(result, Path(plot_path))
    _echo_bma(result)
    warn_unconverged(members)
    which = f"other sources from {other_dir}" if other_dir is not None else "the star's own sources"
    click.echo(f"sources: {which}, {_which(members)} (segments and ensemble); {data_line(data_info)}")
