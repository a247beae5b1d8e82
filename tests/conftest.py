"""Shared fixtures: small real datasets and tiny trained models, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# one intra-op thread: the suite's models are small, and two threads stall badly whenever the cores are shared
torch.set_num_threads(1)

from paths import FASHION_DIR, FASHION_SKIP  # noqa: E402  (after the thread setting above)

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
