"""Name -> builder registry, so configs and checkpoints refer to architectures by name.

Every builder has the signature ``builder(num_classes, in_shape, *, option=default, ...)``:
``num_classes`` an int, ``in_shape`` the tuple of one sample's shape (``(C, H, W)`` for
images, ``(F,)`` for tabular data), and every option keyword-only with a default and an
annotation ``bool``, ``int``, ``float`` or ``str`` (what ``-o key=value`` and YAML values are
checked against). Your own model joins either by ``@models.register("name")`` in a module
you load as a plugin, or by import path: ``create("pkg.module:build", ...)`` (the module must
be imported; see :mod:`stardomain._util.plugins`). :func:`create` validates the name, the shape
and the options against that signature and stamps the result with ``model.arch`` (plus
``arch["factory"]``, ``module:qualname``, for a builder outside stardomain) so a checkpoint
can rebuild the exact same network.
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from stardomain._util import budget
from stardomain._util.plugins import check_call, factory_name, is_hf_name, is_import_path, resolve
from stardomain.errors import StardomainError
from stardomain.models.entry import Builder, ModelEntry, option_types
from stardomain.models.init import DEFAULT_INIT, INIT_SCHEMES, LEGACY_BUILTIN_INIT, apply_init

_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, *, min_hw: int = 1, in_dims: int | None = None, summary: str = "") -> Callable[[Builder], Builder]:
    """Decorator adding ``builder`` to the registry under ``name``.

    ``min_hw`` is the smallest input height/width the architecture supports and ``in_dims``
    the number of input dims it needs (3 for ``(C, H, W)``; None accepts any shape, e.g.
    tabular ``(F,)``); :func:`create` rejects other inputs with a clear error instead of a
    shape error deep inside forward. A bad builder signature is a ``StardomainError``.
    Checkpoints record the name (and the builder's ``module:qualname``): loading one needs
    the registering module imported (``--plugin module``).
    """
    key = name.lower()

    def decorate(builder: Builder) -> Builder:
        if key in _REGISTRY:
            raise StardomainError(f"model name {key!r} is already registered; pick another name")
        defaults, types = option_types(builder)
        doc = summary or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[key] = ModelEntry(key, builder, min_hw, doc, defaults, types, in_dims)
        return builder

    return decorate


def available_models() -> list[str]:
    """Sorted names accepted by :func:`create`."""
    return sorted(_REGISTRY)


def valid_names() -> str:
    """Every model name, for "unknown model" errors: the registry's, the built-in hf: families and your own."""
    from stardomain.models.hf import HF_MODELS

    return (
        f"{', '.join(available_models())}; Hugging Face: {', '.join(sorted(HF_MODELS))}; your own: pkg.module:build "
        "or hf:pkg.module:make_config (with --plugin / plugins:)"
    )


def _fold(name: str) -> str:
    """Case, hyphens, underscores and spaces folded: ``ResNet-18`` and ``resnet_18`` -> ``resnet18``."""
    return "".join(ch for ch in str(name).strip().lower() if ch not in "-_ ")


def canonical_name(name: str) -> str:
    """The registry key of a model name (``ResNet-18`` -> ``resnet18``, ``DenseNet40-12`` -> ``densenet40_12``).

    Resolve once at the edge (CLI, YAML, Python API) and store only the key, so checkpoint
    metadata and zoo identity never depend on how the user spelled the name. An import path
    (``pkg.module:build``) is its own key.
    """
    if is_import_path(name):
        return name.strip()
    if is_hf_name(name):  # a Hugging Face model (stardomain.models.hf)
        from stardomain.models.hf import model_entry

        return model_entry(name.strip()).name
    if isinstance(name, str):
        if name.lower() in _REGISTRY:
            return name.lower()
        matches = [key for key in _REGISTRY if _fold(key) == _fold(name)]
        if len(matches) == 1:
            return matches[0]
    raise StardomainError(f"unknown model {name!r}; valid names: {valid_names()}")


def model_info(name: str) -> ModelEntry:
    """Registry entry for ``name`` (builder, minimum input size, option defaults)."""
    return _lookup(name)


def _lookup(name: str) -> ModelEntry:
    key = canonical_name(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    if is_hf_name(key):  # Hugging Face models built from a tiny config (stardomain.models.hf)
        from stardomain.models.hf import model_entry

        return model_entry(key)
    builder = resolve(key, "model factory")  # an import path: its module must be imported already
    defaults, types = option_types(builder)
    doc = (inspect.getdoc(builder) or "").split("\n")[0]
    return ModelEntry(key, builder, 1, doc, defaults, types, None)


def _check_option(entry: ModelEntry, key: str, value: Any) -> Any:
    """Type-check one option against the builder's annotation."""
    want = entry.types[key]
    accepted = ", ".join(f"{k}={v!r}" for k, v in sorted(entry.defaults.items()))
    if want is bool:
        ok = isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif want is str:
        ok = isinstance(value, str)
    else:  # float accepts ints too
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise StardomainError(
            f"option {key}={value!r} for model {entry.name!r} must be {want.__name__}; accepted options (defaults): {accepted}"
        )
    return value


def _check_shape(entry: ModelEntry, in_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(in_shape)
    except TypeError:
        shape = ()
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise StardomainError(f"in_shape must be a tuple of positive ints ((C, H, W) or (F,)), got {in_shape!r}")
    if entry.in_dims is not None and len(shape) != entry.in_dims:
        raise StardomainError(
            f"model {entry.name!r} needs {entry.in_dims}-d inputs ((C, H, W) images), got in_shape {shape}; "
            "use a model for this input shape (mlp takes any)"
        )
    if len(shape) != 3:
        return shape
    c, h, w = shape
    if min(h, w) < entry.min_hw:
        raise StardomainError(
            f"model {entry.name!r} needs inputs of at least {entry.min_hw}x{entry.min_hw}, got {h}x{w}; "
            "use a larger image size or another model"
        )
    return c, h, w


def create(name: str, num_classes: int, in_shape: tuple[int, ...], **options: Any) -> nn.Module:
    """Build a registered model (or ``pkg.module:build``) and attach ``model.arch`` for checkpoint rebuilding."""
    entry = _lookup(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise StardomainError(f"num_classes must be a positive int, got {num_classes!r}")
    shape = _check_shape(entry, in_shape)
    unknown = sorted(set(options) - set(entry.defaults))
    if unknown:
        accepted = ", ".join(sorted(entry.defaults)) or "(none)"
        raise StardomainError(f"unknown option {unknown[0]!r} for model {entry.name!r}; accepted options: {accepted}")
    resolved = dict(entry.defaults)
    for key, value in options.items():
        resolved[key] = _check_option(entry, key, value)
    init = check_init(resolved["init"])
    kwargs = {k: v for k, v in resolved.items() if k != "init"}
    check_call(entry.builder, f"model builder {entry.name!r}", num_classes, shape, **kwargs)  # before any call
    model = entry.builder(num_classes, shape, **kwargs)
    if not isinstance(model, nn.Module):
        raise StardomainError(f"model builder {entry.name!r} returned a {type(model).__name__}, not a torch.nn.Module")
    apply_init(model, entry.name, init, builtin=entry.builder.__module__.startswith("stardomain."))
    arch = {"name": entry.name, "num_classes": num_classes, "in_shape": list(shape), "options": resolved}
    if not entry.builder.__module__.startswith("stardomain."):
        arch["factory"] = factory_name(entry.builder)  # which module to --plugin when loading
    json.dumps(arch)  # fails loudly at build time rather than at save time
    model.arch = arch  # type: ignore[assignment]  # torch types Module attributes as Tensor | Module; any value works
    return model


# 10^10 parameters are 40 GB of fp32 weights before gradients and optimizer state: beyond any single
# device a unit runs on, so such a size is a typo (width 2**20) to refuse before anything is allocated.
# The limit is the size budget's (stardomain._util.budget: STARDOMAIN_BUDGET lifts or scales it)
MAX_PARAMETERS = budget.LIMITS["parameters"].value


def build_on_meta(name: str, num_classes: int, in_shape: tuple[int, ...], **options: Any) -> nn.Module | None:
    """``create`` on the meta device: every option, the shape and the parameter count checked with no
    memory allocated and no random number drawn, so a bad size fails before any work.

    None when a user's builder cannot run on the meta device (it is then checked at its real build).
    Depth options and the parameter count are held to the size budget (:mod:`stardomain._util.budget`):
    the depth before anything is built (10^6 layers take minutes even on the meta device).
    """
    entry = _lookup(name)
    budget.check_depth(options, f"model {entry.name!r}")
    builtin = entry.builder.__module__.startswith("stardomain.")
    check_init(options.get("init", DEFAULT_INIT))
    # shapes do not depend on the init; PyTorch's own ("default") draws nothing more, where normal_ on the
    # meta device would import torch._dynamo (seconds)
    shape_only = {**options, "init": "default"}
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = create(name, num_classes, in_shape, **shape_only)
    except StardomainError:
        raise
    except Exception as e:  # noqa: BLE001 - a builder's own complaint about absurd sizes (overflow, negative dims)
        if not builtin:
            return None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StardomainError(
            f"model {entry.name!r} cannot be built for inputs {tuple(in_shape)} with options "
            f"{dict(options)} ({type(e).__name__}: {first}); use smaller sizes"
        ) from None
    count = sum(p.numel() for p in model.parameters())
    cap = budget.limit("parameters")
    if cap is not None and count > cap:
        raise StardomainError(
            f"model {entry.name!r} with options {dict(options)} would have {count:.3g} parameters "
            f"(over the budget of {cap:.0e}, {4 * count / 1e9:.3g} GB of fp32 weights); use smaller sizes, or {budget.HINT}"
        )
    return model


def check_init(init: Any) -> str:
    """A valid init scheme name, or one line saying which exist."""
    if init not in INIT_SCHEMES:
        raise StardomainError(
            f"init {init!r} is not a scheme; use one of {', '.join(INIT_SCHEMES)} (paper: the authors' init for this architecture)"
        )
    return str(init)


def legacy_init(name: str) -> str:
    """The init of a checkpoint written before ``init`` was recorded: Kaiming for stardomain's own
    architectures (their only init then), the builder's own (``paper``) for any other model."""
    return LEGACY_BUILTIN_INIT if name in _REGISTRY and _REGISTRY[name].builder.__module__.startswith("stardomain.") else DEFAULT_INIT


def with_init(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the init made explicit: recorded options lacking it are a legacy checkpoint's."""
    return {"init": legacy_init(name), **dict(options)}


def scaled(channels: int, width: float) -> int:
    """Channel count after a width multiplier (at least one channel)."""
    return max(1, int(round(channels * width)))
