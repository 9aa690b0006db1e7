"""The torch side: :class:`RiemannianSGD`, a ``torch.optim.Optimizer``, the model helper
that assigns manifolds to parameters, learning-rate schedules (bold driver, per copy too) and stacked copies of a model."""

from .geometry import MANIFOLD_NAMES, Geometry, resolve_geometry
from .groups import param_groups, scale_invariant_weights, verify_scale_invariance
from .rsgd import FILTER_RATES, NonFiniteGradientError, RiemannianSGD, filter_rates, riemannian_sgd
from .schedulers import BoldDriver, Stateful, StepSizeScheduler
from .stacked import StackedModules

__all__ = [
    "RiemannianSGD",
    "riemannian_sgd",
    "filter_rates",
    "FILTER_RATES",
    "NonFiniteGradientError",
    "param_groups",
    "scale_invariant_weights",
    "verify_scale_invariance",
    "BoldDriver",
    "StepSizeScheduler",
    "StackedModules",
    "Stateful",
    "Geometry",
    "MANIFOLD_NAMES",
    "resolve_geometry",
]
