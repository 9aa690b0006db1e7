"""MNIST: find, verify and load its four IDX files (the format: ``data/idx.py``; their names,
checksums and places: ``data/sources.py``; the download: ``data/download.py``).

MNIST is four IDX files (LeCun et al.): ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or gzipped (``NAME.gz``).
Any directory holding four IDX files in that layout loads (Fashion-MNIST, KMNIST, your own); only
content whose checksums match the original MNIST is flagged ``canonical``.

Where the files are looked for (:func:`find_mnist_dir`), in this order:

1. ``data_dir``, when given: the directory itself, or its ``mnist/`` subdirectory -- and only
   there, so a mistyped directory is an error rather than a silent switch to other data;
2. ``$RIEMANN_DNN_DATA/mnist``, then ``$RIEMANN_DNN_DATA`` itself;
3. the per-user cache, ``$XDG_CACHE_HOME/riemann_dnn/mnist`` (default
   ``~/.cache/riemann_dnn/mnist``), which is where :func:`download_mnist` writes.

Without any of them -- and only when neither ``data_dir`` nor ``$RIEMANN_DNN_DATA`` names a
place (a place the user named is honoured or refused) -- ``load_mnist()`` falls back (with a
warning) to a real-MNIST subset shipped inside the package: 5,000 training and 1,000 test images, drawn stratified at random by
``scripts/make_embedded_mnist.py``.

Example
-------
>>> from riemann_dnn.data import load_mnist, as_tensors
>>> data = load_mnist()                   # full MNIST when found, else the embedded subset
>>> x, y = as_tensors(data.train_images, data.train_labels)
>>> x.shape[1], float(x.max()) <= 1.0, y.dtype
(784, True, torch.int64)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from . import download as downloader
from .idx import MNISTError, MNISTNotFoundError, PathLike, parse_idx, read_bytes
from .sources import (
    DATA_ENV_VAR,
    EMBEDDED_DIR,
    MNIST_FILES,
    MNIST_SHA256,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    mnist_cache_dir,
)

__all__ = [
    "MNIST",
    "MNISTVerification",
    "as_tensors",
    "find_mnist_dir",
    "load_mnist",
    "verify_mnist",
]

_HOW_TO_PROVIDE = (
    "To provide MNIST: pass data_dir=DIR (CLI: --data-dir DIR) with the four files in DIR or "
    f"DIR/mnist; or set {DATA_ENV_VAR}=DIR; or download them into the user cache with "
    "riemann_dnn.data.download_mnist() (or load_mnist(download=True))."
)


# --------------------------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------------------------


def _mnist_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The four files in ``directory`` (``NAME`` preferred over ``NAME.gz``) and those missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in MNIST_FILES:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            missing.append(name)
    return found, missing


def _candidate_dirs(data_dir: PathLike | None) -> list[tuple[Path | None, str]]:
    """Directories to search, in order, each with a label saying where it came from."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [(root, "data_dir"), (root / "mnist", "data_dir/mnist")]
    env = os.environ.get(DATA_ENV_VAR, "")
    if env:
        root = Path(env).expanduser()
        places = [(root / "mnist", f"${DATA_ENV_VAR}/mnist"), (root, f"${DATA_ENV_VAR}")]
    else:
        places = [(None, f"${DATA_ENV_VAR}")]
    return [*places, (mnist_cache_dir(), "user cache")]


def _why_not(directory: Path, missing: list[str]) -> str:
    if not directory.exists():
        return "does not exist"
    if not directory.is_dir():
        return "is not a directory"
    if len(missing) == len(MNIST_FILES):
        return "holds none of the four files"
    return (
        f"holds {len(MNIST_FILES) - len(missing)} of the four files, missing {', '.join(missing)}"
    )


