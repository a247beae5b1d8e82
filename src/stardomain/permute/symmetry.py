"""Symmetry classes beyond permutations: orthogonal maps of the residual stream, invertible maps per head.

``align(..., symmetry=...)`` runs the permutation matcher first, then (for ``orthogonal`` or
``invertible``) :func:`fit_symmetry` moves the permuted B further towards A by maps that keep its
function exactly, and ``align``'s function check proves that they did.

**orthogonal** (a map ``Q`` of each residual stream the spec traced, ``x -> Q x``). Every tensor
that writes the stream (embeddings, CLS token, positions, the output projections and their biases)
and every layer that reads it is contracted with ``Q`` along its stream axis, so ``Q`` cancels
between writers and readers. A *norm* between the stream and its readers commutes with ``Q`` only
once its gain is 1, so first every norm's gain ``g`` is *folded* into the linear layers it feeds
(``W -> W diag(g)``; a LayerNorm bias becomes ``beta / g``, from then on a vector of the stream that
``Q`` rotates like any other), which computes the same function. Exact maps, after folding:

* RMSNorm (Llama, T5): every orthogonal ``Q`` (``rms(Q x) = rms(x)``).
* LayerNorm (GPT-2, ViT): exactly the orthogonal maps that keep the all-ones direction
  (``Q 1 = +-1``): they commute with the mean subtraction and keep the standard deviation.
  Rotations that move ``1`` are not exact (LayerNorm subtracts the mean of ``Q x``, not ``Q`` of
  the mean); ``Q`` is restricted to that subgroup (Procrustes in the complement of ``1``, plus the
  sign along ``1``).
* Post-norm blocks (BERT: the norm's output is also the residual stream), a BatchNorm/GroupNorm on
  the stream, an output head tied to the embeddings behind a norm, or an activation applied to the
  stream (CNNs): not exact; refused in one line (only models whose residual stream is read by
  norms followed by linear layers, or by linear layers, qualify).

``Q`` is Procrustes: it maximises ``<theta_A, Q(theta_B)>`` summed over every tensor of the stream
(the SVD of the summed cross-covariance ``C = sum_T T_A^T T_B``: ``Q = U V^T``), computed on the
folded states. After the maps B is *unfolded into A's norm gains* (its norms get A's gains, the
layers they feed ``W -> W diag(1/g_A)``, its LayerNorm biases ``beta -> g_A * beta``): exact again,
A is untouched, and since both ends now share their gains the straight path between A and the
aligned B computes exactly what the path between the folded states computes (the bias term is
``W diag(g_A) (beta / g_A)`` at every point of either path). A gain near 0 (below 1e-6 of its
largest) cannot be divided out: refused.

**invertible** (per attention head, on top of the orthogonal map where the model has one). The
QK circuit: ``q_h -> M q_h``, ``k -> M^-T k`` (weights and biases), which keeps every score
``q.k``: exact without rotary embeddings. With rotary, only maps commuting with every 2x2 rotation
block (a scaled rotation per frequency pair) are exact; the QK maps are then left out and the
record says why. The OV circuit: ``v_h -> N v_h`` (weights and bias), ``W_o[:, h] -> W_o[:, h] N^-1``:
always exact (attention rows sum to 1). A key/value head shared by several query heads (grouped-query
attention) takes one map for all of them. Each map is fitted to A's weights by linear least squares
``min ||M Q_B - Q_A||^2 + ||M^T K_A - K_B||^2`` (``||N V_B - V_A||^2 + ||O_A N - O_B||^2`` for OV; the
second term is the output-side mismatch ``O_A - O_B N^-1`` weighted by ``N``), a Sylvester equation
solved exactly. Conditioning guard: a fit with condition number above ``max_cond`` (default 1e4) or
a singular system falls back to the orthogonal map of the same cross-covariance (Procrustes); of
identity, the fit and the fallback the one nearest A in plain squared distance of the head's
tensors is kept, so a map never moves B away from A.

With weight matching, the maps and a re-matching of the other unit groups alternate (coordinate
descent on ``||theta_A - T(theta_B)||^2``, which never increases) until nothing changes or ``rounds``
are spent. The record (``MatchResult.symmetry``) names the maps, subgroups, folded norms, refusals
and the distance before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from stardomain.defaults import SYMMETRIES
from stardomain.errors import StardomainError
from stardomain.permute.apply import apply_permutation, compose, is_identity
from stardomain.permute.spec import PermutationSpec
from stardomain.permute.trace import function_gap, tied_names

__all__ = [
    "SYMMETRIES",
    "AttentionBlock",
    "attention_blocks",
    "check_symmetry",
    "fit_symmetry",
    "fold_norms",
    "map_heads",
    "random_orthogonal",
    "residual_stream",
    "rotate_stream",
]

_ROPE_KEYS = ("rope_theta", "rope_parameters", "rope_scaling", "rotary_dim", "rotary_pct", "rotary_emb_base")


def check_symmetry(symmetry: str) -> str:
    """The setting, or a one-line error naming the choices."""
    if symmetry not in SYMMETRIES:
        raise StardomainError(f"unknown symmetry {symmetry!r}; use one of {', '.join(SYMMETRIES)}")
    return symmetry


# --------------------------------------------------------------------------- residual stream: norms, folding


@dataclass
class _Norm:
    name: str  # module path
    weight: str | None  # state key of the gain (None: no affine gain)
    bias: str | None
    centers: bool  # LayerNorm: subtracts the mean
    readers: list[tuple[str, int]] = field(default_factory=list)  # (weight key, input axis) of the layers it feeds


@dataclass
class ResidualStream:
    """One residual stream of a traced spec: its tensors, its norms and the layers each norm feeds."""

    group: str
    size: int
    entries: list[tuple[str, int]]  # (key, axis) contracted with Q: every stream tensor but the norms' gains
    norms: list[_Norm]
    centered: bool  # some norm subtracts the mean: Q must keep the all-ones direction


def _module(model: nn.Module, key: str) -> tuple[str, nn.Module | None]:
    path = key.rsplit(".", 1)[0] if "." in key else ""
    try:
        return path, model.get_submodule(path)
    except AttributeError:
        return path, None


def _is_conv1d(mod: nn.Module | None) -> bool:
    w = getattr(mod, "weight", None)
    return type(mod).__name__ == "Conv1D" and isinstance(w, Tensor) and w.dim() == 2


def _is_norm(mod: nn.Module | None) -> bool:
    if isinstance(mod, (nn.LayerNorm, nn.RMSNorm)):
        return True
    name = type(mod).__name__
    return mod is not None and (name.endswith("RMSNorm") or name.endswith("LayerNorm")) and "Batch" not in name


def _unit_norm(mod: nn.Module) -> str:
    """Why a per-unit normalisation of the stream rules rotations out ('' if it is not one)."""
    if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
        return f"{type(mod).__name__} normalises each unit of the stream on its own, which no rotation commutes with"
    return ""


def _centers(mod: nn.Module, d: int) -> bool:
    """A LayerNorm-like module subtracts the mean: its output does not move when a constant is added."""
    gen = torch.Generator().manual_seed(0)
    p = next(iter(mod.parameters()), None)
    x = torch.randn(3, d, generator=gen).to(p if p is not None else torch.zeros(()))
    with torch.no_grad():
        return bool(torch.allclose(mod(x), mod(x + 3.0), atol=1e-4, rtol=1e-4))


def residual_stream(model: nn.Module, spec: PermutationSpec, args: tuple[Any, ...]) -> list[ResidualStream]:
    """The residual streams of ``spec`` with their norms and the linear layers each norm feeds.

    Raises a one-line StardomainError when there is none or one cannot take orthogonal maps.
    """
    groups = [g for g, s in spec.streams.items() if s.get("residual") and s.get("permuted") and spec.axes.get(g)]
    if not groups:
        raise StardomainError(
            f"symmetry 'orthogonal' needs a residual stream, and the spec of {type(model).__name__} traces none (only "
            "models whose residual stream is read by norms followed by linear layers qualify); use symmetry 'permutation'"
        )
    streams: list[ResidualStream] = []
    norm_mods: dict[str, nn.Module] = {}
    for g in groups:
        size = spec.groups[g]
        entries: list[tuple[str, int]] = []
        norms: dict[str, _Norm] = {}
        for ax in spec.axes[g]:
            path, mod = _module(model, ax.key)
            if ax.key in spec.buffers:
                raise StardomainError(
                    f"symmetry 'orthogonal': the residual stream {g!r} carries buffer {ax.key!r}; use symmetry 'permutation'"
                )
            if mod is not None and _unit_norm(mod):
                raise StardomainError(
                    f"symmetry 'orthogonal' does not fit {type(model).__name__}: {_unit_norm(mod)} ({path}); use symmetry 'permutation'"
                )
            if ax.block != 1 or ax.start != 0 or ax.span != size:
                raise StardomainError(
                    f"symmetry 'orthogonal': {ax.key!r} holds only part of the residual stream {g!r} (a slice or a "
                    "flattened block), which a rotation cannot act on; use symmetry 'permutation'"
                )
            if mod is not None and _is_norm(mod):
                leaf = ax.key.rsplit(".", 1)[-1]
                n = norms.setdefault(path, _Norm(path, None, None, False))
                norm_mods[path] = mod
                if leaf == "weight":
                    n.weight = ax.key
                    continue
                n.bias = ax.key  # after folding, a vector of the stream: rotated with it
            entries.append((ax.key, ax.axis))
        for path, n in norms.items():
            n.centers = _centers(norm_mods[path], size)
        streams.append(ResidualStream(g, size, entries, list(norms.values()), any(n.centers for n in norms.values())))
    _find_readers(model, spec, streams, norm_mods, args)
    return streams


def _find_readers(
    model: nn.Module, spec: PermutationSpec, streams: list[ResidualStream], norm_mods: dict[str, nn.Module], args: tuple[Any, ...]
) -> None:
    """One forward with hooks: a Linear (or Conv1D) whose input is a norm's output (or a view of it) reads that norm."""
    out_of: dict[int, str] = {}
    kept: list[Tensor] = []  # norm outputs stay alive, so no later tensor reuses their memory
    read_by: dict[str, str] = {}  # linear layer -> the norm whose output it reads
    hooks = []

    def norm_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, Tensor):
                kept.append(out)
                out_of[out.untyped_storage().data_ptr()] = name

        return hook

    def lin_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, inputs: Any) -> None:
            if inputs and isinstance(inputs[0], Tensor):  # looked up now: every norm output so far is alive
                norm = out_of.get(inputs[0].untyped_storage().data_ptr())
                if norm is not None:
                    read_by[name] = norm

        return hook

    modules = dict(model.named_modules())
    for name, mod in modules.items():
        if name in norm_mods:
            hooks.append(mod.register_forward_hook(norm_hook(name)))
        elif isinstance(mod, nn.Linear) or _is_conv1d(mod):
            hooks.append(mod.register_forward_pre_hook(lin_hook(name)))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
        for m, flag in modes.items():
            m.training = flag
    for stream in streams:
        by_name = {n.name: n for n in stream.norms}
        entries = set(stream.entries)
        tied = set(tied_names(model)) | set(spec.ties)
        for path, norm_name in read_by.items():
            norm = by_name.get(norm_name)
            if norm is None:
                continue
            key, axis = f"{path}.weight", 0 if _is_conv1d(modules[path]) else 1
            if (key, axis) not in entries and key not in tied:
                raise StardomainError(
                    f"symmetry 'orthogonal': {path} reads the norm {norm.name} but the spec does not put its input on the "
                    f"residual stream {stream.group!r}; use symmetry 'permutation'"
                )
            norm.readers.append((key, axis))


