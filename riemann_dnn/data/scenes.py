r"""Digit scenes: a segmentation benchmark built from real MNIST digits.

A scene is a black ``canvas x canvas`` image on which 2-4 (configurable) randomly chosen MNIST
digits are pasted at uniformly random positions. The per-pixel label is the digit's class (0-9)
where the digit's ink is bright, and background (class 10) elsewhere:

.. math::

    y(p) = \begin{cases} d(p) & x(p) > \tau \cdot 255 \\ 10 & \text{otherwise} \end{cases}

with :math:`x(p)` the scene's uint8 intensity, :math:`d(p)` the class of the digit that supplied
it and :math:`\tau` the threshold (default 0.5, i.e. intensities >= 128 are digit pixels).
Where digits overlap, each pixel takes the brightest digit's intensity and class (ties go to the
digit pasted later), so the label always describes the pixel shown. Training scenes use only
MNIST's training digits and test scenes only its test digits.

Example::

    train, test = load_digit_scenes(train_scenes=2000, test_scenes=500, seed=0)
    train.images.shape, train.labels.shape  # (2000, 1, 64, 64), (2000, 64, 64)
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .camvid import SegmentationSet
from .mnist import load_mnist

__all__ = [
    "BACKGROUND_LABEL",
    "DIGIT_SCENE_CLASSES",
    "load_digit_scenes",
    "make_digit_scenes",
]

BACKGROUND_LABEL: int = 10
"""Label id of background pixels in digit scenes (digits are 0-9)."""

DIGIT_SCENE_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10)) + ("background",)
"""Class names of digit scenes, in label-id order: ``"0"``, ..., ``"9"``, ``"background"``."""


def make_digit_scenes(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_scenes: int,
    *,
    canvas: int = 64,
    digits_per_scene: tuple[int, int] = (2, 4),
    seed: int | np.random.Generator | np.random.SeedSequence = 0,
    threshold: float = 0.5,
    name: str = "mnist-scenes",
) -> SegmentationSet:
    """Paste random digits on black canvases; label each pixel with its digit or background.

    Each scene draws its digit count uniformly from ``digits_per_scene = (lo, hi)`` (both
    included), that many digits uniformly (with replacement) from ``images``, and for each a
    top-left corner uniformly in ``[0, canvas - h] x [0, canvas - w]``. Overlaps are resolved per
    pixel by the brightest digit (ties: the later one); a pixel is labelled with that digit's class
    when its intensity exceeds ``threshold * 255``, else with :data:`BACKGROUND_LABEL` (10).

    Args:
        images: uint8 digits of shape (M, h, w), e.g. MNIST's raw pixels (numpy or torch).
        labels: their classes, shape (M,), integers in 0-9.
        num_scenes: N, the number of scenes to make.
        canvas: side of the square scenes; at least the digit size (28 for MNIST).
        digits_per_scene: inclusive range ``(lo, hi)`` of digits per scene, ``1 <= lo <= hi``.
        seed: an int, a ``numpy.random.SeedSequence`` or a ``Generator``; equal seeds give equal
            scenes.
        threshold: fraction of full intensity in [0, 1) above which a pixel belongs to a digit.
        name: the returned set's name.

    Returns:
        A :class:`SegmentationSet` with images (N, 1, canvas, canvas) float32 in [0, 1] (the
        uint8 intensities / 255), labels (N, canvas, canvas) int64 in 0-10, ``num_classes=11``,
        ``ignore_index=None``, ``class_names`` :data:`DIGIT_SCENE_CLASSES` and
        ``class_weighting=None``: its own loss (``cross_entropy_loss(class_weights="auto")``)
        is the unweighted cross-entropy over every pixel.
    """
    digits = _as_numpy(images, "images")
    classes = _as_numpy(labels, "labels")
    if digits.ndim != 3 or digits.shape[0] == 0:
        raise ValueError(f"images must have shape (M, h, w) with M >= 1; got shape {digits.shape}")
    if digits.dtype != np.uint8:
        raise TypeError(
            f"images must be uint8 intensities 0-255 (MNIST's raw pixels); got dtype "
            f"{digits.dtype}. Convert float images in [0, 1] with (x * 255).round() cast to uint8."
        )
    if classes.shape != digits.shape[:1] or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(
            f"labels must be integers of shape ({digits.shape[0]},), one per image; got shape "
            f"{classes.shape} and dtype {classes.dtype}"
        )
    if classes.min() < 0 or classes.max() >= BACKGROUND_LABEL:
        raise ValueError(
            f"labels must be digit classes 0-9; got values in [{classes.min()}, {classes.max()}]"
        )
    if isinstance(num_scenes, bool) or not isinstance(num_scenes, int | np.integer):
        raise TypeError(f"num_scenes must be an int; got {num_scenes!r}")
    if num_scenes < 0:
        raise ValueError(f"num_scenes must be >= 0; got {num_scenes}")
    h, w = digits.shape[1:]
    if isinstance(canvas, bool) or not isinstance(canvas, int | np.integer):
        raise TypeError(f"canvas must be an int; got {canvas!r}")
    if canvas < max(h, w):
        raise ValueError(
            f"canvas={canvas} is smaller than the digits ({h}x{w}); use canvas >= {max(h, w)} "
            "(64 is the default)"
        )
    lo, hi = _digit_range(digits_per_scene)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(
            f"threshold={threshold} must be a fraction of full intensity in [0, 1) "
            "(0.5 labels intensities >= 128 as digit)"
        )

    rng = np.random.default_rng(seed)
    n, canvas = int(num_scenes), int(canvas)
    counts = rng.integers(lo, hi + 1, size=n)
    picks = rng.integers(0, digits.shape[0], size=(n, hi))
    tops = rng.integers(0, canvas - h + 1, size=(n, hi))
    lefts = rng.integers(0, canvas - w + 1, size=(n, hi))
    active = np.arange(hi) < counts[:, None]  # slot j of scene i holds a digit iff j < counts[i]

    scene = np.zeros((n, canvas, canvas), dtype=np.uint8)
    label = np.full((n, canvas, canvas), BACKGROUND_LABEL, dtype=np.int64)
    cut = int(np.floor(threshold * 255.0))  # x > threshold * 255  <=>  x > cut, for integer x
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    scene_idx = np.arange(n)[:, None, None]
    for j in range(hi):  # hi is a handful of slots; each is vectorised over all scenes
        on = active[:, j]
        if not on.any():
            continue
        ii = scene_idx[on]
        r = tops[on, j][:, None, None] + rows
        c = lefts[on, j][:, None, None] + cols
        patch = digits[picks[on, j]]
        shown = scene[ii, r, c]
        take = (patch >= shown) & (patch > 0)  # brightest wins; ties go to the later digit
        digit = classes[picks[on, j]].astype(np.int64)[:, None, None]
        scene[ii, r, c] = np.where(take, patch, shown)
        label[ii, r, c] = np.where(
            take, np.where(patch > cut, digit, BACKGROUND_LABEL), label[ii, r, c]
        )

    return SegmentationSet(
        images=torch.from_numpy(scene).unsqueeze(1).to(torch.float32).div_(255.0),
        labels=torch.from_numpy(label),
        num_classes=len(DIGIT_SCENE_CLASSES),
        ignore_index=None,
        class_names=DIGIT_SCENE_CLASSES,
        name=name,
        class_weighting=None,  # every pixel labelled, the loss unweighted
    )


def load_digit_scenes(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    train_scenes: int = 2000,
    test_scenes: int = 500,
    canvas: int = 64,
    digits_per_scene: tuple[int, int] = (2, 4),
    seed: int = 0,
    threshold: float = 0.5,
    source: str = "auto",
    download: bool = False,
) -> tuple[SegmentationSet, SegmentationSet]:
    """Training and test digit scenes from MNIST's own training and test splits.

    The two sets use independent random streams spawned from ``seed``
    (``numpy.random.SeedSequence(seed).spawn(2)``), so the test scenes do not change when
    ``train_scenes`` does.

    Args:
        data_dir, source, download: passed to :func:`riemann_dnn.data.mnist.load_mnist`.
        train_scenes, test_scenes: number of scenes in each set.
        canvas, digits_per_scene, threshold: see :func:`make_digit_scenes`.
        seed: seed of both sets.

    Returns:
        ``(train, test)`` :class:`SegmentationSet` s named ``"mnist-scenes-train"`` and
        ``"mnist-scenes-test"``: images (N, 1, canvas, canvas) float32 in [0, 1], labels
        (N, canvas, canvas) int64, 11 classes (digits 0-9, background 10), no ignored label.
    """
    mnist = load_mnist(data_dir, source=source, download=download)
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    options = {"canvas": canvas, "digits_per_scene": digits_per_scene, "threshold": threshold}
    train = make_digit_scenes(
        mnist.train_images,
        mnist.train_labels,
        train_scenes,
        seed=train_seq,
        name="mnist-scenes-train",
        **options,
    )
    test = make_digit_scenes(
        mnist.test_images,
        mnist.test_labels,
        test_scenes,
        seed=test_seq,
        name="mnist-scenes-test",
        **options,
    )
    return train, test


def _digit_range(digits_per_scene: tuple[int, int]) -> tuple[int, int]:
    try:
        lo, hi = digits_per_scene
        ok = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (lo, hi))
    except (TypeError, ValueError):
        ok = False
    if not ok or not 1 <= lo <= hi:
        raise ValueError(
            f"digits_per_scene must be an inclusive range (lo, hi) of ints with 1 <= lo <= hi; "
            f"got {digits_per_scene!r} (e.g. (2, 4), or (3, 3) for exactly 3)"
        )
    return int(lo), int(hi)


def _as_numpy(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{what} must be a numpy array or a torch tensor; got {type(x).__name__}")
