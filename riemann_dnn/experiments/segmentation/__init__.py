r"""Train SegNet / SegNet-Basic with UN or B-SGD updates; metrics, checkpoints, reports (§5).

Methods (both use :class:`~riemann_dnn.optim.RiemannianSGD` with the same hyper-parameters and
the same initialisation -- every conv filter a unit-normalised Gaussian):

- ``"un"``: the paper's update; the BN-fed convolutions (found by
  :func:`~riemann_dnn.optim.param_groups`) on the oblique manifold, one unit-norm row per
  output channel; the classifier and BN's scale and shift Euclidean.
- ``"bsgd"``: balanced SGD; every parameter Euclidean.

Loss: the one the training set defines (:func:`.build.loss_for` asks
:meth:`~riemann_dnn.data.SegmentationSet.cross_entropy_loss` for it), pixel-wise cross-entropy
:math:`-\sum_p w_{y_p}\log\operatorname{softmax}(z_p)_{y_p} / \sum_p w_{y_p}` over the labelled
pixels (``ignore_index``, CamVid's void, left out), with class weights :math:`w` by
median-frequency balancing of the training labels (CamVid's own; optional for digit scenes) or
none.

:func:`train_segmentation` writes, into its output directory, ``checkpoint.pt`` after every
epoch (model, optimizer, epoch, metrics history, random-generator states; a ``resume`` continues
exactly where it stopped), ``metrics.json``, ``metrics.md`` and ``predictions.png`` (the paper's
Figure 2: rows of input, ground truth and prediction for a few test images).
:func:`compare_methods` runs UN and B-SGD over several seeds, each with a learning rate chosen on
held-out training scenes, and writes ``comparison.json/.md/.png``.

One idea a module:

- :mod:`.config`: :class:`SegmentationConfig`, every setting of a run, validated;
- :mod:`.build`: the data and its loss, the held-out split, the model, the optimizer;
- :mod:`.metrics`: confusion matrix, global / class-average accuracy and mIoU, evaluation;
- :mod:`.checkpoint`: ``checkpoint.pt`` with the random-generator states, resume checks;
- :mod:`.train`: :func:`train_segmentation`, the torch loop and the pymanopt door;
- :mod:`.compare`: learning-rate selection and :func:`compare_methods` (on the worker pool);
- :mod:`.report`: ``metrics.*``, ``comparison.*`` and the prediction figure.
"""

from .build import (
    build_model,
    build_optimizer,
    class_weights_for,
    load_segmentation_data,
    split_holdout,
)
from .checkpoint import CHECKPOINT, CheckpointMismatchError, load_trained_model
from .compare import compare_methods, select_learning_rate
from .config import SEGMENTATION_METHODS, SEGMENTATION_MODELS, SegmentationConfig
from .metrics import confusion_matrix, evaluate, predict, segmentation_metrics
from .report import palette_for, plot_predictions, write_run_report
from .train import SegmentationResult, train_segmentation

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
