"""The one Riemannian SGD step and the learning-rate rules, shared by
:class:`riemann_dnn.optim.RiemannianSGD` (torch) and
:class:`riemann_dnn.solvers.StochasticGradient` (pymanopt); the Riemannian Adam step
(:mod:`riemann_dnn.step.adam`)."""

from .adam import (
    AdamHyperparameters,
    AdamState,
    check_adam_hyperparameters,
    riemannian_adam_step,
    second_moment_axes,
    sphere_adam_step_,
)
from .fused import sphere_sgd_step_, unit_norm_axis
from .sgd import SGDHyperparameters, check_sgd_hyperparameters, riemannian_sgd_step
from .step_size import (
    DecayStepSize,
    FixedStepSize,
    HybridStepSize,
    StepSizeRule,
    make_step_size,
)

__all__ = [
    "SGDHyperparameters",
    "check_sgd_hyperparameters",
    "riemannian_sgd_step",
    "sphere_sgd_step_",
    "unit_norm_axis",
    "StepSizeRule",
    "FixedStepSize",
    "DecayStepSize",
    "HybridStepSize",
    "make_step_size",
    "AdamHyperparameters",
    "AdamState",
    "check_adam_hyperparameters",
    "riemannian_adam_step",
    "second_moment_axes",
    "sphere_adam_step_",
]
