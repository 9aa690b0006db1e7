"""pymanopt-side solvers: finite-sum problems and Riemannian stochastic gradient descent.

- :class:`FiniteSumProblem` -- a cost given on batches of data (torch tensors on their device,
  or numpy arrays), with batch gradients by autodiff and a ``full_problem()`` for pymanopt's
  deterministic solvers.
- :class:`StochasticGradient` -- a pymanopt ``Optimizer`` (Manopt's ``stochasticgradient``)
  that makes the one shared Riemannian step of :mod:`riemann_dnn.step` on minibatches.
"""

from .problem import FiniteSumProblem
from .stochastic_gradient import StochasticGradient

__all__ = ["FiniteSumProblem", "StochasticGradient"]
