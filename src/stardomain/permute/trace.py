"""``trace_spec``: derive a model's permutation spec from its ``torch.fx`` graph, then prove it.

The graph walk lives in :mod:`stardomain.permute.tracer`; this module runs the model once
to learn every node's shape, hands the graph to the walker, and checks the answer
numerically (a random permutation of the spec must leave the outputs unchanged), so a
tracing mistake cannot pass silently.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from stardomain.errors import StardomainError
from stardomain.permute.apply import apply_permutation, random_permutation
from stardomain.permute.spec import PermutationSpec
from stardomain.permute.tracer import Tracer

__all__ = ["example_batch", "export_graph", "function_gap", "perturbed_state", "trace_spec"]


def example_batch(model: nn.Module, example_input: Any = None) -> tuple[Any, ...]:
    """Positional inputs for one forward: ``example_input``, or a seeded random batch of ``model.arch["in_shape"]``."""
    if example_input is not None:
        args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
        empty = next((a for a in args if isinstance(a, Tensor) and (a.dim() == 0 or a.numel() == 0)), None)
        if empty is not None:  # no sample: the function check would compare nothing and report "kept"
            raise StardomainError(
                f"example_input has shape {tuple(empty.shape)}: no sample to trace or check on; give a batch of at least one"
            )
        return args
    arch = getattr(model, "arch", None)
    if isinstance(arch, dict) and "in_shape" in arch:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
        gen = torch.Generator().manual_seed(0)
        return (torch.randn(2, *arch["in_shape"], generator=gen).to(device),)
    raise StardomainError("tracing needs example_input (a batch the model accepts), or a model built by stardomain.models.create")


def tied_names(model: nn.Module) -> dict[str, str]:
    """``{alias: first name}`` for every state entry that is the same tensor as an earlier one."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for k, t in model.state_dict(keep_vars=True).items():
        name = first.setdefault(id(t), k)
        if name != k:
            out[k] = name
    return out


def _example_input_error(model: nn.Module, args: tuple[Any, ...], exc: Exception) -> str:
    """One line saying why the model refused its example input: the dtype where an ``nn.Embedding`` got floats
    (torch.fx's message talks of the call site, and the old hint said 'shape'), else the error's first line."""
    floats = [a for a in args if isinstance(a, Tensor) and a.is_floating_point()]
    emb = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)), None)
    if floats and emb is not None:
        name, m = emb
        return (
            f"{type(model).__name__} has nn.Embedding {name!r}, which takes integer token ids, but the "
            f"example input is {str(floats[0].dtype).removeprefix('torch.')}: pass token ids of dtype torch.long, "
            f"e.g. example_input=torch.randint(0, {m.num_embeddings}, (2, {floats[0].shape[-1]}))"
        )
    first = (str(exc).strip().splitlines() or [""])[0]
    return (
        f"running {type(model).__name__} on the example input of shape {[tuple(a.shape) for a in args if isinstance(a, Tensor)]} "
        f"failed ({type(exc).__name__}: {first}); pass an example_input the model accepts (shape and dtype)"
    )


def state_ties(state: Mapping[str, Tensor]) -> dict[str, str]:
    """``{alias: first name}`` for entries of a state dict that are one tensor (same storage, offset, shape and
    strides): how a tie shows in a model's ``state_dict()`` when no model is at hand."""
    first: dict[tuple[Any, ...], str] = {}
    out: dict[str, str] = {}
    for k, t in state.items():
        if not isinstance(t, Tensor) or t.numel() == 0:
            continue
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.device)
        name = first.setdefault(ident, k)
        if name != k:
            out[k] = name
    return out


def check_ties(spec: PermutationSpec, model: nn.Module | None, state: Mapping[str, Tensor], what: str) -> None:
    """Refuse a spec that does not declare a tie the model (or the state) has: permuting one name of a tied
    tensor and not the other leaves the alias in the old order, a broken model that the function check, which
    drops aliases, cannot see (a made-up barrier follows)."""
    have = tied_names(model) if model is not None else state_ties(state)
    for alias, first in have.items():
        if spec.ties.get(alias) == first or spec.ties.get(first) == alias:
            continue
        raise StardomainError(
            f"{what}: {alias} is tied to {first} (one tensor) but the permutation spec has no such tie; add "
            f"ties={{{alias!r}: {first!r}}} to the PermutationSpec, or let trace_spec(model) write the spec"
        )


