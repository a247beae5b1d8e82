"""The one running loss/accuracy meter every training and evaluation loop keeps (torchmetrics' update/compute pattern).

Training epochs, split evaluations, interpolation curves, Starlight and the learned matcher each summed
``loss * n``, counted top-1 hits and samples, then divided at the end. One class keeps that arithmetic
in one place, so every loop reports means the same way: sums stay device tensors (one synchronisation,
at :meth:`LossAccuracy.compute`), the loss in the dtype the caller names, hits in int64, and a mean
over nothing is 0 rather than a division error. It is written here, not taken from torchmetrics, to
keep the core free of that dependency and to keep the exact float order the recorded results rely on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LossAccuracy"]


class LossAccuracy:
    """Summed loss, top-1 hits and sample count of a stream of batches, for one model or a stack of them.

    ``shape`` is the shape of one batch's summed loss: ``()`` for one model, ``(k,)`` for k stacked
    models (or k interpolation points) evaluated on the same batches. The loss is accumulated in
    ``dtype``: float64 for evaluations (as exact as summing the batches on the host), the default
    float dtype where the recorded training histories were summed in float32.
    """

    def __init__(self, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float64) -> None:
        self.shape = tuple(shape)
        self.dtype = dtype
        self.loss_sum: Tensor | None = None  # allocated on the first batch's device: no host round trip
        self.correct: Tensor | None = None  # None until a batch counted hits (a loss-only meter)
        self.n = 0

    def update(self, logits: Tensor, targets: Tensor, loss_sum: Tensor) -> None:
        """Add a batch: its logits ``(..., B, C)``, targets ``(..., B)`` and summed loss (of ``shape``).

        Hits are top-1 (``argmax``, first index on ties) against the targets, summed over the batch.
        """
        correct = (logits.detach().argmax(-1) == targets).sum(-1)
        self.add(loss_sum, targets.shape[-1], correct)

    def add(self, loss_sum: Tensor | float, n: int, correct: Tensor | None = None) -> None:
        """Add sums a caller already has: the batch's summed loss, its sample count and (optionally) its hits."""
        # detached: the meter must not keep a batch's graph alive; a host float is read at full precision
        loss = loss_sum.detach() if isinstance(loss_sum, Tensor) else torch.tensor(loss_sum, dtype=self.dtype)
        if self.loss_sum is None:
            self.loss_sum = torch.zeros(self.shape, dtype=self.dtype, device=loss.device)
        self.loss_sum += loss.to(self.dtype)
        if correct is not None:
            if self.correct is None:
                self.correct = torch.zeros(self.shape, dtype=torch.long, device=correct.device)
            self.correct += correct
        self.n += n

    @property
    def loss(self) -> float:
        """Mean loss of a one-model meter (0 before any batch)."""
        return self.compute()[0]

    @property
    def acc(self) -> float:
        """Accuracy in [0, 1] of a one-model meter (0 before any batch; NaN if batches came without hits)."""
        return self.compute()[1]

    def compute(self) -> tuple[float, float]:
        """(mean loss, accuracy) of a one-model meter (``shape`` ``()``)."""
        if self.shape != ():
            raise ValueError(f"compute() reads a one-model meter; this one has shape {self.shape}: use compute_each()")
        return self.compute_each()[0]

    def compute_each(self) -> list[tuple[float, float]]:
        """(mean loss, accuracy) per entry of ``shape`` (flattened), each read from the device once."""
        n = max(1, self.n)
        size = math.prod(self.shape)
        losses = [0.0] * size if self.loss_sum is None else self.loss_sum.reshape(-1).tolist()
        if self.correct is None:  # nothing counted: 0 over no batches, undefined over loss-only ones
            accs = [0.0 if self.n == 0 else math.nan] * size
        else:
            accs = [c / n for c in self.correct.reshape(-1).tolist()]
        return [(lo / n, acc) for lo, acc in zip(losses, accs)]
