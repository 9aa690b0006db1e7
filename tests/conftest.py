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


#: The files that take longest (seconds of test time on the 2-core VM, 2026-12-07: torchrun
#: 158, faults 65, segmentation 26, checkpoint resume 24, cli 22, run identity 19, native
#: kernel 18, pool 18), first in the collection: with ``--dist loadfile`` and
#: ``--no-loadscope-reorder`` (pyproject's addopts) xdist hands files to the workers in this
#: order, so the long ones start early and the many short ones even out the end (xdist's
#: own order, by number of tests, started the torchrun file late and left one worker idle).
LONGEST_FIRST = (
    "tests/experiments/test_torchrun.py",
    "tests/cli/test_faults.py",
    "tests/experiments/test_segmentation.py",
    "tests/experiments/test_checkpoint_resume.py",
    "tests/cli/test_cli.py",
    "tests/experiments/test_run_identity.py",
    "tests/step/test_native_kernel.py",
    "tests/experiments/test_pool.py",
)


def pytest_collection_modifyitems(session, config, items):
    """Put the files of :data:`LONGEST_FIRST` first, in that order; every file's own tests
    keep their order (docs/guide.md's examples run in sequence)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item):
        path = Path(str(item.fspath)).resolve()
        name = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else ""
        return rank.get(name, len(rank))

    items.sort(key=key)  # stable: the order within a file and among the others is kept
