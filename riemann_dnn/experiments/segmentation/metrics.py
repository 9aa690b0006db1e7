r"""How a segmentation model is scored: the confusion matrix and the metrics drawn from it,
predictions and evaluation in eval mode, and the majority-class baseline.

Metrics from the confusion matrix :math:`C` (rows: true class, columns: predicted class,
ignored pixels left out):

.. math::

    \text{global} = \frac{\sum_c C_{cc}}{\sum_{ab} C_{ab}},\quad
    \text{class-avg} = \operatorname{mean}_{c:\,n_c>0}\frac{C_{cc}}{n_c},\quad
    \text{mIoU} = \operatorname{mean}_{c:\,u_c>0}\frac{C_{cc}}{u_c},

with :math:`n_c = \sum_b C_{cb}` and :math:`u_c = n_c + \sum_a C_{ac} - C_{cc}`
(a class neither present nor predicted is left out of the means).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data import SegmentationSet

__all__ = [
    "confusion_matrix",
    "segmentation_metrics",
    "predict",
    "evaluate",
    "loss_normaliser",
    "majority_baseline",
]


def confusion_matrix(
    prediction: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """K x K int64 counts ``C[true, predicted]`` over the pixels whose target is not
    ``ignore_index``."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction of shape {tuple(prediction.shape)} does not match target "
            f"of shape {tuple(target.shape)}"
        )
    target, prediction = target.reshape(-1), prediction.reshape(-1)
    if ignore_index is not None:
        keep = target != ignore_index
        target, prediction = target[keep], prediction[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"target holds ids outside [0, {num_classes}) other than ignore_index={ignore_index}"
        )
    flat = target.to(torch.int64) * num_classes + prediction.to(torch.int64)
    return (
        torch.bincount(flat, minlength=num_classes * num_classes)
        .reshape(num_classes, num_classes)
        .cpu()
    )


def segmentation_metrics(confusion: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """Global pixel accuracy, class-average accuracy and mIoU of a confusion matrix (rows: true
    class), with per-class accuracy and IoU (``None`` where undefined); see the module doc."""
    c = torch.as_tensor(confusion, dtype=torch.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"confusion must be a square K x K matrix; got shape {tuple(c.shape)}")
    total = float(c.sum())
    tp = c.diagonal()
    true_count, predicted_count = c.sum(1), c.sum(0)
    union = true_count + predicted_count - tp
    accuracy = [
        float(tp[k] / true_count[k]) if true_count[k] > 0 else None for k in range(c.shape[0])
    ]
    iou = [float(tp[k] / union[k]) if union[k] > 0 else None for k in range(c.shape[0])]
    defined_acc = [a for a in accuracy if a is not None]
    defined_iou = [v for v in iou if v is not None]
    nan = float("nan")
    return {
        "global_accuracy": float(tp.sum()) / total if total > 0 else nan,
        "class_accuracy": statistics.fmean(defined_acc) if defined_acc else nan,
        "mean_iou": statistics.fmean(defined_iou) if defined_iou else nan,
        "per_class_accuracy": accuracy,
        "per_class_iou": iou,
        "pixels": int(total),
    }


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Predicted class ids (N, H, W) on the CPU, the model in eval mode (BN running stats)."""
    was_training = model.training
    model.eval()
    try:
        out = [
            model(images[i : i + batch_size].to(device)).argmax(1).cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: SegmentationSet,
    loss_fn: Callable | None = None,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Metrics of ``model`` on ``data`` (eval mode), with ``"loss"`` if ``loss_fn`` is given and
    the ``"confusion"`` matrix as nested lists."""
    was_training = model.training
    model.eval()
    k = data.num_classes
    confusion = torch.zeros(k, k, dtype=torch.int64)
    loss_sum, loss_weight = 0.0, 0.0
    try:
        for start in range(0, len(data), batch_size):
            x = data.images[start : start + batch_size].to(device)
            y = data.labels[start : start + batch_size].to(device)
            logits = model(x)
            confusion += confusion_matrix(logits.argmax(1), y, k, data.ignore_index)
            if loss_fn is not None:
                weight = loss_normaliser(loss_fn, y)
                loss_sum += float(loss_fn(logits, y)) * weight
                loss_weight += weight
    finally:
        model.train(was_training)
    metrics = segmentation_metrics(confusion)
    metrics["confusion"] = confusion.tolist()
    if loss_fn is not None:
        metrics["loss"] = loss_sum / loss_weight if loss_weight > 0 else float("nan")
    return metrics


def loss_normaliser(loss_fn: nn.CrossEntropyLoss, y: torch.Tensor) -> float:
    """The denominator of a mean-reduced weighted cross-entropy on labels ``y``, so that batch
    losses combine into the loss of the whole set."""
    keep = y != loss_fn.ignore_index
    if loss_fn.weight is None:
        return float(keep.sum())
    return float(loss_fn.weight[y[keep]].sum())


def majority_baseline(train: SegmentationSet, test: SegmentationSet) -> dict[str, Any]:
    """Metrics on ``test`` of predicting the most frequent training class everywhere."""
    labels = train.labels.reshape(-1)
    if train.ignore_index is not None:
        labels = labels[labels != train.ignore_index]
    majority = int(torch.bincount(labels, minlength=train.num_classes).argmax())
    confusion = confusion_matrix(
        torch.full_like(test.labels, majority), test.labels, test.num_classes, test.ignore_index
    )
    metrics = segmentation_metrics(confusion)
    return {
        "class": majority,
        "class_name": train.class_names[majority],
        **{k: metrics[k] for k in ("global_accuracy", "class_accuracy", "mean_iou")},
    }
