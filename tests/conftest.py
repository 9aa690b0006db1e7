"""Shared fixtures: where real MNIST lives for tests (never downloaded)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path | None:
    candidates = []
    if os.environ.get("RIEMANN_DNN_DATA"):
        candidates.append(Path(os.environ["RIEMANN_DNN_DATA"]) / "mnist")
    candidates.append(REPO.parent / "shared" / "data" / "mnist")
    for candidate in candidates:
        if (candidate / "train-images-idx3-ubyte.gz").exists() or (
            candidate / "train-images-idx3-ubyte"
        ).exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def full_mnist_dir() -> Path:
    """The directory of the full MNIST IDX files; skips the test when absent."""
    directory = _mnist_dir()
    if directory is None:
        pytest.skip("full MNIST not found (set RIEMANN_DNN_DATA)")
    return directory


@pytest.fixture(scope="session")
def sigint_default():
    """A ``preexec_fn`` that gives a child process SIGINT's default action, so that its
    Python installs the Ctrl-C handler even when the suite itself runs with SIGINT ignored
    (a background job of a non-interactive shell, ``nohup``), as children inherit that."""
    return lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)


def pytest_configure(config):
    """One intra-op thread for the whole suite: the tests use small tensors, for which
    threads only add overhead, and OpenMP threads spinning on a shared 2-core machine made
    some tests 10-20x slower."""
    torch.set_num_threads(1)
