"""Tests for stardomain.data: real offline data where the machine has it, tiny fakes in
the exact upstream formats otherwise. The network is never touched: every download
goes through ``stardomain.data.download.fetch_url``, replaced here."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import SHARED_DATA

from stardomain.data import (
    Dataset,
    TensorLoader,
    augment_batch,
    available_datasets,
    load_dataset,
    read_idx,
    resolve_data_root,
    safe_unpickle,
    sources,
    stratified_subset,
)
from stardomain.data import download as dl
from stardomain.errors import StardomainError

SHARED = SHARED_DATA
MNIST_T10K = SHARED / "mnist-t10k"
CIFAR10_META = SHARED / "cifar-10-meta" / "batches.meta"
IDX_GZ = [f"{b}.gz" for b in sources.IDX_FILES]


# --------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file for a uint8 array (the upstream format, uncompressed)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz") if not path.name.endswith(".gz") else path
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_fake_mnist(folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for i, (base, arr) in enumerate(arrays.items()):
        write_idx(folder / base, arr, gz=gz if i % 2 == 0 else not gz)  # mix .gz and plain files
    return arrays


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batch(rng, n: int, label_key: bytes, num_classes: int, title: bytes, coarse: bool = False) -> dict:
    batch = {
        b"batch_label": title,
        label_key: rng.integers(0, num_classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(n)],
    }
    if coarse:
        batch[b"coarse_labels"] = rng.integers(0, 20, n).tolist()
    return batch


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # as upstream


def write_fake_cifar10(folder: Path, n: int = 6, seed: int = 0) -> dict[str, dict]:
    """``cifar-10-batches-py`` with n images per batch; returns the batches written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i in range(1, 6):
        batches[f"data_batch_{i}"] = _batch(rng, n, b"labels", 10, f"training batch {i} of 5".encode())
    batches["test_batch"] = _batch(rng, n, b"labels", 10, b"testing batch 1 of 1")
    for name, batch in batches.items():
        _dump(batch, folder / name)
    if CIFAR10_META.is_file():
        shutil.copyfile(CIFAR10_META, folder / "batches.meta")
    else:
        _dump({b"num_cases_per_batch": n, b"label_names": [s.encode() for s in CIFAR10_NAMES], b"num_vis": 3072}, folder / "batches.meta")
    return batches


def write_fake_cifar100(folder: Path, n_train: int = 8, n_test: int = 5, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {
        "train": _batch(rng, n_train, b"fine_labels", 100, b"training batch 1 of 1", coarse=True),
        "test": _batch(rng, n_test, b"fine_labels", 100, b"testing batch 1 of 1", coarse=True),
    }
    for name, batch in batches.items():
        _dump(batch, folder / name)
    _dump(
        {b"fine_label_names": [f"fine{i}".encode() for i in range(100)], b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]},
        folder / "meta",
    )
    return batches


def make_tar(src_dir: Path, arcname: str, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_dir, arcname=arcname)
    return archive


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything would reach the network; records attempted URLs."""
    calls: list[str] = []

    def offline(url: str, dest: Path) -> None:
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(dl, "fetch_url", offline)
    return calls


@pytest.fixture(autouse=True)
def _isolated_root(monkeypatch, tmp_path_factory, no_network):
    """Keep the user's data root and the network out of every test."""
    monkeypatch.setenv("STARDOMAIN_DATA", str(tmp_path_factory.mktemp("default-root")))


# --------------------------------------------------------------------------- roots and names


