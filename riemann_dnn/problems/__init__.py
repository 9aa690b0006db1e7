"""Problem definitions for the pymanopt side: finite sums, any ``nn.Module`` as one, and
classic problems with closed-form optima.

- :class:`FiniteSumProblem` -- a cost given on batches of data (torch tensors on their device,
  or numpy arrays), with batch gradients by autodiff and a ``full_problem()`` for pymanopt's
  deterministic solvers; ``optimal_cost`` when the minimum is known.
- :class:`ModuleProblem` -- a ``torch.nn.Module``, a loss and a data set as a
  :class:`FiniteSumProblem` on the product manifold of its parameters (manifolds from
  :func:`riemann_dnn.params.param_groups`).
- :func:`pca_problem` (with :func:`pca_data`, :func:`pca_spectrum`, :func:`pca_solution`) --
  PCA on the Grassmann manifold, optimum in closed form; :func:`matrix_completion_problem`
  (with :func:`matrix_completion_data`, :func:`matrix_completion_rmse`) -- low-rank matrix
  completion on the Grassmann manifold: the finite sums of the variance-reduced solvers'
  papers.
- :func:`dominant_eigenvector`, :func:`dominant_subspace`, :func:`closest_unit_rows` --
  ``pymanopt.Problem`` builders, each with a ``*_solution`` companion (tests, demos).

The solvers are in :mod:`riemann_dnn.solvers`.
"""

from .classic import (
    closest_unit_rows,
    closest_unit_rows_solution,
    dominant_eigenvector,
    dominant_eigenvector_solution,
    dominant_subspace,
    dominant_subspace_solution,
)
from .finite_sum import FiniteSumProblem
from .matrix_completion import (
    MatrixCompletionData,
    matrix_completion_data,
    matrix_completion_problem,
    matrix_completion_rmse,
)
from .module_problem import ModuleProblem
from .pca import pca_data, pca_problem, pca_solution, pca_spectrum

__all__ = [
    "FiniteSumProblem",
    "ModuleProblem",
    "pca_data",
    "pca_spectrum",
    "pca_problem",
    "pca_solution",
    "MatrixCompletionData",
    "matrix_completion_data",
    "matrix_completion_problem",
    "matrix_completion_rmse",
    "dominant_eigenvector",
    "dominant_eigenvector_solution",
    "dominant_subspace",
    "dominant_subspace_solution",
    "closest_unit_rows",
    "closest_unit_rows_solution",
]
