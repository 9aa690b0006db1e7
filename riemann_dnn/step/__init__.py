"""The one Riemannian SGD step and the learning-rate rules, shared by
:class:`riemann_dnn.optim.RiemannianSGD` (torch) and
:class:`riemann_dnn.solvers.StochasticGradient` (pymanopt)."""

from .sgd import SGDHyperparameters, riemannian_sgd_step
from .step_size import (
    BoldDriverRule,
    DecayStepSize,
    FixedStepSize,
    HybridStepSize,
    StepSizeRule,
    make_step_size,
)

__all__ = [
    "SGDHyperparameters",
    "riemannian_sgd_step",
    "StepSizeRule",
    "FixedStepSize",
    "DecayStepSize",
    "HybridStepSize",
    "make_step_size",
    "BoldDriverRule",
]
