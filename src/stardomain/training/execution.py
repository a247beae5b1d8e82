"""How a training step executes on a device: mixed precision, grad scaling, cudnn autotuning, CPU threads.

One code path serves CPU and CUDA: autocast runs on the device's own type, fp16 gets a
:class:`torch.amp.GradScaler`, and cudnn autotuning is switched on for the duration of a run
only (restored afterwards, so no process-wide state leaks into other work). Weights stay fp32
under autocast, so checkpoints are fp32 whatever the precision. The CPU thread count every
result is computed with is fixed the same way (:func:`fixed_threads`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from typing import Any, Callable, ContextManager, Iterator, TypeVar

import torch

from stardomain.errors import StardomainError

__all__ = ["autocast", "cudnn_autotune", "fixed_threads", "grad_scaler", "with_cudnn_autotune"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
F = TypeVar("F", bound=Callable[..., Any])


def autocast(precision: str, device: torch.device) -> Callable[[], ContextManager[Any]]:
    """A factory of the forward's autocast context for ``precision`` on ``device`` (validated now).

    fp32 gives a no-op context (the fp32 path is exactly the code path without autocast).
    """
    if precision == "fp32":
        return contextlib.nullcontext
    if precision not in _DTYPES:
        raise StardomainError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise StardomainError(f"precision fp16 needs a CUDA device (got {device.type}); use bf16 or fp32 on {device.type}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise StardomainError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16 support; use precision fp16")
    dtype = _DTYPES[precision]
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def check_channels_last(channels_last: bool, device: torch.device) -> None:
    """channels_last training is a CUDA option: refused on other devices before any work.

    Why: on CPU, torch's NHWC convolution backward aborts the process on some machines (torch 2.13.0,
    AMD EPYC: a ResNet-20 with 4-channel convs dies in ``backward`` with SIGABRT/SIGBUS), which no
    ``except`` can turn into an error line, and NHWC buys a CPU little. Evaluation (forward only) may
    still pick NHWC on CPU by trial (:mod:`stardomain.training.memformat`).
    """
    if channels_last and device.type != "cuda":
        raise StardomainError(
            f"recipe channels_last needs a CUDA device (got {device.type}): torch's {device.type} NHWC "
            "convolution backward can abort the process; drop channels_last for this run"
        )


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A grad scaler for fp16 (its small range underflows gradients without one); None otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


@contextlib.contextmanager
def cudnn_autotune(device: torch.device | str) -> Iterator[None]:
    """cudnn benchmark mode on CUDA for the block (fixed input shapes: pick the fastest kernels)."""
    if torch.device(device).type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def with_cudnn_autotune(fn: F) -> F:
    """Run ``fn`` under :func:`cudnn_autotune` of its ``device`` argument."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with cudnn_autotune(bound.arguments.get("device", "cpu")):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads (and NumPy's BLAS threads) fixed to ``threads`` for the block, then restored.

    A CPU reduction split over more threads adds in another order: 1 and 2 threads train weights ~1e-7
    apart, which reaches results.json's digits. So every unit, on every executor, and the assembly
    compute with the run's recorded ``threads``, never the machine's default; the caller's own count
    comes back afterwards. ``OMP_NUM_THREADS`` is set too, for processes started inside the block.
    ``None`` leaves everything as it is. Blocks nest (a unit inside the run's block): the inner one sets the
    same counts and gives the outer ones back.
    """
    if threads is None:
        yield
        return
    if type(threads) is not int or threads < 1:
        raise StardomainError(f"threads: a whole number >= 1 (got {threads!r})")
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    try:
        with _blas_threads(threads):
            yield
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def _blas_threads(threads: int) -> ContextManager[Any]:
    """NumPy/SciPy's BLAS (the BMA tests' bootstrap products) limited likewise: its matrix-vector products
    also split sums by thread. threadpoolctl comes with scikit-learn; without it, BLAS keeps its own count."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")