def find_mnist_dir(data_dir: PathLike | None = None) -> Path:
    """The directory holding the four MNIST-format IDX files (each ``NAME`` or ``NAME.gz``).

    Args:
        data_dir: when given, the directory holding the files or a parent with a ``mnist/``
            subdirectory; nothing else is searched. When None: ``$RIEMANN_DNN_DATA/mnist``,
            ``$RIEMANN_DNN_DATA``, then :func:`mnist_cache_dir`.

    Returns:
        The directory, resolved to an absolute path.

    Raises:
        MNISTNotFoundError: nowhere holds all four files; the message lists each place looked
            in, why it did not qualify, and how to provide the files.
    """
    looked: list[str] = []
    for directory, label in _candidate_dirs(data_dir):
        if directory is None:
            looked.append(f"  - {label}: not set")
            continue
        _, missing = _mnist_files(directory)
        if not missing:
            return directory.resolve()
        looked.append(f"  - {directory} ({label}): {_why_not(directory, missing)}")
    names = ", ".join(f"{name}[.gz]" for name in MNIST_FILES)
    scope = (
        f"\n(data_dir was given, so ${DATA_ENV_VAR} and the user cache were not searched.)"
        if data_dir is not None
        else ""
    )
    raise MNISTNotFoundError(
        f"MNIST not found: no directory holds the four IDX files ({names}). Looked in:\n"
        + "\n".join(looked)
        + scope
        + "\n"
        + _HOW_TO_PROVIDE
        + " Without them, load_mnist(source='embedded') gives the real-MNIST subset packaged "
        "with riemann_dnn (5,000 training and 1,000 test images)."
    )


