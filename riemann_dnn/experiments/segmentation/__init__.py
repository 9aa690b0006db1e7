"""Train SegNet / SegNet-Basic with UN or B-SGD updates (§5); see :mod:`.train`."""

from .build import (
    build_model,
    build_optimizer,
    class_weights_for,
    load_segmentation_data,
    split_holdout,
)
from .checkpoint import CHECKPOINT, CheckpointMismatchError, load_trained_model
from .config import SEGMENTATION_METHODS, SEGMENTATION_MODELS, SegmentationConfig
from .metrics import confusion_matrix, evaluate, predict, segmentation_metrics
from .report import palette_for, plot_predictions, write_run_report
from .train import (
    SegmentationResult,
    compare_methods,
    select_learning_rate,
    train_segmentation,
)

__all__ = [
    "SEGMENTATION_METHODS",
    "SEGMENTATION_MODELS",
    "SegmentationConfig",
    "SegmentationResult",
    "load_segmentation_data",
    "build_model",
    "build_optimizer",
    "class_weights_for",
    "confusion_matrix",
    "segmentation_metrics",
    "evaluate",
    "predict",
    "train_segmentation",
    "select_learning_rate",
    "compare_methods",
    "load_trained_model",
    "split_holdout",
    "palette_for",
    "plot_predictions",
    "write_run_report",
    "CheckpointMismatchError",
    "CHECKPOINT",
]
