"""Shared fixtures: small real datasets and tiny trained models, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# one intra-op thread: the suite's models are small, and two threads stall badly whenever the cores are shared
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _fashion_dir() -> Path | None:
    """Fashion-MNIST's system copy where the package looks (Debian's dataset-fashion-mnist), None when absent; an
    empty STARDOMAIN_FASHION_MNIST_DIR hides it from both, as on a fresh machine (.ci/run's second pass)."""
    from stardomain.data.sources import system_dirs

    return next((d for d in system_dirs("fashion_mnist") if d.is_dir()), None)


FASHION_DIR = _fashion_dir()
FASHION_SKIP = ("Fashion-MNIST is hidden by an empty STARDOMAIN_FASHION_MNIST_DIR" if os.environ.get("STARDOMAIN_FASHION_MNIST_DIR") == ""
                else "Fashion-MNIST is not on this machine (apt-get install dataset-fashion-mnist)")
# tests using these fixtures need the optional data: marked optional_data, they run again without it (.ci/run)
OPTIONAL_DATA_FIXTURES = {"fashion_small", "fashion_tiny", "fashion"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if OPTIONAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.optional_data)


@pytest.fixture(scope="session")
def digits():
    from stardomain.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def fashion_small():
    """A 6k-sample slice of the real Fashion-MNIST training set (test set whole)."""
    if FASHION_DIR is None:
        pytest.skip(FASHION_SKIP)
    from stardomain.data import load_dataset

    return load_dataset("fashion_mnist", subset=6000, seed=0)


@pytest.fixture(scope="session")
def fashion_mlp_zoo(tmp_path_factory, fashion_small):
    """Seven narrow MLPs (784-32-32-10) trained from different seeds on Fashion-MNIST: 5 sources + 2 held-out."""
    from stardomain.training import zoo
    from stardomain.training.loop import default_recipe

    out = tmp_path_factory.mktemp("fashion_zoo")
    recipe = default_recipe("fashion_mnist").replace(epochs=3)
    return zoo.train_zoo(fashion_small, "mlp", {"depth": 2, "width": 32}, recipe, range(7), out, progress=False, subset=6000)


@pytest.fixture(scope="module")
def worker_path():
    """Ray workers and submitit jobs are fresh processes: they import the tests' helper jobs through PYTHONPATH."""
    tests = str(Path(__file__).resolve().parent)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = tests + (os.pathsep + old if old else "")
    yield
    if old is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def ray_instance(worker_path):
    """One local Ray instance (2 CPUs, no dashboard) per test module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
