"""Timing shared by the benchmarks: one warm-up pass, then the rate over timed passes, synchronised on CUDA."""

from __future__ import annotations

import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer never stops before the device does."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(one_pass: Callable[[], int], device: torch.device, epochs: int) -> float:
    """Images/s over ``epochs`` calls of ``one_pass`` (each returns how many images it saw) after one warm-up call."""
    one_pass()
    sync(device)
    start = time.perf_counter()
    total = sum(one_pass() for _ in range(epochs))
    sync(device)
    return total / (time.perf_counter() - start)
