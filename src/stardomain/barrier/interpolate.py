"""Linear interpolation of state dicts, and fast evaluation of one model at many states.

``lerp_state`` forms (1 - t)·A + t·B; the curve code in :mod:`stardomain.barrier` loads each
interpolated state into ONE working copy of the model (never a copy per point) and, for
evaluation, into an fx-traced copy in which every Conv/Linear followed by an eval-mode
BatchNorm is folded into a single layer (one op instead of two per block).

Loading with ``load_state_dict`` into one instance is as fast as ``torch.func.functional_call``
for the forward itself and needs no re-binding per batch, so the curve code uses it.
"""

from __future__ import annotations

import copy
import operator
from typing import Mapping

import torch
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from stardomain.barrier.bn import has_batchnorm, reset_bn
from stardomain.defaults import points_problem
from stardomain.errors import StardomainError
from stardomain.training.memformat import channels_last_safe, has_conv2d, module_to_format

__all__ = ["EvalEngine", "check_compatible", "has_batchnorm", "interpolation_points", "lerp_state", "reset_bn"]


def check_compatible(state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor]) -> None:
    """Raise StardomainError unless both states have the same keys, shapes and dtypes."""
    if state_a.keys() != state_b.keys():
        only_a = sorted(set(state_a) - set(state_b))[:3]
        only_b = sorted(set(state_b) - set(state_a))[:3]
        raise StardomainError(f"states differ in keys (only in A: {only_a}, only in B: {only_b}); interpolate models of one architecture")
    for k, a in state_a.items():
        b = state_b[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise StardomainError(
                f"{k!r} is {tuple(a.shape)}/{a.dtype} in A but {tuple(b.shape)}/{b.dtype} in B; "
                "interpolate models of one architecture and precision"
            )


def lerp_state(state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor], t: float) -> dict[str, Tensor]:
    """(1 - t)·A + t·B for every floating tensor (parameters and BN running statistics).

    Integer buffers (``num_batches_tracked``) come from A, at t = 1 from B. t = 0 and t = 1
    return exact copies of A and B. Uses ``torch.lerp``, which gives exactly A when A == B at
    any t, so a model interpolated with itself is exactly itself (a barrier of exactly 0).
    """
    check_compatible(state_a, state_b)
    t = float(t)
    if t == 0.0:
        return {k: v.detach().clone() for k, v in state_a.items()}
    if t == 1.0:
        return {k: v.detach().clone() for k, v in state_b.items()}
    out: dict[str, Tensor] = {}
    for k, a in state_a.items():
        if a.is_floating_point() or a.is_complex():
            out[k] = torch.lerp(a.detach(), state_b[k].detach().to(a.device), t)
        else:
            out[k] = a.detach().clone()
    return out


def interpolation_points(num_points: int) -> list[float]:
    """``num_points`` evenly spaced values of t with exact end points 0.0 and 1.0."""
    if (problem := points_problem(num_points)) is not None:
        raise StardomainError(f"num_points {problem}")
    return [i / (num_points - 1) for i in range(num_points)]


# --- folding BatchNorm into the preceding layer for fast evaluation ------------------------------

_FOLDABLE = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d), (nn.Linear, nn.BatchNorm1d))


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    return any(type(layer) is lt and type(bn) is bt for lt, bt in _FOLDABLE) and getattr(bn, "track_running_stats", False)


