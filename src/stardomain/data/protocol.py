"""What training, BN re-estimation and barrier curves need from a dataset: the SplitData protocol.

Two kinds of dataset satisfy it: :class:`~stardomain.data.Dataset` (both splits as in-memory
tensors) and :class:`~stardomain.data.stream.StreamingImageFolder` (images decoded from disk by
DataLoader workers, for data that does not fit in memory). The consumers call the functions
below, which also accept any object with plain ``train_x``/``train_y``/``test_x``/``test_y``
tensors (e.g. a ``SimpleNamespace`` in a test), so a tensor dataset's numbers do not depend on
which of the two spellings it uses.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from stardomain.data.loader import slice_batches
from stardomain.errors import StardomainError

__all__ = ["SplitData", "eval_batches", "example_input", "index_batches", "split_size", "split_tensors", "streams"]

SPLITS = ("train", "test")


@runtime_checkable
class SplitData(Protocol):
    """A labelled dataset with a train and a test split."""

    name: str
    num_classes: int
    in_shape: tuple[int, ...]  # (C, H, W); (features,) for a tabular file dataset

    def split_size(self, split: str) -> int:
        """Samples in ``split``."""

    def split_tensors(self, split: str, indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(x, y) in memory (CPU): the whole split, or its samples ``indices`` in that order."""

    def train_loader(self, batch_size: int, augment: bool, seed: int, device: str | torch.device = "cpu") -> Any:
        """Training batches on ``device`` with a settable ``epoch``; order and augmentation from (seed, epoch)."""

    def eval_batches(
        self, split: str, batch_size: int = 1024, device: str | torch.device = "cpu", indices: Tensor | None = None
    ) -> Iterable[tuple[Tensor, Tensor]]:
        """Un-augmented batches of ``split`` (or of ``indices``, in order, batch after batch) on ``device``."""


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise StardomainError(f"unknown split {split!r}; splits are 'train' and 'test'")


def streams(dataset: Any) -> bool:
    """Whether ``dataset`` is read from disk batch by batch (so a whole split is never materialised)."""
    return bool(getattr(dataset, "streaming", False))


def split_size(dataset: Any, split: str) -> int:
    """Samples in ``split`` of any dataset."""
    _check_split(split)
    if hasattr(dataset, "split_size"):
        return int(dataset.split_size(split))
    return len(getattr(dataset, f"{split}_y"))


def split_tensors(dataset: Any, split: str, indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(x, y) of ``split`` (or of its samples ``indices``) of any dataset, in memory."""
    _check_split(split)
    if hasattr(dataset, "split_tensors"):
        return dataset.split_tensors(split, indices)
    x, y = getattr(dataset, f"{split}_x"), getattr(dataset, f"{split}_y")
    return (x, y) if indices is None else (x[indices], y[indices])


def eval_batches(
    dataset: Any, split: str, batch_size: int = 1024, device: str | torch.device = "cpu", indices: Tensor | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Un-augmented (x, y) batches of ``split`` on ``device``, consecutive slices of the split or of ``indices``."""
    _check_split(split)
    if hasattr(dataset, "eval_batches"):
        yield from dataset.eval_batches(split, batch_size=batch_size, device=device, indices=indices)
        return
    x, y = split_tensors(dataset, split, indices)
    yield from slice_batches(x.to(device), y.to(device), batch_size)


def index_batches(
    dataset: Any, split: str, chunks: Sequence[Tensor], device: str | torch.device = "cpu"
) -> Iterator[tuple[Tensor, Tensor]]:
    """One un-augmented (x, y) batch on ``device`` per chunk of sample indices, in order (a BN pass)."""
    _check_split(split)
    if hasattr(dataset, "index_batches"):
        yield from dataset.index_batches(split, chunks, device)
        return
    x, y = split_tensors(dataset, split)
    for chunk in chunks:
        chunk = chunk.to(x.device)
        yield x[chunk].to(device, non_blocking=True), y[chunk].to(device, non_blocking=True)


def example_input(dataset: Any, n: int = 2) -> Tensor:
    """``n`` seeded random inputs shaped like the dataset's (draws nothing from torch's global RNG)."""
    shape = tuple(getattr(dataset, "in_shape", None) or split_tensors(dataset, "train", torch.arange(1))[0].shape[1:])
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(0))


def data_example(dataset: Any, n: int = 8) -> Tensor:
    """The first ``n`` training inputs as they are (the dataset's own dtype and shape: token ids stay integers,
    images stay images): what a permutation spec is traced on whenever the data is at hand."""
    x, _ = split_tensors(dataset, "train", torch.arange(min(n, split_size(dataset, "train"))))
    return x
