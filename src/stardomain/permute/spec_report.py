"""What ``stardomain spec`` prints: how much of a model the permutation spec covers, and why not more.

The first thing to run on your own architecture: the groups with their sizes and members,
the share of parameters a permutation reaches, every layer left unpermuted with the reason,
whether strict tracing accepts the model, and a numeric proof that a random permutation of
the spec keeps the function (max |logit difference| on a random batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from stardomain.errors import StardomainError
from stardomain.permute.apply import apply_permutation, random_permutation
from stardomain.permute.spec import Axis
from stardomain.permute.trace import example_batch, function_gap, perturbed_state, trace_spec

__all__ = ["format_report", "model_for_spec", "spec_report"]


def model_for_spec(target: str, options: Mapping[str, Any], in_shape: str | None, num_classes: int) -> nn.Module:
    """A checkpoint path, a registry name or ``pkg.module:build`` -> the model to report on."""
    from stardomain import models
    from stardomain._util.plugins import is_import_path, load_plugins
    from stardomain.checkpoints import store

    if Path(target).suffix in (".safetensors", ".json") or Path(target).is_file() or Path(target).is_dir():
        if options or in_shape:
            raise StardomainError("-o/--in-shape apply to a model name, not to a checkpoint (it records its own)")
        return store.load(target)
    if is_import_path(target):
        load_plugins([target])  # the user typed it: import its module
    shape = (3, 32, 32) if in_shape is None else _parse_shape(in_shape)
    name = models.canonical_name(target)
    # sizes checked on the meta device first, like `train` and a YAML run: a width of 2^28 is one line, not 64 GB
    models.build_on_meta(name, num_classes, shape, **dict(options))
    return models.create(name, num_classes, shape, **dict(options))


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise StardomainError(f"--in-shape {text!r}: give one sample's shape as positive ints, e.g. 1,28,28 or 20")
    return shape


def _member(ax: Axis, size: int, shape: tuple[int, ...] | None) -> str:
    full = shape is not None and ax.start == 0 and ax.block == 1 and ax.span == shape[ax.axis]
    where = "" if full else f"[{ax.start}:{ax.start + ax.span}" + (f" by {ax.block}" if ax.block > 1 else "") + "]"
    return f"{ax.key}:{ax.axis}{where}"


def spec_report(model: nn.Module, example_input: Any = None) -> dict[str, Any]:
    """Coverage, groups, unpermuted layers and a random-permutation check of ``model`` (JSON-ready)."""
    args = example_batch(model, example_input)
    try:
        trace_spec(model, args, strict=True, check=False)
        strict = None
    except StardomainError as e:
        strict = str(e)
    spec = trace_spec(model, args, strict=False, check=False)
    info = spec.summary()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    groups = [
        {"name": g, "size": n, "members": [_member(ax, n, shapes.get(ax.key)) for ax in spec.axes[g]]} for g, n in spec.groups.items()
    ]
    covered = set(spec.keys())
    uncovered = [
        {"param": k, "numel": n, "reason": spec.fixed.get(k.rsplit(".", 1)[0], "no permutation group reaches it")}
        for k, n in spec.params.items()
        if k not in covered
    ]
    check: dict[str, Any] = {"max_logit_diff": None, "kept": None}
    if spec.groups:
        state = perturbed_state(model)
        permuted = apply_permutation(state, random_permutation(spec, torch.Generator().manual_seed(0), heads=True), spec=spec)
        gap, scale = function_gap(model, state, permuted, args)
        check = {"max_logit_diff": gap, "kept": bool(gap <= 1e-4 * max(scale, 1.0))}
    arch = getattr(model, "arch", None) or {"name": type(model).__name__}
    return {
        "model": arch.get("name"),
        "in_shape": list(arch.get("in_shape", [])) or None,
        "n_groups": info["n_groups"],
        "n_units": info["n_units"],
        "covered_params": info["covered_params"],
        "total_params": info["total_params"],
        "covered_share": info["covered_share"],
        "groups": groups,
        "unpermuted_layers": dict(spec.fixed),
        "uncovered_params": uncovered,
        "tied": dict(spec.ties),
        "strict": "ok" if strict is None else strict,
        "random_permutation": check,
        # units (not parameters) permuted, per kind of stream; residual streams left unpermuted
        "unit_share": info["unit_share"],
        "stream_share": info["stream_share"],
        "residual_fixed": info["residual_fixed"],
        # attention heads that trade places as wholes (head set -> slots), and what stays in place, in words
        "head_sets": info["head_sets"],
        "warnings": info["warnings"],
    }


def format_report(r: Mapping[str, Any]) -> str:
    """The human-readable form of :func:`spec_report`."""
    share = r["covered_share"]
    lines = [
        f"{r['model']}: {r['n_groups']} permutation groups ({r['n_units']} units); "
        f"{r['covered_params']:,} of {r['total_params']:,} parameters permuted ({100 * share:.1f}%)"
        if share == share
        else f"{r['model']}: no parameters"
    ]
    if r.get("stream_share"):
        kinds = ", ".join(f"{kind} {100 * v:.0f}%" for kind, v in r["stream_share"].items())
        lines.append(f"units permuted: {100 * r['unit_share']:.1f}% ({kinds})")
    for name, n in (r.get("head_sets") or {}).items():
        lines.append(f"whole heads: {name} ({n} slots; each head moves with its q/k and v/out units)")
    for text in r.get("warnings") or ():
        lines.append(f"WARNING: {text}")
    if r["groups"]:
        lines.append("groups:")
        for g in r["groups"]:
            lines.append(f"  {g['name']} ({g['size']} units): {', '.join(g['members'])}")
    if r["unpermuted_layers"]:
        lines.append("unpermuted:")
        for layer, why in r["unpermuted_layers"].items():
            lines.append(f"  {layer}: {why}")
    for t_alias, t_key in r["tied"].items():
        lines.append(f"tied: {t_alias} is {t_key} (permuted as one tensor)")
    lines.append(f"strict tracing: {r['strict']}")
    rp = r["random_permutation"]
    if rp["max_logit_diff"] is None:
        lines.append("random permutation: nothing to permute (align, star and run refuse this model unless --allow-unpermuted)")
    else:
        verdict = "function kept" if rp["kept"] else "FUNCTION CHANGED: the spec is wrong for this model"
        lines.append(f"random permutation: max |logit difference| {rp['max_logit_diff']:.3g} ({verdict})")
    return "\n".join(lines)
