"""The pymanopt side: stochastic solvers for finite sums (the problems are in
:mod:`riemann_dnn.problems`).

- :class:`StochasticGradient` -- Riemannian SGD (Manopt's ``stochasticgradient``), making the
  one shared Riemannian step of :mod:`riemann_dnn.step` on minibatches.
- :class:`RiemannianSVRG` -- stochastic variance-reduced gradient (Zhang, Reddi & Sra 2016;
  Sato, Kasai & Mishra 2019, with retraction and vector transport).
- :class:`RiemannianSRG` -- stochastic recursive gradient (Kasai, Sato & Mishra 2018).
- :class:`FiniteSumSolver` -- their shared base: options, sampling, the retraction and the
  vector transport by name, statistics, stopping criteria, log and checkpoints;
  :class:`VarianceReducedSolver` -- what R-SVRG and R-SRG share (epochs from a full gradient).
"""

from .base import FiniteSumSolver
from .stochastic_gradient import StochasticGradient
from .variance_reduced import RiemannianSRG, RiemannianSVRG, VarianceReducedSolver

__all__ = [
    "StochasticGradient",
    "RiemannianSVRG",
    "RiemannianSRG",
    "FiniteSumSolver",
    "VarianceReducedSolver",
]