def _build_folded(model: nn.Module) -> tuple[nn.Module, list[tuple[str, str, str]]] | None:
    """fx-traced copy of ``model`` with each (layer -> BN) pair replaced by one layer with bias.

    Returns (module, [(new layer name, layer name in model, bn name in model)]), or None when
    the model cannot be traced or has nothing to fold.
    """
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model))
    except Exception:  # untraceable models are evaluated unfolded
        return None
    modules = dict(gm.named_modules())
    pairs: list[tuple[str, str, str]] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BatchNorm):
            continue
        prev = node.args[0] if node.args else None
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1 or len(node.args) != 1:
            continue
        layer, bn = modules[prev.target], modules[node.target]
        if not _foldable(layer, bn):
            continue
        if isinstance(layer, nn.Linear):
            fused: nn.Module = nn.Linear(layer.in_features, layer.out_features, bias=True)
        else:
            fused = copy.deepcopy(layer)
            if fused.bias is None:
                fused.bias = nn.Parameter(torch.zeros(layer.out_channels, dtype=layer.weight.dtype))
        fused = fused.to(device=layer.weight.device, dtype=layer.weight.dtype)
        new_name = f"_folded_{len(pairs)}"
        gm.add_submodule(new_name, fused)
        with gm.graph.inserting_after(prev):
            new_node = gm.graph.call_module(new_name, prev.args, prev.kwargs)
        node.replace_all_uses_with(new_node)
        gm.graph.erase_node(node)
        gm.graph.erase_node(prev)
        pairs.append((new_name, str(prev.target), str(node.target)))
    if not pairs:
        return None
    _inplace_relus(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.eval()
    for p in gm.parameters():
        p.requires_grad_(False)
    return gm, pairs


_FRESH_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, _BatchNorm)
_ADDS = (operator.add, torch.add)
_RELUS = (torch.relu, torch.nn.functional.relu)


def _is_relu(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules.get(str(node.target))) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELUS and len(node.args) == 1 and not node.kwargs
    return node.op == "call_method" and node.target == "relu" and len(node.args) == 1


def _fresh(node: object, modules: Mapping[str, nn.Module]) -> bool:
    """True when ``node`` makes a new tensor nobody else reads, so it may be overwritten."""
    if not isinstance(node, fx.Node) or len(node.users) != 1:
        return False
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _FRESH_MODULES)
    return (
        node.op == "call_function"
        and node.target in _ADDS
        and len(node.args) == 2
        and not node.kwargs
        and all(isinstance(a, fx.Node) for a in node.args)
    )


def _inplace_relus(gm: fx.GraphModule) -> int:
    """Rewrite relu(fresh tensor) as in-place relu and relu(a + b) as one fused add-relu.

    Saves an allocation and a sweep over memory per activation (10-20% of a CPU forward for
    small ResNets). Only tensors produced by a Conv/Linear/BN or an add and read by the relu
    alone are overwritten, so inputs, parameters and shared activations are never touched.
    """
    modules = dict(gm.named_modules())
    add_relu = getattr(torch.ops.aten, "_add_relu", None)
    count = 0
    for node in list(gm.graph.nodes):
        if not _is_relu(node, modules) or not _fresh(node.args[0], modules):
            continue
        src = node.args[0]
        with gm.graph.inserting_after(node):
            if src.op == "call_function" and add_relu is not None:
                new = gm.graph.call_function(add_relu.Tensor, tuple(src.args))
            else:
                new = gm.graph.call_function(torch.relu_, (src,))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        if src.op == "call_function" and add_relu is not None:
            gm.graph.erase_node(src)
        count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count