def _tied(model: nn.Module, spec: PermutationSpec) -> set[str]:
    out = set(tied_names(model)) | set(tied_names(model).values())
    return out | set(spec.ties) | set(spec.ties.values())


def fold_norms(
    state: Mapping[str, Tensor],
    streams: list[ResidualStream],
    *,
    model: nn.Module,
    spec: PermutationSpec,
    gains: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Fold every norm's gain ``g`` into the linear layers it feeds (``W -> W diag(g)``; its bias ``beta ->
    beta / g``, a vector of the stream from then on), leaving gain 1: the same function, a new dict.

    With ``gains`` (another state, A) the reverse, into *those* gains: ``W -> W diag(1/g_A)``,
    ``beta -> g_A * beta``, gain ``g_A``."""
    out = dict(state)
    tied = _tied(model, spec)
    for stream in streams:
        for n in stream.norms:
            if n.weight is None:
                continue
            if not n.readers:
                raise StardomainError(
                    f"symmetry 'orthogonal': the norm {n.name} feeds no linear layer directly, so its gain cannot be folded "
                    "away; only models whose residual stream is read by norms followed by linear layers qualify"
                )
            g = (gains if gains is not None else state)[n.weight].double()
            if float(g.abs().min()) < 1e-6 * max(float(g.abs().max()), 1e-30):
                who = "A's" if gains is not None else "a"
                raise StardomainError(
                    f"symmetry 'orthogonal': {who} norm {n.name} has a gain of about 0 at some unit, which cannot be "
                    "folded into the layers it feeds; use symmetry 'permutation'"
                )
            for key, axis in n.readers:
                if key in tied:
                    raise StardomainError(
                        f"symmetry 'orthogonal': {key} is tied to another tensor (an output head tied to the embeddings) and "
                        f"reads the norm {n.name}, whose gain cannot be folded into it; untie the head or use symmetry 'permutation'"
                    )
                w = state[key].double()
                shape = [1] * w.dim()
                shape[axis] = -1
                out[key] = (w / g.view(shape) if gains is not None else w * g.view(shape)).to(state[key].dtype)
            if n.bias is not None:
                beta = state[n.bias].double()
                out[n.bias] = (beta * g if gains is not None else beta / g).to(state[n.bias].dtype)
            out[n.weight] = gains[n.weight].clone() if gains is not None else torch.ones_like(state[n.weight])
    return out


# --------------------------------------------------------------------------- orthogonal maps


def random_orthogonal(d: int, generator: torch.Generator | int | None = None, *, fix_ones: bool = False) -> Tensor:
    """A random orthogonal d x d matrix (float64); ``fix_ones``: one that maps the all-ones vector to itself."""
    gen = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(int(generator or 0))
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if not fix_ones:
        return q
    basis = _complement(d)
    u = torch.full((d, 1), d**-0.5, dtype=torch.float64)
    return u @ u.T + basis @ random_orthogonal(d - 1, gen) @ basis.T


def _complement(d: int) -> Tensor:
    """An orthonormal basis (d x d-1) of the vectors whose entries sum to 0."""
    u = torch.full((d, 1), d**-0.5, dtype=torch.float64)
    full, _ = torch.linalg.qr(torch.cat([u, torch.eye(d, dtype=torch.float64)[:, : d - 1]], 1))
    return full[:, 1:]


def _procrustes(c: Tensor) -> Tensor:
    u, _, vh = torch.linalg.svd(c)
    return u @ vh


def _stream_matrix(t: Tensor, axis: int) -> Tensor:
    return t.double().movedim(axis, -1).reshape(-1, t.shape[axis])


def rotate_stream(state: Mapping[str, Tensor], stream: ResidualStream, q: Tensor, *, spec: PermutationSpec) -> dict[str, Tensor]:
    """``x -> Q x`` on the stream: every stream tensor (not the norms') contracted with ``Q`` along its axis."""
    out = dict(state)
    for key, axis in stream.entries:
        t = state[key]
        out[key] = (t.double().movedim(axis, -1) @ q.T.to(t.device)).movedim(-1, axis).to(t.dtype)
    for alias, first in spec.ties.items():
        if alias in out and first in out:
            out[alias] = out[first]
    return out


def _fit_rotation(a: Mapping[str, Tensor], b: Mapping[str, Tensor], stream: ResidualStream) -> Tensor:
    c = torch.zeros(stream.size, stream.size, dtype=torch.float64)
    for key, axis in stream.entries:
        c += (_stream_matrix(a[key], axis).T @ _stream_matrix(b[key], axis)).cpu()
    if not stream.centered:
        return _procrustes(c)
    basis = _complement(stream.size)
    u = torch.full((stream.size, 1), stream.size**-0.5, dtype=torch.float64)
    sign = -1.0 if float(u.T @ c @ u) < 0 else 1.0
    return sign * (u @ u.T) + basis @ _procrustes(basis.T @ c @ basis) @ basis.T


# --------------------------------------------------------------------------- attention heads


@dataclass
class _Proj:
    weight: str
    axis: int  # the axis of the weight that carries head units
    offset: int  # first index of this projection on that axis (fused qkv)
    bias: str | None


@dataclass
class AttentionBlock:
    """One self-attention layer: where its q, k, v and output projections keep each head."""

    name: str
    heads: int
    kv_heads: int
    head_dim: int
    q: _Proj
    k: _Proj
    v: _Proj
    o: _Proj  # axis = the output projection's input axis
    rotary: bool


def _config(model: nn.Module) -> Any:
    return next((m.config for m in model.modules() if hasattr(m, "config")), None)


def _rotary(model: nn.Module) -> bool:
    cfg = _config(model)
    if cfg is None:
        return False
    if getattr(cfg, "position_embedding_type", None) == "rotary":
        return True
    return any(getattr(cfg, k, None) is not None for k in _ROPE_KEYS)


def _bias(mod: nn.Module, path: str) -> str | None:
    return f"{path}.bias" if isinstance(getattr(mod, "bias", None), Tensor) else None


def attention_blocks(model: nn.Module) -> list[AttentionBlock]:
    """Every self-attention layer with separate q/k/v/out Linears (Llama, ViT, DistilBERT, BERT's self/output)
    or GPT-2's fused ``c_attn`` / ``c_proj`` (Conv1D)."""
    rotary = _rotary(model)
    mods = dict(model.named_modules())
    out: list[AttentionBlock] = []
    names = (("q_proj", "k_proj", "v_proj", "o_proj"), ("q_lin", "k_lin", "v_lin", "out_lin"), ("query", "key", "value", None))
    for path, mod in mods.items():
        pre = f"{path}." if path else ""
        if (
            _is_conv1d(getattr(mod, "c_attn", None))
            and _is_conv1d(getattr(mod, "c_proj", None))
            and not getattr(mod, "is_cross_attention", False)
        ):
            h, dh = int(mod.num_heads), int(mod.head_dim)
            split = h * dh
            b = _bias(mod.c_attn, f"{pre}c_attn")
            q, k, v = (_Proj(f"{pre}c_attn.weight", 1, i * split, b) for i in range(3))
            o = _Proj(f"{pre}c_proj.weight", 0, 0, None)
            out.append(AttentionBlock(path, h, h, dh, q, k, v, o, rotary))
            continue
        for qn, kn, vn, on in names:
            found = [getattr(mod, n, None) for n in (qn, kn, vn)]
            lin = [m for m in found if isinstance(m, nn.Linear)]
            if len(lin) != 3:
                continue
            if on is not None:
                o_path = f"{pre}{on}"
            else:  # BERT: attention.self.{query,key,value} and attention.output.dense
                o_path = f"{path.rsplit('.', 1)[0]}.output.dense" if "." in path else "output.dense"
            o_mod = mods.get(o_path)
            if not isinstance(o_mod, nn.Linear):
                continue
            size: Any = getattr(mod, "head_dim", None) or getattr(mod, "attention_head_size", None)
            heads: Any = getattr(mod, "num_heads", None) or getattr(mod, "num_attention_heads", None) or getattr(mod, "n_heads", None)
            if heads is None:
                heads = getattr(getattr(mod, "config", None) or _config(model), "num_attention_heads", None)
            if size is None and heads is None:
                continue
            dh = int(size) if size is not None else lin[0].out_features // int(heads)
            q, k, v = (_Proj(f"{pre}{n}.weight", 0, 0, _bias(m, f"{pre}{n}")) for n, m in zip((qn, kn, vn), lin))
            o = _Proj(f"{o_path}.weight", 1, 0, None)
            out.append(AttentionBlock(path, lin[0].out_features // dh, lin[1].out_features // dh, dh, q, k, v, o, rotary))
            break
    return out


def _head(state: Mapping[str, Tensor], p: _Proj, h: int, dh: int) -> Tensor:
    """Head ``h`` of a q/k/v projection: (dh, in [+1 bias column]), float64."""
    w = state[p.weight].double().narrow(p.axis, p.offset + h * dh, dh).movedim(p.axis, 0)
    if p.bias is None:
        return w
    return torch.cat([w, state[p.bias].double().narrow(0, p.offset + h * dh, dh)[:, None]], 1)


def _o_head(state: Mapping[str, Tensor], p: _Proj, h: int, dh: int) -> Tensor:
    """Head ``h``'s columns of the output projection: (out, dh), float64."""
    return state[p.weight].double().narrow(p.axis, h * dh, dh).movedim(p.axis, -1)


def _set_head(out: dict[str, Tensor], p: _Proj, h: int, dh: int, m: Tensor) -> None:
    """Head ``h`` of q/k/v := ``m @ head``."""
    w = out[p.weight].clone()
    view = w.narrow(p.axis, p.offset + h * dh, dh)
    view.copy_(
        (m.to(w.device) @ view.double().movedim(p.axis, 0).reshape(dh, -1)).reshape(view.movedim(p.axis, 0).shape).movedim(0, p.axis)
    )
    out[p.weight] = w
    if p.bias is not None:
        b = out[p.bias].clone()
        bv = b.narrow(0, p.offset + h * dh, dh)
        bv.copy_(m.to(b.device) @ bv.double())
        out[p.bias] = b


def _set_o_head(out: dict[str, Tensor], p: _Proj, h: int, dh: int, m_inv: Tensor) -> None:
    """Head ``h``'s columns of the output projection := ``columns @ m_inv``."""
    w = out[p.weight].clone()
    view = w.narrow(p.axis, h * dh, dh)
    moved = view.double().movedim(p.axis, -1)
    view.copy_((moved @ m_inv.to(w.device)).movedim(-1, p.axis))
    out[p.weight] = w


def map_heads(
    state: Mapping[str, Tensor], block: AttentionBlock, *, qk: Mapping[int, Tensor] | None = None, ov: Mapping[int, Tensor] | None = None
) -> dict[str, Tensor]:
    """Apply per key/value head maps: ``qk[j] = M`` (q of every query head of group j -> M q, k_j -> M^-T k_j),
    ``ov[j] = N`` (v_j -> N v_j, the output projection's columns of those heads -> . N^-1). A new dict."""
    out = dict(state)
    group = block.heads // block.kv_heads
    dh = block.head_dim
    for j, m in (qk or {}).items():
        for h in range(j * group, (j + 1) * group):
            _set_head(out, block.q, h, dh, m)
        _set_head(out, block.k, j, dh, torch.linalg.inv(m).T)
    for j, n in (ov or {}).items():
        _set_head(out, block.v, j, dh, n)
        inv = torch.linalg.inv(n)
        for h in range(j * group, (j + 1) * group):
            _set_o_head(out, block.o, h, dh, inv)
    return out


def _sylvester(s1: Tensor, s2: Tensor, c: Tensor) -> Tensor | None:
    """``X`` with ``s1 X + X s2 = c`` for symmetric PSD ``s1``, ``s2``; None when (nearly) singular."""
    a, u = torch.linalg.eigh(s1)
    b, w = torch.linalg.eigh(s2)
    den = a[:, None] + b[None, :]
    if float(den.min()) <= 1e-10 * max(float(den.max()), 1e-300):
        return None
    return u @ ((u.T @ c @ w) / den) @ w.T


@dataclass
class _HeadFit:
    counts: dict[str, int] = field(default_factory=lambda: {"invertible": 0, "orthogonal": 0, "identity": 0})
    worst_cond: float = 1.0


def _choose(candidates: list[tuple[str, Tensor | None]], distance: Callable[[Tensor], float], max_cond: float, fit: _HeadFit) -> Tensor:
    best_kind, best, best_d = "identity", None, float("inf")
    for kind, m in candidates:
        if m is None:
            continue
        if kind == "invertible":
            cond = float(torch.linalg.cond(m))
            if not cond <= max_cond:
                continue
            fit.worst_cond = max(fit.worst_cond, cond)
        d = distance(m)
        if d < best_d - 1e-12 * max(abs(best_d), 1.0) or best is None:
            best_kind, best, best_d = kind, m, d
    fit.counts[best_kind] += 1
    assert best is not None
    return best


def _fit_heads(
    a: Mapping[str, Tensor], b: dict[str, Tensor], blocks: list[AttentionBlock], max_cond: float, fit: _HeadFit
) -> dict[str, Tensor]:
    for blk in blocks:
        dh, group = blk.head_dim, blk.heads // blk.kv_heads
        eye = torch.eye(dh, dtype=torch.float64)
        qk: dict[int, Tensor] = {}
        ov: dict[int, Tensor] = {}
        for j in range(blk.kv_heads):
            hs = range(j * group, (j + 1) * group)
            if not blk.rotary:
                qa = [_head(a, blk.q, h, dh) for h in hs]
                qb = [_head(b, blk.q, h, dh) for h in hs]
                ka, kb = _head(a, blk.k, j, dh), _head(b, blk.k, j, dh)
                c = sum((x @ y.T for x, y in zip(qa, qb)), ka @ kb.T)

                def qk_dist(m: Tensor, qa: list[Tensor] = qa, qb: list[Tensor] = qb, ka: Tensor = ka, kb: Tensor = kb) -> float:
                    d = sum(float(((m @ y - x) ** 2).sum()) for x, y in zip(qa, qb))
                    return d + float(((torch.linalg.inv(m).T @ kb - ka) ** 2).sum())

                ls = _sylvester(ka @ ka.T, sum((y @ y.T for y in qb), torch.zeros(dh, dh, dtype=torch.float64)), c)
                qk[j] = _choose([("identity", eye), ("invertible", ls), ("orthogonal", _procrustes(c))], qk_dist, max_cond, fit)
            va, vb = _head(a, blk.v, j, dh), _head(b, blk.v, j, dh)
            oa = [_o_head(a, blk.o, h, dh) for h in hs]
            ob = [_o_head(b, blk.o, h, dh) for h in hs]
            c = sum((x.T @ y for x, y in zip(oa, ob)), va @ vb.T)

            def ov_dist(n: Tensor, va: Tensor = va, vb: Tensor = vb, oa: list[Tensor] = oa, ob: list[Tensor] = ob) -> float:
                inv = torch.linalg.inv(n)
                return float(((n @ vb - va) ** 2).sum()) + sum(float(((y @ inv - x) ** 2).sum()) for x, y in zip(oa, ob))

            ls = _sylvester(sum((x.T @ x for x in oa), torch.zeros(dh, dh, dtype=torch.float64)), vb @ vb.T, c)
            ov[j] = _choose([("identity", eye), ("invertible", ls), ("orthogonal", _procrustes(c))], ov_dist, max_cond, fit)
        b = map_heads(b, blk, qk=qk, ov=ov)
    return b


# --------------------------------------------------------------------------- the whole fit


def _other_groups(spec: PermutationSpec, drop: set[str]) -> PermutationSpec | None:
    """The spec without the groups in ``drop`` (and without head sets that name one); None if nothing is left."""
    groups = {g: n for g, n in spec.groups.items() if g not in drop}
    if not groups:
        return None
    heads = {h: slots for h, slots in spec.heads.items() if not any(g in drop for slot in slots for g in slot)}
    return PermutationSpec(groups=groups, axes={g: spec.axes[g] for g in groups}, buffers=spec.buffers, ties=dict(spec.ties), heads=heads)


def _distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor], keys: list[str]) -> float:
    return float(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in keys))


