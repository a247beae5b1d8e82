"""What training, BN re-estimation and barrier curves need from a dataset: the SplitData protocol.

Two kinds of dataset satisfy it: :class:`~stardomain.data.Dataset` (both splits as in-memory
tensors) and :class:`~stardomain.data.stream.StreamingImageFolder` (images decoded from disk by
DataLoader workers, for data that does not fit in memory). Plain objects work too (the README's
promise: a ``SimpleNamespace`` of tensors trains a zoo and a star). Every function that takes a
dataset is annotated with one of these:

- :class:`Splits`: the four tensors ``train_x``/``train_y``/``test_x``/``test_y`` (in memory): what
  reads whole splits as tensors (BMA's test split).
- :data:`AnyData` (``SplitData | Splits``): what reads a dataset only through the functions below
  (split sizes, tensors, batches), e.g. a barrier curve.
- :data:`Data` (``SplitData | PlainData``): what also reads the dataset's ``name``, ``num_classes``
  and ``in_shape`` (training, Starlight, pair evaluation, checkpoint checks); :class:`PlainData`
  is a ``Splits`` with those three. ``record()`` and ``classes`` are SplitData's: for a plain
  object they are read with ``hasattr``/``getattr`` (a record from its name, no class list).

Being one of two spellings, a tensor dataset's numbers do not depend on which it uses.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Protocol, Sequence, TypeAlias, cast, runtime_checkable

import torch
from torch import Tensor

from stardomain.data.loader import slice_batches
from stardomain.errors import StardomainError

__all__ = [
    "AnyData",
    "Data",
    "PlainData",
    "SplitData",
    "Splits",
    "TrainBatches",
    "data_example",
    "eval_batches",
    "example_input",
    "index_batches",
    "split_size",
    "split_tensors",
    "streams",
]

SPLITS = ("train", "test")


class TrainBatches(Protocol):
    """A dataset's training loader: (x, y) batches of one epoch per iteration, the epoch settable (a resumed run)."""

    epoch: int

    def __len__(self) -> int:
        """Batches per epoch."""

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Epoch ``epoch``'s batches (order and augmentation from (seed, epoch)); ``epoch`` advances at the end."""


@runtime_checkable
class SplitData(Protocol):
    """A labelled dataset with a train and a test split (in memory or streamed from disk)."""

    name: str
    num_classes: int
    in_shape: tuple[int, ...]  # (C, H, W); (features,) for a tabular file dataset

    @property
    def classes(self) -> Sequence[str]:
        """Class names, one per label (image folders: the folder names, which tell two folders apart)."""

    @property
    def train_y(self) -> Tensor:
        """Training labels, int64 (N,) on the CPU (cheap for a streamed dataset: no image is decoded)."""

    @property
    def test_y(self) -> Tensor:
        """Test labels, int64 (N,) on the CPU."""

    def record(self) -> dict[str, Any]:
        """What rebuilds exactly this data (name, subset and its seed, image size, ...): stored in checkpoints."""

    def split_size(self, split: str) -> int:
        """Samples in ``split``."""

    def split_tensors(self, split: str, indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(x, y) in memory (CPU): the whole split, or its samples ``indices`` in that order."""

    def train_loader(self, batch_size: int, augment: bool, seed: int, device: str | torch.device = "cpu") -> TrainBatches:
        """Training batches on ``device`` with a settable ``epoch``; order and augmentation from (seed, epoch)."""

    def eval_batches(
        self, split: str, batch_size: int = 1024, device: str | torch.device = "cpu", indices: Tensor | None = None
    ) -> Iterable[tuple[Tensor, Tensor]]:
        """Un-augmented batches of ``split`` (or of ``indices``, in order, batch after batch) on ``device``."""


class Splits(Protocol):
    """Both splits as plain tensors: the duck-typed dataset the functions below also take."""

    @property
    def train_x(self) -> Tensor: ...

    @property
    def train_y(self) -> Tensor: ...

    @property
    def test_x(self) -> Tensor: ...

    @property
    def test_y(self) -> Tensor: ...


class PlainData(Splits, Protocol):
    """A plain dataset object: its split tensors, name, class count and input shape (no methods)."""

    @property
    def name(self) -> str: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def in_shape(self) -> tuple[int, ...]: ...


AnyData: TypeAlias = SplitData | Splits
Data: TypeAlias = SplitData | PlainData


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise StardomainError(f"unknown split {split!r}; splits are 'train' and 'test'")


def streams(dataset: AnyData) -> bool:
    """Whether ``dataset`` is read from disk batch by batch (so a whole split is never materialised)."""
    return bool(getattr(dataset, "streaming", False))


def in_memory(dataset: AnyData, what: str) -> Splits:
    """``dataset`` as whole splits in memory (what BMA and fusion read), or a one-line refusal naming ``what`` needs
    them: a streamed folder never materialises a split."""
    if streams(dataset) or not all(hasattr(dataset, f"{s}_{k}") for s in SPLITS for k in "xy"):
        raise StardomainError(f"{what}: needs the whole train and test splits in memory, which a streamed dataset never holds")
    return cast("Splits", dataset)


def split_size(dataset: AnyData, split: str) -> int:
    """Samples in ``split`` of any dataset."""
    _check_split(split)
    if hasattr(dataset, "split_size"):
        return int(dataset.split_size(split))
    return len(getattr(dataset, f"{split}_y"))


def split_tensors(dataset: AnyData, split: str, indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(x, y) of ``split`` (or of its samples ``indices``) of any dataset, in memory."""
    _check_split(split)
    if hasattr(dataset, "split_tensors"):
        return dataset.split_tensors(split, indices)
    x, y = getattr(dataset, f"{split}_x"), getattr(dataset, f"{split}_y")
    return (x, y) if indices is None else (x[indices], y[indices])


def eval_batches(
    dataset: AnyData, split: str, batch_size: int = 1024, device: str | torch.device = "cpu", indices: Tensor | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Un-augmented (x, y) batches of ``split`` on ``device``, consecutive slices of the split or of ``indices``."""
    _check_split(split)
    if hasattr(dataset, "eval_batches"):
        yield from dataset.eval_batches(split, batch_size=batch_size, device=device, indices=indices)
        return
    x, y = split_tensors(dataset, split, indices)
    yield from slice_batches(x.to(device), y.to(device), batch_size)


def index_batches(
    dataset: AnyData, split: str, chunks: Sequence[Tensor], device: str | torch.device = "cpu"
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


def example_input(dataset: AnyData, n: int = 2) -> Tensor:
    """``n`` seeded random inputs shaped like the dataset's (draws nothing from torch's global RNG)."""
    shape = tuple(getattr(dataset, "in_shape", None) or split_tensors(dataset, "train", torch.arange(1))[0].shape[1:])
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(0))


def data_example(dataset: AnyData, n: int = 8) -> Tensor:
    """The first ``n`` training inputs as they are (the dataset's own dtype and shape: token ids stay integers,
    images stay images): what a permutation spec is traced on whenever the data is at hand."""
    x, _ = split_tensors(dataset, "train", torch.arange(min(n, split_size(dataset, "train"))))
    return x
