"""Where MNIST's files are and what they hold: their names, checksums and mirrors, the data
environment variable, the per-user cache and the packaged subset. Both the loader
(``mnist.py``) and the downloader (``download.py``) read them from here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "DATA_ENV_VAR",
    "EMBEDDED_DIR",
    "MNIST_FILES",
    "MNIST_GZ_MD5",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "mnist_cache_dir",
]

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
#: The four file names (without ``.gz``), in the order train images, train labels, test images,
#: test labels.
MNIST_FILES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: sha256 of the canonical MNIST files' *uncompressed* content (independent of how they were
#: gzipped); the train-images file's md5 is the well-known 6bbc9ace898e44ae57da46a324031adb.
MNIST_SHA256: Mapping[str, str] = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: md5 of the gzipped files as published by the mirrors (``NAME.gz``).
MNIST_GZ_MD5: Mapping[str, str] = {
    TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}

#: Public mirrors serving ``NAME.gz`` for the four names, tried in order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: Environment variable naming a data root (MNIST in ``$RIEMANN_DNN_DATA/mnist``).
DATA_ENV_VAR = "RIEMANN_DNN_DATA"

#: The packaged real-MNIST subset (same file names and format as full MNIST).
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"


def mnist_cache_dir() -> Path:
    """The per-user MNIST cache: ``$XDG_CACHE_HOME/riemann_dnn/mnist``, default
    ``~/.cache/riemann_dnn/mnist`` (it need not exist)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "riemann_dnn" / "mnist"