def _probe(model: nn.Module, s1: Mapping[str, Tensor], s2: Mapping[str, Tensor], args: tuple[Any, ...]) -> bool:
    gap, scale = function_gap(model, s1, s2, args)
    return gap <= 1e-4 * max(scale, 1.0)


def _residual_or_reason(
    model: nn.Module, spec: PermutationSpec, state_a: Mapping[str, Tensor], args: tuple[Any, ...]
) -> tuple[list[ResidualStream], str]:
    """The streams that take orthogonal maps, proved on A: folding keeps A's function, and so does a random
    rotation of the folded A (in the subgroup that will be fitted). Else ([], the one-line reason)."""
    try:
        streams = residual_stream(model, spec, args)
        folded = fold_norms(state_a, streams, model=model, spec=spec)
    except StardomainError as exc:
        return [], str(exc)
    if not _probe(model, state_a, folded, args):
        return [], (
            f"symmetry 'orthogonal' does not fit {type(model).__name__}: folding its norms' gains into the layers they feed "
            "changes its outputs, so a norm's output also feeds something else (a post-norm block, as in BERT, adds it to "
            "the residual stream); only pre-norm models (stream read by norms followed by linear layers) qualify"
        )
    rotated = folded
    for i, s in enumerate(streams):
        rotated = rotate_stream(rotated, s, random_orthogonal(s.size, 1234 + i, fix_ones=s.centered), spec=spec)
    if not _probe(model, folded, rotated, args):
        return [], (
            f"symmetry 'orthogonal' does not fit {type(model).__name__}: a rotation of its residual stream changes its "
            "outputs, so something other than norms and linear layers reads the stream (an activation, pooling, a "
            "per-unit scale); only models whose residual stream is read by norms followed by linear layers qualify"
        )
    return streams, ""


