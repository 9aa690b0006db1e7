"""What one segmentation run is built from: its data (digit scenes or CamVid, and a held-out
split of the training set), its model (unit-norm filters from the run's seed), its optimizer
(the method's; e.g. UN: BN-fed convs on the oblique manifold, B-SGD: all Euclidean) and its
loss, the one its training set defines."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from ...data import SegmentationSet, load_camvid, load_digit_scenes
from ...models import SegNet, SegNetBasic
from ...params import param_groups
from ..ensemble import build_optimizer as build_optimizer_for
from ..methods import METHODS
from .config import SegmentationConfig

__all__ = [
    "load_segmentation_data",
    "build_model",
    "build_optimizer",
    "parameter_groups",
    "class_weights_for",
    "loss_for",
    "split_holdout",
]


def load_segmentation_data(
    config: SegmentationConfig, *, data_dir: str | None = None, source: str = "auto"
) -> tuple[SegmentationSet, SegmentationSet]:
    """``(train, test)`` for ``config.data``: digit scenes from MNIST (``data_dir``/``source``
    go to :func:`~riemann_dnn.data.load_mnist`) or CamVid's ``train`` and ``test`` splits."""
    root = config.camvid_root
    if root is not None:
        return (
            load_camvid(root, "train", size=config.size),
            load_camvid(root, "test", size=config.size),
        )
    return load_digit_scenes(
        data_dir,
        train_scenes=config.train_scenes,
        test_scenes=config.test_scenes,
        canvas=config.canvas,
        seed=config.data_seed,
        source=source,
    )


def build_model(config: SegmentationConfig, in_channels: int, num_classes: int) -> nn.Module:
    """The model of ``config``, initialised from ``config.seed`` (unit-norm filters)."""
    generator = torch.Generator().manual_seed(config.seed)
    if config.model == "segnet-basic":
        return SegNetBasic(
            num_classes,
            in_channels,
            config.width,
            stages=config.depth or 4,
            kernel=config.kernel or 7,
            generator=generator,
        )
    return SegNet(
        num_classes,
        in_channels,
        config.width,
        depth=config.depth or 5,
        kernel=config.kernel or 3,
        generator=generator,
    )


def build_optimizer(model: nn.Module, config: SegmentationConfig) -> tuple[Optimizer, list[str]]:
    """The optimizer of ``config.method`` (:data:`~..methods.METHODS`, constructed by
    :func:`~..ensemble.build_optimizer`) and the names of the parameters it constrains.

    UN (``RiemannianSGD``) and Riemannian Adam: ``param_groups(model)`` (BN-fed convs on the
    oblique manifold); the others one Euclidean group. All with ``config``'s lr, momentum
    (of SGD and SGDP) and weight decay.
    """
    groups = parameter_groups(model, config)
    constrained = [n for g in groups if g["manifold"] != "euclidean" for n in g["names"]]
    optimizer = build_optimizer_for(
        METHODS[config.method].optimizer,
        groups,
        config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    return optimizer, constrained


def parameter_groups(model: nn.Module, config: SegmentationConfig) -> list[dict[str, Any]]:
    """The param groups of ``config.method`` (each naming its manifold and its parameters),
    for :func:`build_optimizer` and for the pymanopt door's problem: UN ``param_groups(model)``
    with the oblique manifold and ``config.retraction``; B-SGD one Euclidean group."""
    if METHODS[config.method].constrained:
        return param_groups(model, manifold="oblique", retraction=config.retraction)
    return [
        {
            "params": list(model.parameters()),
            "manifold": "euclidean",
            "names": [n for n, _ in model.named_parameters()],
        }
    ]


def loss_for(config: SegmentationConfig, train: SegmentationSet) -> nn.CrossEntropyLoss:
    """The training loss: the one ``train`` defines
    (:meth:`~riemann_dnn.data.SegmentationSet.cross_entropy_loss`: its ``ignore_index`` left
    out, its own class weighting unless ``config.class_weights`` overrides it)."""
    return train.cross_entropy_loss(config.loss_class_weights)


def class_weights_for(config: SegmentationConfig, train: SegmentationSet) -> torch.Tensor | None:
    """Class weights of the loss (:func:`loss_for`): median-frequency of ``train``'s labels, or
    ``None``; ``"auto"`` takes ``train``'s own ``class_weighting``."""
    return train.loss_weights(config.loss_class_weights)


def split_holdout(
    train: SegmentationSet, holdout: float | int, seed: int = 0
) -> tuple[SegmentationSet, SegmentationSet]:
    """Split ``train`` at random into ``(fit, held_out)``; ``holdout`` is a fraction in (0, 1)
    or a count of images; both keep ``train``'s classes and loss."""
    n = len(train)
    count = int(round(holdout * n)) if isinstance(holdout, float) else int(holdout)
    if not 0 < count < n:
        raise ValueError(
            f"holdout={holdout!r} leaves no images to fit or to hold out "
            f"(of {n}); use a fraction in (0, 1) or a count in [1, {n - 1}]"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def subset(index: torch.Tensor, suffix: str) -> SegmentationSet:
        # replace keeps everything else of ``train``, its own loss (class weighting) included
        return replace(
            train,
            images=train.images[index],
            labels=train.labels[index],
            name=f"{train.name}-{suffix}",
        )

    return subset(order[count:], "fit"), subset(order[:count], "holdout")
