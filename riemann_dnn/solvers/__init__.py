"""pymanopt-side solvers and the problems they solve: finite sums, any ``nn.Module`` as one,
Riemannian stochastic gradient descent, and classic problems with closed-form optima.

- :class:`FiniteSumProblem` -- a cost given on batches of data (torch tensors on their device,
  or numpy arrays), with batch gradients by autodiff and a ``full_problem()`` for pymanopt's
  deterministic solvers.
- :class:`ModuleProblem` -- a ``torch.nn.Module``, a loss and a data set as a
  :class:`FiniteSumProblem` on the product manifold of its parameters (manifolds from
  :func:`riemann_dnn.params.param_groups`).
- :class:`StochasticGradient` -- a pymanopt ``Optimizer`` (Manopt's ``stochasticgradient``)
  that makes the one shared Riemannian step of :mod:`riemann_dnn.step` on minibatches.
- :func:`dominant_eigenvector`, :func:`dominant_subspace`, :func:`closest_unit_rows` --
  ``pymanopt.Problem`` builders, each with a ``*_solution`` companion (tests, demos).
"""

from .classic import (
    closest_unit_rows,
    closest_unit_rows_solution,
    dominant_eigenvector,
    dominant_eigenvector_solution,
    dominant_subspace,
    dominant_subspace_solution,
)
from .module_problem import ModuleProblem
from .problem import FiniteSumProblem
from .stochastic_gradient import StochasticGradient

__all__ = [
    "FiniteSumProblem",
    "ModuleProblem",
    "StochasticGradient",
    "dominant_eigenvector",
    "dominant_eigenvector_solution",
    "dominant_subspace",
    "dominant_subspace_solution",
    "closest_unit_rows",
    "closest_unit_rows_solution",
]