def no_cache(model: nn.Module) -> dict[str, Any]:
    """Keyword arguments that keep a Hugging Face model from building a key/value cache (``use_cache=False``) when its
    ``forward`` takes ``use_cache``: a default ``GPT2Config`` has it on, and the cache (concatenated along tokens,
    returned beside the logits) is neither the function being permuted nor part of what a permutation keeps."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


def _outputs(y: Any) -> list[Tensor]:
    """The tensors a function check compares: the logits where the output has them (a ``ModelOutput``'s hidden
    states and caches are in the permuted unit order), else every tensor in it."""
    if not isinstance(y, Tensor) and (isinstance(getattr(y, "logits", None), Tensor) or (isinstance(y, dict) and "logits" in y)):
        from stardomain._util.logits import logits_of

        return [logits_of(y)]
    return [t for t in torch.utils._pytree.tree_leaves(y) if isinstance(t, Tensor)]


def function_gap(
    model: nn.Module, state_1: Mapping[str, Tensor], state_2: Mapping[str, Tensor], args: tuple[Any, ...]
) -> tuple[float, float]:
    """``(max |output difference|, max |output|)`` of ``model`` run (eval mode) at two states.

    The model's own weights and train/eval modes are left as they were.
    """
    aliases = set(tied_names(model))  # a tied tensor is passed once, under its first name
    kwargs = no_cache(model)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            y1 = functional_call(model, {k: v for k, v in state_1.items() if k not in aliases}, args, kwargs)
            y2 = functional_call(model, {k: v for k, v in state_2.items() if k not in aliases}, args, kwargs)
    finally:
        for m, flag in modes.items():
            m.training = flag
    gap, scale = 0.0, 0.0
    outs1, outs2 = _outputs(y1), _outputs(y2)
    for a, b in zip(outs1, outs2):
        finite = a.isfinite() & b.isfinite()
        if not torch.equal(finite, a.isfinite()) or not torch.equal(finite, b.isfinite()):
            return float("inf"), scale
        if finite.any():
            gap = max(gap, float((a[finite].double() - b[finite].double()).abs().max()))
            scale = max(scale, float(a[finite].abs().max()))
    return gap, scale


def _shapes(gm: torch.fx.GraphModule, args: tuple[Any, ...]) -> dict[str, tuple[int, ...] | None]:
    """Run the graph once (eval mode, no grad) and record every node's tensor shape."""
    shapes: dict[str, tuple[int, ...] | None] = {}

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            shapes[n.name] = tuple(result.shape) if isinstance(result, Tensor) else None
            return result

    _Recorder(gm).run(*args)
    return shapes


class _TensorOutputs(nn.Module):
    """``model`` with its output reduced to the tensors in it, for ``torch.export`` (a Hugging Face model
    returns a ``ModelOutput``: its logits; no key/value cache is built, :func:`no_cache`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.kwargs = no_cache(model)

    def forward(self, *args: Any) -> tuple[Tensor, ...]:
        return tuple(_outputs(self.model(*args, **self.kwargs)))


def export_graph(model: nn.Module, args: tuple[Any, ...]) -> tuple[torch.fx.GraphModule, dict[str, tuple[int, ...] | None], dict[str, str]]:
    """``torch.export`` (non-strict) capture of ``model`` on ``args``: the ATen graph, every node's tensor shape,
    and ``{placeholder node: state key}`` for the parameters and buffers the graph reads."""
    ep = torch.export.export(_TensorOutputs(model), args, strict=False)
    sig = ep.graph_signature
    placeholders = {name: fqn.removeprefix("model.") for name, fqn in {**sig.inputs_to_parameters, **sig.inputs_to_buffers}.items()}
    shapes: dict[str, tuple[int, ...] | None] = {}
    for n in ep.graph.nodes:
        v = n.meta.get("val")
        shapes[n.name] = tuple(int(d) for d in v.shape) if isinstance(v, Tensor) else None
    return ep.graph_module, shapes, placeholders


CAPTURES = ("auto", "fx", "export")


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _run_shapes(model: nn.Module, run: Any, args: tuple[Any, ...], exporting: bool = False, fx_error: Exception | None = None) -> Any:
    """``run()`` (a capture that runs the model once) in eval mode without gradients, the modes restored after; a
    model refusing its example input says so in the usual words, a capture that fails names fx's reason too."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            try:
                return run()
            except StardomainError:
                raise
            except Exception as exc:
                if not exporting:
                    raise StardomainError(_example_input_error(model, args, exc)) from exc
                try:  # the model refusing its input is the likelier story: say so in the usual words
                    model(*args, **no_cache(model))
                except Exception as run_exc:
                    raise StardomainError(_example_input_error(model, args, run_exc)) from run_exc
                fx_note = f"torch.fx: {_first_line(fx_error)}; " if fx_error is not None else ""
                raise StardomainError(
                    f"cannot capture a graph of {type(model).__name__} ({fx_note}torch.export: {_first_line(exc)}); "
                    "pass a hand-written PermutationSpec"
                ) from exc
    finally:
        for m, flag in modes.items():
            m.training = flag


def _walk(
    model: nn.Module,
    strict: bool,
    gm: torch.fx.GraphModule,
    shapes: dict[str, tuple[int, ...] | None],
    placeholders: dict[str, str] | None,
) -> PermutationSpec:
    """The layout rules over one captured graph: the spec, or (strict) a refusal naming the node."""
    tracer = Tracer(model, strict, tied_names(model), placeholders)
    tracer.shape = shapes
    tracer.run(gm)
    return tracer.spec()


