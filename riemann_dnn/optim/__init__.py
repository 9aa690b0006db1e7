"""The torch side: :class:`RiemannianOptimizer` (the base of the Riemannian
``torch.optim.Optimizer`` classes), :class:`RiemannianSGD` and :class:`RiemannianAdam`, learning-rate schedules
(bold driver, per copy too) and stacked copies of a model.

Which parameter goes on which manifold (:func:`~riemann_dnn.params.param_groups`,
:class:`~riemann_dnn.params.Geometry`, ...) lives in :mod:`riemann_dnn.params`; those names
are importable from here too."""

# Re-exported from riemann_dnn.params, where they live (and are documented).
from ..params import (  # noqa: F401
    MANIFOLD_NAMES,
    Geometry,
    param_groups,
    resolve_geometry,
    scale_invariant_weights,
    verify_scale_invariance,
)
from .optimizer import RiemannianOptimizer
from .radam import RiemannianAdam, RiemannianAdamW, riemannian_adam
from .rsgd import FILTER_RATES, NonFiniteGradientError, RiemannianSGD, filter_rates, riemannian_sgd
from .schedulers import BoldDriver, Stateful, StepSizeScheduler
from .stacked import StackedModules

__all__ = [
    "RiemannianOptimizer",
    "RiemannianSGD",
    "riemannian_sgd",
    "RiemannianAdam",
    "RiemannianAdamW",
    "riemannian_adam",
    "filter_rates",
    "FILTER_RATES",
    "NonFiniteGradientError",
    "BoldDriver",
    "StepSizeScheduler",
    "StackedModules",
    "Stateful",
]