def _traced_sharing(model: nn.Module) -> fx.GraphModule | None:
    """fx trace of ``model`` that shares its submodules (so BN hooks and buffers are the same)."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception:
        return None
    return gm if _inplace_relus(gm) else None


class EvalEngine:
    """One private working copy of a model, evaluated at many states without re-copying.

    ``load(state)`` copies weights into the working copy; ``reset_bn`` re-estimates its BN
    statistics; ``forward`` runs the eval-mode network, BN folded into the preceding layer
    when the graph allows it (``fold_bn``). Conv models may run in channels_last on CPU, which
    oneDNN executes markedly faster than NCHW for most layer shapes; with ``channels_last=None``
    the engine decides on the first batch it sees: channels_last only when it gives the same
    logits (a ``x.view(x.size(0), -1)`` after a conv does not, or fails). The choice depends on
    the model alone, never on a timing, so a curve is reproducible to the last digit.
    """

    def __init__(
        self, model: nn.Module, device: str | torch.device = "cpu", fold_bn: bool = True, channels_last: bool | None = None
    ) -> None:
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        conv = has_conv2d(self.model)
        # None: undecided until the first batch (see _choose_format); a format or False once decided
        self._format_choice: bool | None = (
            (channels_last and conv) if channels_last is not None else (None if conv and self.device.type == "cpu" else False)
        )
        self.memory_format: torch.memory_format | None = None
        self.has_bn = has_batchnorm(self.model)
        built = _build_folded(self.model) if fold_bn and self.has_bn else None
        self.folded: nn.Module | None
        self.pairs: list[tuple[str, str, str]]
        self.folded, self.pairs = built if built is not None else (None, [])
        if self._format_choice:
            self._use_channels_last()
        # the BN pass runs a trace sharing the working copy's modules, with in-place relus
        self._bn_forward = _traced_sharing(self.model) if self.has_bn else None
        self._sub = dict(self.model.named_modules())
        self._fsub = dict(self.folded.named_modules()) if self.folded is not None else {}
        self._bind_shared()

    def _bind_shared(self) -> None:
        """Pair the folded copy's tensors that mirror an unfolded tensor of the working copy (fc, ...).

        Re-run after any memory-format change: converting a module replaces its 4-d tensors.
        """
        own = self.model.state_dict()
        self._shared = (
            [(v, own[k]) for k, v in self.folded.state_dict().items() if k in own and not k.startswith("_folded_")]
            if self.folded is not None
            else []
        )

    def _use_channels_last(self) -> None:
        """Convert the working and folded copies (call ``_bind_shared`` after)."""
        self.memory_format = torch.channels_last
        self.model = module_to_format(self.model, torch.channels_last)
        if self.folded is not None:
            self.folded = module_to_format(self.folded, torch.channels_last)

    def _choose_format(self, x: Tensor) -> None:
        """Decide the layout once, by the rule training uses too (:func:`stardomain.training.memformat.channels_last_safe`).

        Models that flatten a feature map with ``.view`` fail (or, after a transpose,
        disagree) under channels_last; they keep the default layout. (benchmarks/bench_barrier.py
        measured channels_last faster on CPU for the registry's conv nets.)
        """
        self._format_choice = channels_last_safe(self.model, x)
        if self._format_choice:
            self._use_channels_last()
            self._bind_shared()

    def load(self, state: Mapping[str, Tensor]) -> None:
        """Copy ``state`` into the working copy (strict: keys must match the architecture)."""
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise StardomainError(f"state does not fit the model: {str(e).splitlines()[0]}") from None
        self._refold()

    def reset_bn(self, x: Tensor, indices: Tensor, batch_size: int = 512, estimator: str = "pooled") -> None:
        """Re-estimate BN statistics on ``x[indices]`` (the fixed pass order)."""
        if self._format_choice is None:
            self._choose_format(x[indices[:2]])  # channels_last_safe probes two samples
        if self.has_bn:
            reset_bn(
                self.model,
                x,
                batch_size=batch_size,
                indices=indices,
                estimator=estimator,  # type: ignore[arg-type]
                memory_format=self.memory_format,
                forward=self._bn_forward,
            )
            self._refold()

    @torch.no_grad()
    def _refold(self) -> None:
        """Write W·γ/σ and (b - μ)·γ/σ + β of the current BN statistics into the folded layers."""
        for new_name, layer_name, bn_name in self.pairs:
            layer, bn, fused = self._sub[layer_name], self._sub[bn_name], self._fsub[new_name]
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale
            if bn.bias is not None:
                shift = shift + bn.bias
            w = layer.weight
            fused.weight.copy_(w * scale.reshape((-1,) + (1,) * (w.dim() - 1)))
            bias = shift if layer.bias is None else layer.bias * scale + shift
            fused.bias.copy_(bias)
        for dst, src in self._shared:
            dst.copy_(src)

    def forward(self, x: Tensor) -> Tensor:
        """Eval-mode logits for one batch (call under torch.inference_mode / no_grad)."""
        x = x.to(self.device, non_blocking=True)
        if self._format_choice is None:
            self._choose_format(x)
        if self.memory_format is not None and x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        net = self.folded if self.folded is not None else self.model
        return net(x)