# --------------------------------------------------------------------------------------------
# Loading and verification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class MNIST:
    """An MNIST-format dataset in memory.

    Attributes:
        train_images: uint8 array (N, H, W), raw pixels 0..255 (H = W = 28 for MNIST).
        train_labels: int64 array (N,).
        test_images: uint8 array (M, H, W).
        test_labels: int64 array (M,).
        source: the directory the files were read from, or ``"embedded"``.
        canonical: whether the four files are exactly the original MNIST.
        sha256: sha256 of each file's uncompressed content (see :attr:`checksum`).

    The arrays are shared by every load of the same files and are read-only; copy one
    (``a.copy()``) before modifying it.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    canonical: bool
    sha256: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def checksum(self) -> str:
        """One sha256 over the four files' sha256 (in :data:`MNIST_FILES` order): the
        identity of the data, whatever directory or compression it was read from."""
        joined = "".join(f"{name}={self.sha256.get(name, '')}\n" for name in MNIST_FILES)
        return hashlib.sha256(joined.encode()).hexdigest()

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of one image."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        """1 + the largest label in either split (10 for MNIST)."""
        return 1 + int(max(self.train_labels.max(), self.test_labels.max()))

    def __repr__(self) -> str:
        h, w = self.image_shape
        return (
            f"MNIST(train={len(self.train_labels)}, test={len(self.test_labels)}, "
            f"image_shape=({h}, {w}), source={self.source!r}, canonical={self.canonical})"
        )


@dataclass(frozen=True)
class MNISTVerification:
    """What :func:`verify_mnist` found in a consistent MNIST-format directory.

    Attributes:
        directory: the directory checked.
        files: the file read for each of :data:`MNIST_FILES`.
        train_size, test_size: number of images (= labels) per split.
        image_shape: (H, W).
        num_classes: 1 + largest label.
        train_label_counts, test_label_counts: images per label 0..num_classes-1.
        sha256: sha256 of each file's uncompressed content.
        is_canonical: every sha256 equals :data:`MNIST_SHA256` (the original MNIST).
    """

    directory: Path
    files: Mapping[str, Path]
    train_size: int
    test_size: int
    image_shape: tuple[int, int]
    num_classes: int
    train_label_counts: tuple[int, ...]
    test_label_counts: tuple[int, ...]
    sha256: Mapping[str, str]
    is_canonical: bool


def _check_consistent(arrays: Mapping[str, np.ndarray], files: Mapping[str, Path]) -> None:
    """Raise MNISTError unless the four arrays form an MNIST-format dataset."""
    fix = "Replace the files with a matching, intact set of the four MNIST-format files."
    for name in (TRAIN_IMAGES, TEST_IMAGES):
        a = arrays[name]
        if a.dtype != np.uint8 or a.ndim != 3 or 0 in a.shape:
            raise MNISTError(
                f"{files[name]}: expected uint8 images of shape (N, rows, cols) with N, rows, "
                f"cols >= 1 (IDX magic 0x00000803); got {a.dtype} of shape {a.shape}. {fix}"
            )
    for name in (TRAIN_LABELS, TEST_LABELS):
        a = arrays[name]
        if a.dtype != np.uint8 or a.ndim != 1:
            raise MNISTError(
                f"{files[name]}: expected uint8 labels of shape (N,) (IDX magic 0x00000801); "
                f"got {a.dtype} of shape {a.shape}. {fix}"
            )
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        n_img, n_lab = len(arrays[images]), len(arrays[labels])
        if n_img != n_lab:
            raise MNISTError(
                f"{files[images]} holds {n_img} images but {files[labels]} holds {n_lab} "
                f"labels; the two files do not belong together. {fix}"
            )
    train_hw, test_hw = arrays[TRAIN_IMAGES].shape[1:], arrays[TEST_IMAGES].shape[1:]
    if train_hw != test_hw:
        raise MNISTError(
            f"{files[TRAIN_IMAGES]} has images of {train_hw} pixels but {files[TEST_IMAGES]} "
            f"has {test_hw}; training and test images must share one size. {fix}"
        )


def _signature(files: Mapping[str, Path]) -> tuple[tuple[str, int, int], ...]:
    """Identity of the files on disk, so a changed file is re-read rather than served stale."""
    stats = [(str(files[n]), files[n].stat()) for n in MNIST_FILES]
    return tuple((p, s.st_size, s.st_mtime_ns) for p, s in stats)


@functools.lru_cache(maxsize=8)
def _load_cached(
    directory: str, signature: tuple[tuple[str, int, int], ...], source: str
) -> tuple[MNIST, MNISTVerification]:
    files = {name: Path(path) for name, (path, _, _) in zip(MNIST_FILES, signature, strict=True)}
    arrays: dict[str, np.ndarray] = {}
    sha256: dict[str, str] = {}
    for name, path in files.items():
        data = read_bytes(path)
        arrays[name] = parse_idx(data, path)
        sha256[name] = hashlib.sha256(data).hexdigest()
    _check_consistent(arrays, files)

    def frozen(a: np.ndarray, dtype: Any = None) -> np.ndarray:
        a = a if dtype is None else a.astype(dtype)
        a.flags.writeable = False
        return a

    train_labels = frozen(arrays[TRAIN_LABELS], np.int64)
    test_labels = frozen(arrays[TEST_LABELS], np.int64)
    num_classes = 1 + int(max(train_labels.max(), test_labels.max()))
    canonical = all(sha256[n] == MNIST_SHA256[n] for n in MNIST_FILES)
    data = MNIST(
        train_images=frozen(arrays[TRAIN_IMAGES]),
        train_labels=train_labels,
        test_images=frozen(arrays[TEST_IMAGES]),
        test_labels=test_labels,
        source=source,
        canonical=canonical,
        sha256=dict(sha256),
    )
    report = MNISTVerification(
        directory=Path(directory),
        files=files,
        train_size=len(train_labels),
        test_size=len(test_labels),
        image_shape=data.image_shape,
        num_classes=num_classes,
        train_label_counts=tuple(np.bincount(train_labels, minlength=num_classes).tolist()),
        test_label_counts=tuple(np.bincount(test_labels, minlength=num_classes).tolist()),
        sha256=sha256,
        is_canonical=canonical,
    )
    return data, report


def _load_dir(directory: Path, source: str | None = None) -> tuple[MNIST, MNISTVerification]:
    files, missing = _mnist_files(directory)
    if missing:  # the directory changed since it was found
        raise MNISTNotFoundError(
            f"{directory}: {_why_not(directory, missing)}. " + _HOW_TO_PROVIDE
        )
    return _load_cached(str(directory), _signature(files), source or str(directory))


def verify_mnist(directory: PathLike) -> MNISTVerification:
    """Check that ``directory`` holds a consistent MNIST-format dataset; say if it is MNIST.

    Consistency (always required): four valid IDX files; images uint8 of shape (N, H, W),
    the same H, W in both splits (28 x 28 for MNIST, any size for other MNIST-format sets);
    labels uint8 of shape (N,) with as many labels as images. Canonicity (reported, not
    required): the uncompressed content's sha256 equals :data:`MNIST_SHA256`.

    Args:
        directory: a directory holding the four files, or a parent with a ``mnist/`` subdir.

    Raises:
        MNISTNotFoundError: the files are not there.
        MNISTError: a file is corrupt or truncated, or the files are inconsistent.

    Example:
        >>> verify_mnist("../shared/data/mnist").is_canonical  # doctest: +SKIP
        True
    """
    return _load_dir(find_mnist_dir(directory))[1]


def _load_embedded() -> MNIST:
    return _load_dir(EMBEDDED_DIR.resolve(), source="embedded")[0]


def load_mnist(
    data_dir: PathLike | None = None,
    *,
    source: Literal["auto", "full", "embedded"] = "auto",
    download: bool = False,
) -> MNIST:
    """Load MNIST (or any MNIST-format dataset) into memory, verified for consistency.

    Args:
        data_dir: where the four files are (see :func:`find_mnist_dir`); None searches
            ``$RIEMANN_DNN_DATA`` and the user cache.
        source: ``"full"``: the IDX files must be found (error otherwise). ``"embedded"``: the
            5,000/1,000-image real-MNIST subset packaged with riemann_dnn. ``"auto"``: the
            files when found, else (only when neither ``data_dir`` nor ``$RIEMANN_DNN_DATA``
            names a place) the embedded subset, with a warning.
        download: when the files are not found, download MNIST into ``data_dir`` (if given)
            or the user cache first (:func:`download_mnist`).

    Returns:
        An :class:`MNIST`; repeated loads of unchanged files return the same object at no cost.

    Raises:
        MNISTNotFoundError: the files are needed but not found (the message says where we
            looked and how to provide them).
        MNISTError: a file is corrupt, truncated or inconsistent with the others.

    Example:
        >>> data = load_mnist(source="embedded")
        >>> data.train_images.shape, data.test_labels.shape
        ((5000, 28, 28), (1000,))
    """
    if source not in ("auto", "full", "embedded"):
        raise ValueError(f"source={source!r}: expected 'auto', 'full' or 'embedded'.")
    if source == "embedded":
        if data_dir is not None or download:
            raise ValueError(
                f"source='embedded' reads the packaged subset only; got data_dir={data_dir!r}, "
                f"download={download!r}. Use source='full' or 'auto' to read or download files."
            )
        return _load_embedded()
    try:
        directory = find_mnist_dir(data_dir)
    except MNISTNotFoundError:
        if download:
            directory = find_mnist_dir(downloader.download_mnist(data_dir))
        elif source == "full" or data_dir is not None or os.environ.get(DATA_ENV_VAR):
            raise  # a place the caller named must be honoured, not replaced by the subset
        else:
            data = _load_embedded()
            warnings.warn(
                f"Full MNIST not found; using the embedded real-MNIST subset "
                f"({len(data.train_labels):,} training / {len(data.test_labels):,} test "
                f"images), so errors are not comparable with full-MNIST numbers. Get the full "
                f"set with riemann_dnn.data.download_mnist(), {DATA_ENV_VAR}=DIR or "
                "--data-dir DIR.",
                UserWarning,
                stacklevel=2,
            )
            return data
    return _load_dir(directory)[0]


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------


def as_tensors(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    flatten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training tensors from raw images and labels: ``x = pixels / 255``, ``y`` int64.

    No other preprocessing (the paper uses raw pixels scaled to [0, 1]). The uint8 pixels are
    moved to ``device`` before conversion, so only a quarter of the float bytes travel.

    Args:
        images: uint8 array or tensor (N, H, W) (or (N, D)).
        labels: integer array or tensor (N,).
        device: where the tensors go.
        dtype: floating dtype of ``x``.
        flatten: ``x`` of shape (N, H*W) when True, else the shape of ``images``.

    Returns:
        ``(x, y)``: ``x`` in [0, 1] of ``dtype``; ``y`` int64 (N,); both on ``device``.

    Example:
        >>> x, y = as_tensors(np.full((2, 28, 28), 255, np.uint8), np.array([3, 7]))
        >>> tuple(x.shape), float(x.max()), y.tolist()
        ((2, 784), 1.0, [3, 7])
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype={dtype!r}: expected a floating torch dtype, e.g. torch.float32.")
    x = images if isinstance(images, torch.Tensor) else torch.tensor(np.asarray(images))
    y = labels if isinstance(labels, torch.Tensor) else torch.tensor(np.asarray(labels))
    if x.dtype != torch.uint8 or x.ndim < 2:
        raise ValueError(
            f"images: expected raw uint8 pixels of shape (N, H, W); got {x.dtype} of shape "
            f"{tuple(x.shape)}."
        )
    if y.ndim != 1 or len(y) != len(x) or y.is_floating_point() or y.is_complex():
        raise ValueError(
            f"labels: expected integers of shape ({len(x)},) to match images; got {y.dtype} of "
            f"shape {tuple(y.shape)}."
        )
    x = x.to(device).to(dtype).div_(255)
    if flatten:
        x = x.reshape(len(x), -1)
    return x, y.to(device=device, dtype=torch.int64)