def test_resolve_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STARDOMAIN_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "stardomain" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_root() == tmp_path / "xdg" / "stardomain" / "data"
    monkeypatch.setenv("STARDOMAIN_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"
    monkeypatch.setenv("STARDOMAIN_DATA", "")  # empty means unset
    assert resolve_data_root() == tmp_path / "xdg" / "stardomain" / "data"
    assert not (tmp_path / "xdg").exists()  # resolving creates nothing


def test_env_root_used_by_load_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("STARDOMAIN_DATA", str(tmp_path))
    with pytest.raises(StardomainError, match=str(tmp_path / "mnist")):
        load_dataset("mnist", download=False)


def test_available_and_unknown_dataset():
    names = available_datasets()
    assert names == ["cifar10", "cifar100", "digits", "fashion_mnist", "imagefolder", "mnist"]
    with pytest.raises(StardomainError) as err:
        load_dataset("imagenet-99")
    msg = str(err.value)
    assert "\n" not in msg and "imagenet-99" in msg
    assert all(n in msg for n in names)
    assert load_dataset("Digits").name == "digits"  # case-insensitive; '-' and '_' both accepted


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_shapes_and_normalisation(digits):
    d = digits
    assert d.train_x.shape == (1437, 1, 8, 8) and d.test_x.shape == (360, 1, 8, 8)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert d.num_classes == 10 and d.classes == [str(i) for i in range(10)]
    assert d.in_shape == (1, 8, 8) and d.augment is False
    assert d.train_x.device.type == "cpu"
    assert abs(d.train_x.mean().item()) < 1e-4 and abs(d.train_x.std().item() - 1) < 1e-3
    # undoing the normalisation gives the original 0..16 pixel counts
    raw = (d.test_x * d.std[0] + d.mean[0]) * 16
    assert torch.allclose(raw, raw.round(), atol=1e-3) and raw.min() > -1e-3 and raw.max() < 16 + 1e-3
    # stratified: every class 35..37 times in the 360 test images
    counts = torch.bincount(d.test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_digits_split_is_fixed_and_seed_independent(digits):
    other = load_dataset("digits", seed=123)
    assert torch.equal(other.test_x, digits.test_x) and torch.equal(other.train_y, digits.train_y)
    assert other.mean == digits.mean


def test_subset_is_stratified_seeded_and_leaves_test_alone(digits):
    a = load_dataset("digits", subset=100, seed=1)
    b = load_dataset("digits", subset=100, seed=1)
    c = load_dataset("digits", subset=100, seed=2)
    assert a.train_x.shape == (100, 1, 8, 8) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.train_y, c.train_y) or not torch.equal(a.train_x, c.train_x)
    counts = torch.bincount(a.train_y, minlength=10)
    assert counts.max() - counts.min() <= 1
    assert torch.equal(a.test_x, digits.test_x) and a.mean == digits.mean
    # the subset's rows are rows of the full train split
    full = {tuple(r.tolist()) for r in digits.train_x.flatten(1)}
    assert all(tuple(r.tolist()) in full for r in a.train_x.flatten(1))
    for bad in (0, -3, 1438, 2.5, True):
        with pytest.raises(StardomainError, match="subset"):
            load_dataset("digits", subset=bad)


def test_stratified_subset_quotas():
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    idx = stratified_subset(labels, 10, seed=0)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert np.bincount(labels[idx], minlength=3).tolist() == [7, 2, 1]
    assert len(stratified_subset(labels, 100, seed=3)) == 100


# --------------------------------------------------------------------------- fashion-mnist (real)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Dataset:
    from paths import FASHION_DIR, FASHION_SKIP

    if FASHION_DIR is None:
        pytest.skip(FASHION_SKIP)
    return load_dataset("fashion_mnist", root=tmp_path_factory.mktemp("empty-root"), download=False)


def test_fashion_mnist_real_from_system_folder(fashion):
    d = fashion
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.in_shape == (1, 28, 28) and d.num_classes == 10 and d.augment is False
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    assert torch.bincount(d.train_y).tolist() == [6000] * 10
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    assert d.mean == (0.2860,) and d.std == (0.3530,)
    # the standard constants are the real train statistics
    assert abs(d.train_x.mean().item()) < 0.01 and abs(d.train_x.std().item() - 1) < 0.01
    raw = d.test_x[:50] * d.std[0] + d.mean[0]
    assert raw.min() > -1e-5 and raw.max() < 1 + 1e-5


def test_fashion_mnist_missing_files_message(monkeypatch, tmp_path, no_network):
    monkeypatch.setenv("STARDOMAIN_FASHION_MNIST_DIR", "")  # the system copy hidden, as on a machine without it
    with pytest.raises(StardomainError) as err:
        load_dataset("fashion_mnist", root=tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "fashion_mnist") in msg
    assert all(name in msg for name in IDX_GZ)
    assert no_network == []
    with pytest.raises(StardomainError) as err:
        load_dataset("fashion_mnist", root=tmp_path, download=True)
    msg = str(err.value)
    assert msg.startswith("fashion_mnist: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz")
    assert "offline?" in msg and "--data-root" in msg and str(tmp_path / "fashion_mnist") in msg
    assert no_network == ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz"]
    assert [p.name for p in (tmp_path / "fashion_mnist").iterdir()] == []  # no partial files left


# --------------------------------------------------------------------------- MNIST / IDX


def _need_mnist_t10k() -> None:
    if not (MNIST_T10K / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{MNIST_T10K} absent (shared MNIST test split not available)")


def test_read_idx_real_mnist_test_split():
    _need_mnist_t10k()
    images = read_idx(MNIST_T10K / "t10k-images-idx3-ubyte.gz", dtype_code=0x08, ndim=3)
    labels = read_idx(MNIST_T10K / "t10k-labels-idx1-ubyte.gz", dtype_code=0x08, ndim=1)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(images.mean() / 255 - 0.1325) < 1e-3
    train_labels = read_idx(MNIST_T10K / "train-labels-idx1-ubyte.gz")
    assert np.bincount(train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_read_idx_uncompressed_matches_gz(tmp_path):
    _need_mnist_t10k()
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress((MNIST_T10K / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    assert np.array_equal(read_idx(plain), read_idx(MNIST_T10K / "t10k-labels-idx1-ubyte.gz"))


def test_mnist_full_load_reports_only_missing_train_images(tmp_path, no_network):
    _need_mnist_t10k()
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in MNIST_T10K.glob("*.gz"):
        shutil.copyfile(f, folder / f.name)
    with pytest.raises(StardomainError) as err:
        load_dataset("mnist", root=tmp_path, download=False)
    msg = str(err.value)
    assert f"missing train-images-idx3-ubyte.gz in {folder}" in msg
    assert "t10k-images" not in msg and "\n" not in msg
    with pytest.raises(StardomainError, match=r"offline\? place the files there or set --data-root"):
        load_dataset("mnist", root=tmp_path)
    assert no_network == ["https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"]


def test_mnist_download_verifies_and_completes(monkeypatch, tmp_path):
    """The missing train images are 'downloaded' (fake fetch), MD5-checked, then loaded
    together with the real label files."""
    _need_mnist_t10k()
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in MNIST_T10K.glob("*.gz"):
        shutil.copyfile(f, folder / f.name)
    payload = gzip.compress(idx_bytes(np.full((60000, 28, 28), 7, dtype=np.uint8)))
    fetched: list[str] = []

    def fake_fetch(url: str, dest: Path) -> None:
        fetched.append(url)
        assert dest.parent == folder and dest.name != "train-images-idx3-ubyte.gz"  # temp name first
        dest.write_bytes(payload)

    monkeypatch.setattr(dl, "fetch_url", fake_fetch)
    monkeypatch.setitem(sources.MNIST.md5, "train-images-idx3-ubyte.gz", "0" * 32)
    with pytest.raises(StardomainError, match="checksum"):
        load_dataset("mnist", root=tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in MNIST_T10K.glob("*.gz"))

    monkeypatch.setitem(sources.MNIST.md5, "train-images-idx3-ubyte.gz", md5_bytes(payload))
    d = load_dataset("mnist", root=tmp_path, subset=1000, seed=0)
    assert d.train_x.shape == (1000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.mean == (0.1307,) and d.std == (0.3081,)
    assert torch.allclose(d.train_x, torch.full_like(d.train_x, (7 / 255 - 0.1307) / 0.3081))
    assert torch.bincount(d.test_y).tolist()[:2] == [980, 1135]
    assert (folder / "train-images-idx3-ubyte.gz").is_file() and len(fetched) == 2
    assert not list(folder.glob(".*part"))


def test_mnist_synthetic_plain_and_torchvision_layout(tmp_path):
    arrays = write_fake_mnist(tmp_path / "MNIST" / "raw", gz=False)
    d = load_dataset("mnist", root=tmp_path, download=False)
    assert d.train_x.shape == (50, 1, 28, 28) and d.test_x.shape == (20, 1, 28, 28)
    assert d.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    expected = (arrays["t10k-images-idx3-ubyte"][3] / 255 - 0.1307) / 0.3081
    assert np.allclose(d.test_x[3, 0].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "content, needle",
    [
        (lambda good: gzip.compress(good)[:-20], "gzip"),  # truncated download
        (lambda good: good[:-7], "found"),  # payload shorter than the header says
        (lambda good: b"\x00\x00\x08\x03" + good[4:], "magic"),  # labels file with image magic
        (lambda good: b"<html>404</html>", "magic"),
        (lambda good: b"\x00\x00", "header"),
    ],
)
def test_corrupt_idx_is_one_line_error(tmp_path, content, needle):
    good = idx_bytes(np.arange(10, dtype=np.uint8) % 10)
    folder = tmp_path / "mnist"
    write_fake_mnist(folder)
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    for f in folder.glob("t10k-labels*"):
        f.unlink()
    bad.write_bytes(content(good))
    with pytest.raises(StardomainError) as err:
        load_dataset("mnist", root=tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "delete it" in msg and needle in msg


def test_idx_dimensions_overflowing_int64_are_one_line(tmp_path):
    """Three dimensions of 2^32 - 1 multiply past int64: the header must be refused as corrupt, not wrap around
    into a numpy ValueError (or, worse, match a wrapped size)."""
    folder = tmp_path / "mnist"
    write_fake_mnist(folder)
    for f in folder.glob("t10k-images*"):
        f.unlink()
    bad = folder / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3 + bytes(64))
    with pytest.raises(StardomainError) as err:
        load_dataset("mnist", root=tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "header promises" in msg


def test_idx_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    write_fake_mnist(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8), gz=False)
    for f in folder.glob("t10k-labels-idx1-ubyte.gz"):
        f.unlink()
    with pytest.raises(StardomainError, match="20 images but .* 3 labels"):
        load_dataset("mnist", root=tmp_path, download=False)


# --------------------------------------------------------------------------- CIFAR


def test_official_cifar10_meta_through_safe_unpickler():
    if not CIFAR10_META.is_file():
        pytest.skip(f"{CIFAR10_META} absent")
    meta = safe_unpickle(CIFAR10_META, "cifar10")
    assert meta[b"label_names"] == [s.encode() for s in CIFAR10_NAMES]
    assert meta[b"num_vis"] == 3072


def test_cifar10_fake_folder(tmp_path):
    batches = write_fake_cifar10(tmp_path / "cifar10" / "cifar-10-batches-py", n=6)
    d = load_dataset("cifar10", root=tmp_path, download=False)
    assert d.train_x.shape == (30, 3, 32, 32) and d.test_x.shape == (6, 3, 32, 32)
    assert d.in_shape == (3, 32, 32) and d.num_classes == 10 and d.classes == CIFAR10_NAMES
    assert d.augment is True and d.train_x.dtype == torch.float32
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert d.train_y.tolist() == labels and d.test_y.tolist() == batches["test_batch"][b"labels"]
    # layout: each row is 1024 red, 1024 green, 1024 blue values, row-major 32x32
    row = batches["data_batch_2"][b"data"][1]  # train index 6 + 1
    mean = torch.tensor(d.mean).view(3, 1, 1)
    std = torch.tensor(d.std).view(3, 1, 1)
    restored = ((d.train_x[7] * std + mean) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(restored, row.reshape(3, 32, 32))
    assert restored[1, 2, 5] == row[1024 + 2 * 32 + 5]


def py2_batch_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the real CIFAR files were (Python 2 cPickle, protocol 2):
    str keys as SHORT_BINSTRING, the array via numpy.core.multiarray._reconstruct."""
    n = data.shape[0]
    raw = data.tobytes()
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        b"(K\x01" + b"M" + struct.pack("<H", n) + b"M\x00\x0c\x86"
        b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
        b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        b"\x89T" + struct.pack("<I", len(raw)) + raw + b"tb"
    )
    labels_op = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(U\x04data" + array + b"U\x06labels" + labels_op + b"u."


def test_python2_pickled_batch_loads(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_fake_cifar10(folder, n=3)
    data = np.random.default_rng(1).integers(0, 256, (3, 3072), dtype=np.uint8)
    (folder / "data_batch_1").write_bytes(py2_batch_pickle(data, [4, 0, 9]))
    batch = safe_unpickle(folder / "data_batch_1", "cifar10")
    assert set(batch) == {b"data", b"labels"} and np.array_equal(batch[b"data"], data)
    d = load_dataset("cifar10", root=tmp_path, download=False)
    assert d.train_y[:3].tolist() == [4, 0, 9]
    restored = (d.train_x[0] * torch.tensor(d.std).view(3, 1, 1) + torch.tensor(d.mean).view(3, 1, 1)) * 255
    assert np.array_equal(restored.round().to(torch.uint8).numpy(), data[0].reshape(3, 32, 32))


def test_cifar10_torchvision_layout(tmp_path):
    write_fake_cifar10(tmp_path / "cifar-10-batches-py", n=2)
    assert load_dataset("cifar10", root=tmp_path, download=False).train_x.shape == (10, 3, 32, 32)


def test_cifar100_fake_folder(tmp_path):
    batches = write_fake_cifar100(tmp_path / "cifar100" / "cifar-100-python")
    d = load_dataset("cifar100", root=tmp_path, download=False)
    assert d.train_x.shape == (8, 3, 32, 32) and d.test_x.shape == (5, 3, 32, 32)
    assert d.num_classes == 100 and d.classes[:2] == ["fine0", "fine1"] and d.augment is True
    assert d.train_y.tolist() == batches["train"][b"fine_labels"]  # fine, not coarse labels
    assert len(d.mean) == 3 and len(d.std) == 3


def test_cifar_missing_and_offline_messages(tmp_path, no_network):
    with pytest.raises(StardomainError) as err:
        load_dataset("cifar100", root=tmp_path, download=False)
    assert "cifar100: missing train, test, meta in" in str(err.value)
    with pytest.raises(StardomainError) as err:
        load_dataset("cifar10", root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "offline?" in msg and "cifar-10-python.tar.gz" in msg
    assert "data_batch_1" in msg and "batches.meta" in msg and str(tmp_path / "cifar10") in msg
    assert no_network == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert [p.name for p in (tmp_path / "cifar10").iterdir()] == []


def test_cifar_download_extracts_archive(monkeypatch, tmp_path):
    staging = tmp_path / "staging"
    batches = write_fake_cifar10(staging / "cifar-10-batches-py", n=3, seed=5)
    archive = make_tar(staging / "cifar-10-batches-py", "cifar-10-batches-py", tmp_path / "upstream.tar.gz")
    monkeypatch.setattr(sources.CIFAR10, "md5", dl.md5_file(archive))
    monkeypatch.setattr(dl, "fetch_url", lambda url, dest: shutil.copyfile(archive, dest))
    root = tmp_path / "root"
    d = load_dataset("cifar10", root=root)
    assert d.test_y.tolist() == batches["test_batch"][b"labels"]
    assert (root / "cifar10" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert sorted(p.name for p in (root / "cifar10").iterdir()) == ["cifar-10-batches-py"]  # archive, temp gone


def test_cifar_archive_placed_by_hand_is_checked_and_extracted(monkeypatch, tmp_path):
    staging = tmp_path / "staging"
    write_fake_cifar100(staging / "cifar-100-python")
    root = tmp_path / "root"
    (root / "cifar100").mkdir(parents=True)
    archive = make_tar(staging / "cifar-100-python", "cifar-100-python", root / "cifar100" / "cifar-100-python.tar.gz")
    with pytest.raises(StardomainError, match="has MD5"):
        load_dataset("cifar100", root=root, download=False)
    monkeypatch.setattr(sources.CIFAR100, "md5", dl.md5_file(archive))
    assert load_dataset("cifar100", root=root, download=False).train_x.shape == (8, 3, 32, 32)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_unsafe_tar_is_refused(monkeypatch, tmp_path, kind):
    root = tmp_path / "root"
    (root / "cifar10").mkdir(parents=True)
    archive = root / "cifar10" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"pwned"
        info = tarfile.TarInfo(
            {
                "dotdot": "cifar-10-batches-py/../../../evil.txt",
                "absolute": "/tmp/stardomain-evil.txt",
                "symlink": "cifar-10-batches-py/data_batch_1",
            }[kind]
        )
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(sources.CIFAR10, "md5", dl.md5_file(archive))
    with pytest.raises(StardomainError, match="unsafe member"):
        load_dataset("cifar10", root=root, download=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not list((root / "cifar10").glob(".extract-*"))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_fake_cifar10(folder, n=2)
    marker = tmp_path / "owned"
    _dump({b"data": _Evil(marker), b"labels": [0]}, folder / "data_batch_3")
    with pytest.raises(StardomainError) as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    msg = str(err.value)
    assert "refused" in msg and "system" in msg and str(folder / "data_batch_3") in msg and "\n" not in msg
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        lambda: pickle.dumps(type("E", (), {"__reduce__": lambda s: (eval, ("1+1",))})(), protocol=2),
        lambda: pickle.dumps(type("E", (), {"__reduce__": lambda s: (__import__("codecs").encode, ("x", "rot13"))})(), protocol=2),
        lambda: b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.",
    ],
)
def test_safe_unpickle_refuses_other_globals(tmp_path, payload):
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload())
    with pytest.raises(StardomainError, match="refused"):
        safe_unpickle(path, "cifar10")


def test_safe_unpickle_truncated(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2)[:-40])
    with pytest.raises(StardomainError, match="corrupt or truncated"):
        safe_unpickle(path, "cifar10")


# --------------------------------------------------------------------------- TensorLoader


def _epoch(loader: TensorLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_covers_every_sample_once_and_len():
    x = torch.arange(103, dtype=torch.float32).view(103, 1, 1, 1).expand(103, 1, 2, 2).contiguous()
    y = torch.arange(103)
    loader = TensorLoader(x, y, batch_size=10, seed=3)
    assert len(loader) == 11
    batches = _epoch(loader)
    assert len(batches) == 11 and [len(b[1]) for b in batches][-1] == 3
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(103)) and seen.tolist() != list(range(103))
    for bx, by in batches:  # inputs stay paired with their targets
        assert torch.equal(bx[:, 0, 0, 0].long(), by)
    dl_loader = TensorLoader(x, y, batch_size=10, drop_last=True)
    assert len(dl_loader) == 10 and sum(len(b) for _, b in dl_loader) == 100 == dl_loader.num_samples
    plain = TensorLoader(x, y, batch_size=50, shuffle=False)
    assert torch.cat([b for _, b in plain]).tolist() == list(range(103))


def test_loader_reproducible_and_epochs_differ():
    x = torch.randn(64, 3, 8, 8)
    y = torch.arange(64)
    a = TensorLoader(x, y, batch_size=16, augment=True, seed=7)
    b = TensorLoader(x, y, batch_size=16, augment=True, seed=7)
    a0, b0 = _epoch(a), _epoch(b)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a0, b0))
    assert a.epoch == 1
    a1 = _epoch(a)
    assert not torch.equal(torch.cat([t[1] for t in a0]), torch.cat([t[1] for t in a1]))
    other = _epoch(TensorLoader(x, y, batch_size=16, augment=True, seed=8))
    assert not torch.equal(torch.cat([t[1] for t in a0]), torch.cat([t[1] for t in other]))
    # a resumed run replays epoch e exactly, augmentation included
    a2 = _epoch(a)
    resumed = TensorLoader(x, y, batch_size=16, augment=True, seed=7)
    resumed.epoch = 2
    r2 = _epoch(resumed)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a2, r2))
    assert resumed.epoch == 3 and a.epoch == 3


def test_loader_epoch_not_advanced_by_abandoned_iteration():
    loader = TensorLoader(torch.zeros(10, 1), torch.zeros(10), batch_size=2)
    for _ in loader:
        break
    assert loader.epoch == 0
    list(loader)
    assert loader.epoch == 1


def test_loader_validates_inputs():
    with pytest.raises(StardomainError):
        TensorLoader(torch.zeros(4, 1, 2, 2), torch.zeros(5))
    with pytest.raises(StardomainError):
        TensorLoader(torch.zeros(4, 1, 2, 2), torch.zeros(4), batch_size=0)
    with pytest.raises(StardomainError):
        TensorLoader(torch.zeros(4, 3), torch.zeros(4), augment=True)


def _candidates(img: torch.Tensor, padding: int) -> dict[tuple[int, int, bool], torch.Tensor]:
    """Every crop/flip the augmentation may produce for one image, by (dy, dx, flip)."""
    h, w = img.shape[-2:]
    padded = torch.nn.functional.pad(img, (padding,) * 4)
    out = {}
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop.flip(-1)
    return out


def test_augment_batch_is_crop_and_flip():
    b, h, w = 64, 6, 7
    base = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w)
    x = torch.stack([torch.cat([base + 100 * i, -(base + 100 * i)]) for i in range(b)])  # (b, 2, h, w)
    before = x.clone()
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, g, padding=2)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(x, before)
    seen = set()
    for i in range(b):
        matches = [k for k, v in _candidates(x[i], 2).items() if torch.equal(v, out[i])]
        assert len(matches) == 1, f"sample {i} is not a crop/flip of its input"
        seen.add(matches[0])
    assert {k[2] for k in seen} == {False, True}
    assert len({k[:2] for k in seen}) > 10  # many different shifts
    # same generator state -> same augmentation
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(0), padding=2), out)


def test_augment_batch_shift_pattern_and_no_padding():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0  # a single bright pixel in the corner
    outs = [augment_batch(x, torch.Generator().manual_seed(s), padding=1) for s in range(60)]
    positions = {tuple(torch.nonzero(o[0, 0]).flatten().tolist()) for o in outs}
    # the pixel moves by at most one row/column (or leaves the crop), mirrored by flips
    allowed = {(), (0, 0), (1, 0), (0, 1), (1, 1), (0, 3), (1, 3), (0, 2), (1, 2)}
    assert positions <= allowed and len(positions) >= 5
    y = torch.randn(16, 3, 5, 5)
    flips = augment_batch(y, torch.Generator().manual_seed(1), padding=0)
    for i in range(16):
        assert torch.equal(flips[i], y[i]) or torch.equal(flips[i], y[i].flip(-1))
    with pytest.raises(StardomainError):
        augment_batch(torch.zeros(3, 4, 4), torch.Generator())


def test_crop_padding_is_black_in_raw_pixels_like_torchvision():
    """Normalised images are padded with the normalised value of black, per channel."""
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    raw = torch.rand(32, 3, 6, 6) * 0.5 + 0.5  # bright images: any black pixel after cropping is padding
    x = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    ds = Dataset(
        name="t",
        train_x=x,
        train_y=torch.zeros(32, dtype=torch.long),
        test_x=x,
        test_y=torch.zeros(32, dtype=torch.long),
        num_classes=1,
        in_shape=(3, 6, 6),
        mean=mean,
        std=std,
        classes=["a"],
        augment=True,
    )
    black = torch.tensor(ds.black())
    out = augment_batch(x, torch.Generator().manual_seed(0), padding=2, fill=ds.black())
    back = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)  # to raw pixels
    pad = (back.abs() < 1e-5).all(dim=1)  # pixels black in every channel
    assert pad.any() and ((back >= 0.5 - 1e-5) | (back.abs() < 1e-5)).all()
    assert torch.allclose(out.permute(0, 2, 3, 1)[pad], black.expand(int(pad.sum()), 3))
    # one value pads every channel alike; the wrong number of values is refused
    zero = augment_batch(x, torch.Generator().manual_seed(0), padding=2)
    assert torch.equal(zero[~pad.unsqueeze(1).expand_as(zero)], out[~pad.unsqueeze(1).expand_as(out)])
    with pytest.raises(StardomainError, match="one per channel"):
        augment_batch(x, torch.Generator(), padding=2, fill=(0.0, 1.0))
    loader = TensorLoader(x, ds.train_y, batch_size=32, augment=True, seed=1, padding=2, fill=ds.black())
    ((xb, _),) = list(loader)
    assert (xb.permute(0, 2, 3, 1) == black).all(dim=-1).any()


def test_loader_generator_on_data_device():
    loader = TensorLoader(torch.zeros(4, 1, 2, 2), torch.zeros(4), device="cpu")
    assert loader.generator().device.type == "cpu"
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for the on-device generator check")
    cuda = TensorLoader(torch.randn(8, 3, 8, 8), torch.arange(8), batch_size=4, augment=True, device="cuda")
    assert cuda.generator().device.type == "cuda"
    for xb, yb in cuda:
        assert xb.is_cuda and yb.is_cuda and xb.shape == (4, 3, 8, 8)