def trace_spec(
    model: nn.Module,
    example_input: Any = None,
    strict: bool = True,
    check: bool = True,
    capture: str = "auto",
) -> PermutationSpec:
    """Derive the permutation spec of ``model`` from a graph of its forward.

    ``capture`` picks the graph: ``"fx"`` (``torch.fx.symbolic_trace``: modules and torch functions),
    ``"export"`` (``torch.export.export(..., strict=False)``: ATen ops, which follows the shape- and
    dtype-dependent Python of Hugging Face models), or ``"auto"`` (default): fx, and export where fx
    cannot trace the model or its graph is refused (a CLS token's ``[:, 0]`` pooling); an error then names both
    reasons. Both graphs go through the same layout rules; ``spec.capture`` says which one was used. A key/value
    cache is never built while tracing or checking (``use_cache=False`` where the forward takes it).
    ``example_input`` (a tensor or tuple of tensors) is needed to learn feature-map shapes;
    it defaults to a random batch of ``model.arch["in_shape"]``. With ``strict`` (default)
    any layer or op whose effect on channel order is unknown raises
    :class:`StardomainError`; with ``strict=False`` the units flowing into it are left
    unpermuted and listed in ``spec.fixed``. With ``check`` the spec is verified by
    comparing the outputs of a perturbed copy of the model before and after a random
    permutation (eval mode), so a tracing mistake cannot pass silently. A residual stream
    left unpermuted (fixed) is warned about (:class:`UserWarning`): most of a transformer's
    symmetry is then lost; ``spec.summary()["streams"]`` says which units are permuted.
    """
    if capture not in CAPTURES:
        raise StardomainError(f"unknown capture {capture!r}; use one of {', '.join(CAPTURES)}")
    gm: torch.fx.GraphModule | None = None
    fx_error: Exception | None = None
    if capture in ("auto", "fx"):
        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many types; all mean "not traceable"
            if capture == "fx":
                raise StardomainError(
                    f"torch.fx cannot trace {type(model).__name__} ({_first_line(exc)}); remove data-dependent "
                    "control flow from forward, use capture='export', or pass a hand-written PermutationSpec"
                ) from exc
            fx_error = exc
    args = example_batch(model, example_input)
    spec: PermutationSpec | None = None
    if gm is not None:
        shapes = _run_shapes(model, lambda: _shapes(gm, args), args)
        try:
            spec = _walk(model, strict, gm, shapes, None)
        except StardomainError as exc:  # fx's graph refused (e.g. a CLS token's [:, 0]): export's ATen graph may pass
            if capture == "fx":
                raise
            fx_error = exc
    if spec is None:
        egm, shapes, placeholders = _run_shapes(model, lambda: export_graph(model, args), args, True, fx_error)
        try:
            spec = _walk(model, strict, egm, shapes, placeholders)
        except StardomainError as exc:
            if fx_error is None or not isinstance(fx_error, StardomainError):
                raise
            raise StardomainError(
                f"cannot derive a permutation spec of {type(model).__name__} with either capture: torch.fx's graph was "
                f"refused ({_first_line(fx_error)}) and so was torch.export's ({_first_line(exc)}); pass a hand-written "
                "PermutationSpec, or trace_spec(..., strict=False) to keep those units unpermuted"
            ) from exc
        spec.capture = "export"
    else:
        spec.capture = "fx"
    _warn_fixed_streams(model, spec)
    if check:
        _verify(model, spec, args)
    return spec


def _warn_fixed_streams(model: nn.Module, spec: PermutationSpec) -> None:
    """Warn when a residual stream (units joined by a residual ``+``) is left unpermuted, when attention heads stay in
    their slots, and when units inside heads stay fixed (rotary q/k): one warning, every reason in it."""
    found = spec.warnings()
    if found:
        warnings.warn(f"{type(model).__name__}: " + "; ".join(found), UserWarning, stacklevel=3)


def perturbed_state(model: nn.Module, seed: int = 1234) -> dict[str, Tensor]:
    """The model's state with every float tensor scaled and shifted at random (tied tensors stay tied).

    Freshly initialised layers are often symmetric (zero biases, unit norms), which would
    hide a wrong spec; perturbing breaks those symmetries before a permutation is tested.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    made: dict[int, Tensor] = {}
    for k, t in model.state_dict(keep_vars=True).items():  # keep_vars: the model's own tensor objects
        v = t.detach()
        if id(t) in made or not v.is_floating_point():
            state[k] = made.get(id(t), v)
            continue
        scale = torch.rand(v.shape, generator=gen).to(v) * 0.5 + 0.75  # keeps variances positive
        shift = 0.0 if k.endswith("running_var") else 0.1 * torch.randn(v.shape, generator=gen).to(v)
        state[k] = made[id(t)] = v * scale + shift
    return state


def _verify(model: nn.Module, spec: PermutationSpec, args: tuple[Any, ...]) -> None:
    """Outputs of a perturbed model must not change under a random permutation of the spec."""
    if not spec.groups:
        return
    state = perturbed_state(model)
    permuted = apply_permutation(state, random_permutation(spec, torch.Generator().manual_seed(1234), heads=True), spec=spec)
    gap, scale = function_gap(model, state, permuted, args)
    if not gap <= 1e-4 * max(scale, 1e-6):
        raise StardomainError(
            f"the traced permutation spec of {type(model).__name__} changes the network's outputs "
            f"(max diff {gap:.3g}); this model needs a hand-written PermutationSpec"
        )
