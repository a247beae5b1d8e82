"""Datasets as in-memory normalised tensors, and a device-resident batch loader.

``load_dataset(name)`` returns a :class:`Dataset` (digits, mnist, fashion_mnist,
cifar10, cifar100, and imagefolder: an ImageNet-style folder read offline); ``TensorLoader`` serves shuffled, optionally augmented batches
from tensors already on the training device. ``StreamingImageFolder`` reads an ImageNet-style
folder batch by batch in DataLoader workers instead, for data that does not fit in memory; both
satisfy the SplitData protocol (:mod:`stardomain.data.protocol`) that training, BN re-estimation
and barrier curves use.
"""

from stardomain.data.loader import TensorLoader, augment_batch, epoch_seed
from stardomain.data.registry import (
    Dataset,
    accepts_image_size,
    available_datasets,
    canonical_name,
    load_dataset,
    matching_sample,
    stratified_subset,
)
from stardomain.data.roots import resolve_data_root
from stardomain.data.sources import read_idx, safe_unpickle
from stardomain.data.stream import StreamingImageFolder, open_dataset

__all__ = [
    "Dataset",
    "StreamingImageFolder",
    "TensorLoader",
    "accepts_image_size",
    "augment_batch",
    "available_datasets",
    "canonical_name",
    "epoch_seed",
    "load_dataset",
    "open_dataset",
    "matching_sample",
    "read_idx",
    "resolve_data_root",
    "safe_unpickle",
    "stratified_subset",
]
