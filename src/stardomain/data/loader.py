"""A loader for datasets that fit on the device: batches are index slices.

Training hundreds of small models is dominated by input-pipeline overhead when each
sample goes through Python transforms. Here the split lives as one tensor on the
device, the epoch order is one ``randperm`` and augmentation is one gather per batch.
Randomness comes from a generator seeded by (seed, epoch) only, so epoch ``e`` can be
replayed exactly, e.g. by a resumed run that sets ``loader.epoch = e``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stardomain.errors import StardomainError

_SEED_MASK = (1 << 63) - 1


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of run ``seed``.

    Hashing (rather than e.g. ``seed * K + epoch``) keeps (seed, epoch) pairs from
    colliding, so two runs with nearby seeds never share an epoch's order.
    """
    digest = hashlib.blake2b(f"stardomain-loader:{int(seed)}:{int(epoch)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _SEED_MASK


def augment_batch(x: Tensor, generator: torch.Generator, padding: int = 4, fill: float | Sequence[float] | Tensor = 0.0) -> Tensor:
    """Random crop (``padding`` pixels of ``fill``) and horizontal flip of a batch.

    Vectorised: the batch is padded once, then every sample's crop window (flipped
    or not) is read with a single ``gather`` of precomputed flat indices. Offsets and
    flips are drawn from ``generator`` on its own device and moved to ``x.device``.
    ``fill`` is one value or one per channel, in the tensor's units: for normalised
    images pass :meth:`Dataset.black <stardomain.data.Dataset.black>` to pad with black
    pixels as torchvision's ``RandomCrop(padding=4)`` on raw images does (0 would pad
    with the mean colour). A per-channel ``fill`` given as a tensor on ``x.device`` costs no
    host-device copy (TensorLoader keeps one there). Returns a new tensor shaped like ``x``.
    """
    if x.dim() != 4:
        raise StardomainError(f"augment_batch needs images shaped (N, C, H, W), got {tuple(x.shape)}")
    if padding < 0:
        raise StardomainError(f"augment_batch padding must be >= 0, got {padding}")
    b, c, h, w = x.shape
    gdev = generator.device
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=gdev).to(x.device)
    flips = torch.randint(0, 2, (b,), generator=generator, device=gdev).to(x.device).bool()
    hp, wp = h + 2 * padding, w + 2 * padding
    # host values stay on the host (reading a device scalar back would synchronise every batch)
    values = fill.reshape(-1) if torch.is_tensor(fill) else torch.as_tensor(fill, dtype=torch.float64).reshape(-1)
    if values.numel() not in (1, c):
        raise StardomainError(f"augment_batch fill needs 1 or {c} values (one per channel), got {values.numel()}")
    if not padding:
        padded = x
    elif values.numel() == 1 and values.device.type == "cpu":
        padded = F.pad(x, (padding, padding, padding, padding), value=float(values[0]))
    else:
        values = values.to(device=x.device, dtype=x.dtype)
        padded = values.view(1, -1, 1, 1).expand(b, c, hp, wp).clone()
        padded[:, :, padding : padding + h, padding : padding + w] = x
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (b, h) rows of the padded image
    col = torch.arange(w, device=x.device)
    cols = torch.where(flips[:, None], w - 1 - col, col) + offsets[1, :, None]  # (b, w)
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, flat).view(b, c, h, w)


def slice_batches(x: Tensor, y: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive (x, y) slices of ``batch_size`` (the last may be shorter): an evaluation pass."""
    if int(batch_size) < 1:
        raise StardomainError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(x), int(batch_size)):
        yield x[start : start + batch_size], y[start : start + batch_size]


class TensorLoader:
    """Iterate ``(x, y)`` batches of tensors that live on ``device``.

    Each epoch uses a fresh generator seeded by :func:`epoch_seed` ``(seed, epoch)``
    (created on the data's device): it draws the permutation, then the augmentation
    of each batch in order. ``epoch`` is a plain settable attribute and is incremented
    after an epoch has been iterated to the end (not when iteration is abandoned).
    Unshuffled, unaugmented batches are views of the stored tensor: do not modify
    them in place.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int = 128,
        shuffle: bool = True,
        augment: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        padding: int = 4,
        fill: float | Sequence[float] = 0.0,
    ) -> None:
        if len(x) != len(y):
            raise StardomainError(f"TensorLoader: {len(x)} inputs but {len(y)} targets")
        if int(batch_size) < 1:
            raise StardomainError(f"TensorLoader: batch_size must be >= 1, got {batch_size}")
        if augment and x.dim() != 4:
            raise StardomainError(f"TensorLoader: augmentation needs images (N, C, H, W), got {tuple(x.shape)}")
        self.x = x.to(device)
        self.y = y.to(device)
        self.device = self.x.device  # resolved, e.g. "cuda" -> "cuda:0"
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.padding = int(padding)
        self.fill = tuple(float(v) for v in fill) if isinstance(fill, Sequence) else float(fill)
        # a per-channel fill lives on the device once, so augmenting a batch never touches the host
        self._fill = (
            torch.tensor(self.fill, dtype=self.x.dtype, device=self.device)
            if isinstance(self.fill, tuple) and self.x.is_floating_point()
            else self.fill
        )
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples served per epoch (fewer than the dataset with ``drop_last``)."""
        return len(self) * self.batch_size if self.drop_last else len(self.x)

    def generator(self, epoch: int | None = None) -> torch.Generator:
        """The generator epoch ``epoch`` (default: the current one) starts from."""
        g = torch.Generator(device=self.device)
        g.manual_seed(epoch_seed(self.seed, self.epoch if epoch is None else epoch))
        return g

    def order(self, epoch: int | None = None) -> Tensor | None:
        """The sample order epoch ``epoch`` (default: the current one) serves, batch after batch; None unshuffled.

        The same draw :meth:`__iter__` makes (so a caller gathering many loaders' batches at
        once, as batched training does, sees exactly their batches); augmentation is not included.
        """
        return self._draw_order(self.generator(epoch))

    def _draw_order(self, g: torch.Generator) -> Tensor | None:
        return torch.randperm(len(self.x), generator=g, device=self.device) if self.shuffle else None

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        g = self.generator(epoch)
        n = len(self.x)
        order = self._draw_order(g)
        stop = len(self) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            end = min(start + self.batch_size, n)
            if order is None:
                xb, yb = self.x[start:end], self.y[start:end]
            else:
                idx = order[start:end]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if self.augment:
                xb = augment_batch(xb, g, padding=self.padding, fill=self._fill)
            yield xb, yb
        self.epoch = epoch + 1