def fit_symmetry(
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    *,
    symmetry: str,
    model: nn.Module,
    spec: PermutationSpec,
    args: tuple[Any, ...],
    rematch: Callable[[Mapping[str, Tensor], Mapping[str, Tensor], PermutationSpec], dict[str, Tensor]] | None = None,
    rounds: int = 5,
    max_cond: float = 1e4,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Move the (already permuted) B towards A by the maps of ``symmetry``; returns ``(B, record)``.

    ``args``: an input batch for the model (the probes that prove the model takes the maps).
    ``rematch(a, b, spec) -> perm`` (weight matching) re-permutes B's unit groups other than the residual
    streams between rounds; what it moved, composed, is returned as ``record["rematch"]`` (a permutation of
    ``spec``'s groups, to compose after the matcher's).
    """
    check_symmetry(symmetry)
    record: dict[str, Any] = {"symmetry": symmetry}
    if symmetry == "permutation":
        return dict(state_b), record
    streams, reason = _residual_or_reason(model, spec, state_a, args)
    blocks = attention_blocks(model) if symmetry == "invertible" else []
    if symmetry == "orthogonal" and not streams:
        raise StardomainError(reason)
    if symmetry == "invertible" and not streams and not blocks:
        raise StardomainError(
            f"symmetry 'invertible' does not fit {type(model).__name__}: it has no attention layer with q/k/v/output "
            f"projections stardomain can find, and {reason[0].lower() + reason[1:] if reason else 'no residual stream'}"
        )
    if symmetry == "invertible" and blocks and all(b.rotary for b in blocks):
        record["qk"] = (
            "not mapped: rotary position embedding (only maps commuting with every 2x2 rotation block, a scaled rotation "
            "per frequency pair, keep the scores; not fitted)"
        )
    a = fold_norms(state_a, streams, model=model, spec=spec) if streams else dict(state_a)
    b = fold_norms(state_b, streams, model=model, spec=spec) if streams else dict(state_b)
    keys = sorted(
        k for k, t in a.items() if isinstance(t, Tensor) and t.is_floating_point() and k not in spec.ties and k not in spec.buffers
    )
    history = [_distance(a, b, keys)]
    fit = _HeadFit()
    rotations: list[Tensor] = [torch.eye(s.size, dtype=torch.float64) for s in streams]
    sub = _other_groups(spec, {s.group for s in streams}) if rematch is not None else None
    moved: dict[str, Tensor] | None = None
    for _ in range(max(1, rounds)):
        if blocks:
            b = _fit_heads(a, b, blocks, max_cond, fit)
        for i, s in enumerate(streams):
            q = _fit_rotation(a, b, s)
            b = rotate_stream(b, s, q, spec=spec)
            rotations[i] = q @ rotations[i]
        if rematch is not None and sub is not None:
            perm = rematch(a, b, sub)
            b = apply_permutation(b, perm, spec=sub)
            moved = perm if moved is None else compose(perm, moved, spec=sub)
        history.append(_distance(a, b, keys))
        if history[-2] - history[-1] <= 1e-9 * max(history[0], 1e-30):
            break
    if streams:
        b = fold_norms(b, streams, model=model, spec=spec, gains=state_a)
    record.update(
        {
            "rounds": len(history) - 1,
            "distance": {"before": history[0], "after": history[-1], "history": history, "measured": "squared, folded"},
            "parameterisation": "A's norm gains (B's norms carry A's gains, the layers they feed absorb the difference)"
            if streams
            else "unchanged",
        }
    )
    if streams:
        record["residual"] = [
            {
                "group": s.group,
                "units": s.size,
                "subgroup": "O(d) keeping the all-ones direction (LayerNorm)" if s.centered else "O(d) (RMSNorm)",
                "folded_norms": [n.name for n in s.norms if n.weight],
                "distance_from_identity": float((rotations[i] - torch.eye(s.size, dtype=torch.float64)).norm()),
            }
            for i, s in enumerate(streams)
        ]
    else:
        record["residual"] = f"not mapped: {reason}"
    if blocks:
        record["heads"] = {"blocks": len(blocks), **fit.counts, "worst_condition": fit.worst_cond, "max_condition": max_cond}
    if moved is not None and not is_identity(moved):
        record["rematch"] = moved
    return b, record
