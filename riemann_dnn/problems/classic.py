r"""Classic pymanopt problems whose optima have closed forms (for tests, demos, benchmarks).

Each builder returns a :class:`pymanopt.Problem` on riemann_dnn's manifolds with the cost
written for one autodiff backend, and has a ``*_solution`` companion that gives the optimum
in closed form (numpy float64):

- ``dominant_eigenvector(A)``: :math:`\min -x^TAx` on ``Sphere(n)``; optimum the top
  eigenvector of ``A``.
- ``dominant_subspace(A, p)``: :math:`\min -\operatorname{tr}(X^TAX)` on ``Stiefel(n, p)``
  or ``Grassmann(n, p)``; optimum the top-``p`` eigenvectors (PCA when ``A`` is a covariance).
- ``closest_unit_rows(M)``: :math:`\min \tfrac12\|X - M\|_F^2` on
  ``Oblique(m, n, unit="rows")``; optimum ``M`` with its rows normalised.

``backend="torch"`` uses :func:`riemann_dnn.function.torch` (points may be numpy arrays or
torch tensors on any device/dtype; the data follow the point's device and dtype, converted
once and cached); ``backend="autograd"`` uses :func:`pymanopt.function.autograd` (numpy
points). Data may be given as numpy arrays or torch tensors either way.

Example::

    import numpy as np, pymanopt, torch
    from riemann_dnn.problems import dominant_eigenvector, dominant_eigenvector_solution

    A = np.cov(np.random.default_rng(0).standard_normal((5, 50)))
    problem = dominant_eigenvector(A, backend="torch")
    x0 = problem.manifold.random_point(dtype=torch.float64, generator=0)
    x = pymanopt.optimizers.TrustRegions(verbosity=0).run(problem, initial_point=x0).point
    v = dominant_eigenvector_solution(A)  # x = +-v
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pymanopt
import torch

from .. import function as _function
from ..manifolds import Grassmann, Oblique, Sphere, Stiefel

__all__ = [
    "dominant_eigenvector",
    "dominant_eigenvector_solution",
    "dominant_subspace",
    "dominant_subspace_solution",
    "closest_unit_rows",
    "closest_unit_rows_solution",
]

Backend = Literal["torch", "autograd"]
ArrayLike = Any  # numpy.ndarray | torch.Tensor


# -- data and backends ------------------------------------------------------------------------
def _to_numpy(data: ArrayLike, name: str) -> np.ndarray:
    """``data`` as a float64 numpy matrix (torch tensors are copied to the host once)."""
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    array = np.asarray(data)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"{name}: expected a real 2-D matrix (numpy array or torch tensor), got "
            f"{array.dtype} of shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: the matrix contains NaN or inf entries")
    return array.astype(np.float64, copy=False)


def _symmetric(A: ArrayLike, name: str) -> np.ndarray:
    array = _to_numpy(A, name)
    if array.shape[0] != array.shape[1]:
        raise ValueError(f"{name}: A must be square, got shape {array.shape}")
    asymmetry = float(np.max(np.abs(array - array.T), initial=0.0))
    if asymmetry > 1e-10 * max(1.0, float(np.max(np.abs(array), initial=0.0))):
        raise ValueError(
            f"{name}: A must be symmetric, got max|A - A^T| = {asymmetry:.3g}; pass (A + A.T) / 2"
        )
    return array


class _TorchData:
    """A torch copy of the data, cast to each point's device and dtype once and cached."""

    def __init__(self, data: ArrayLike):
        self._base = (
            data.detach().clone()
            if isinstance(data, torch.Tensor)
            else torch.as_tensor(np.array(data, dtype=np.float64))
        )
        self._cache: dict[tuple, torch.Tensor] = {}

    def like(self, point: torch.Tensor) -> torch.Tensor:
        key = (point.device, point.dtype)
        if key not in self._cache:
            self._cache[key] = self._base.to(device=point.device, dtype=point.dtype)
        return self._cache[key]


def _decorator(backend: str, manifold) -> Callable:
    if backend == "torch":
        return _function.torch(manifold)
    if backend == "autograd":
        return pymanopt.function.autograd(manifold)
    raise ValueError(f"backend must be 'torch' or 'autograd', got {backend!r}")


# -- dominant eigenvector ---------------------------------------------------------------------
def dominant_eigenvector(A: ArrayLike, *, backend: Backend = "torch") -> pymanopt.Problem:
    r"""The Rayleigh-quotient problem :math:`\min_{\|x\| = 1} -x^TAx` on ``Sphere(n)``.

    Its minimisers are :math:`\pm v_1`, the eigenvector of the largest eigenvalue
    :math:`\lambda_1` of the symmetric ``A``; the optimal cost is :math:`-\lambda_1`.
    """
    array = _symmetric(A, "dominant_eigenvector")
    manifold = Sphere(array.shape[0])
    if backend == "torch":
        data = _TorchData(A if isinstance(A, torch.Tensor) else array)

        @_decorator(backend, manifold)
        def cost(x):
            return -(x @ (data.like(x) @ x))
    else:

        @_decorator(backend, manifold)
        def cost(x):
            return -(x @ (array @ x))

    return pymanopt.Problem(manifold, cost)


def dominant_eigenvector_solution(A: ArrayLike) -> np.ndarray:
    """The unit eigenvector of the largest eigenvalue of ``A`` (``numpy.linalg.eigh``; the
    sign is arbitrary)."""
    return np.linalg.eigh(_symmetric(A, "dominant_eigenvector_solution"))[1][:, -1]


# -- dominant subspace (PCA) ------------------------------------------------------------------
def dominant_subspace(
    A: ArrayLike,
    p: int,
    *,
    manifold: Literal["stiefel", "grassmann"] = "stiefel",
    backend: Backend = "torch",
) -> pymanopt.Problem:
    r"""The dominant invariant subspace :math:`\min_{X^TX = I_p} -\operatorname{tr}(X^TAX)`
    on ``Stiefel(n, p)`` or ``Grassmann(n, p)``.

    The minimisers span the eigenvectors of the ``p`` largest eigenvalues of the symmetric
    ``A`` (any orthonormal basis of that span); the optimal cost is :math:`-\sum_{i\le p}
    \lambda_i`. With ``A`` a covariance matrix this is PCA.
    """
    array = _symmetric(A, "dominant_subspace")
    n = array.shape[0]
    if not 1 <= int(p) <= n:
        raise ValueError(f"dominant_subspace: need 1 <= p <= n = {n}, got p={p}")
    factories = {"stiefel": Stiefel, "grassmann": Grassmann}
    if manifold not in factories:
        raise ValueError(
            f"dominant_subspace: manifold must be 'stiefel' or 'grassmann', got {manifold!r}"
        )
    space = factories[manifold](n, int(p))
    if backend == "torch":
        data = _TorchData(A if isinstance(A, torch.Tensor) else array)

        @_decorator(backend, space)
        def cost(X):
            return -torch.sum(X * (data.like(X) @ X))
    else:
        import autograd.numpy as anp

        @_decorator(backend, space)
        def cost(X):
            return -anp.sum(X * (array @ X))

    return pymanopt.Problem(space, cost)


def dominant_subspace_solution(A: ArrayLike, p: int) -> np.ndarray:
    """The ``(n, p)`` orthonormal eigenvectors of the ``p`` largest eigenvalues of ``A``
    (``numpy.linalg.eigh``), largest first. Compare subspaces, not bases: e.g. the
    projectors :math:`XX^T`."""
    array = _symmetric(A, "dominant_subspace_solution")
    if not 1 <= int(p) <= array.shape[0]:
        raise ValueError(
            f"dominant_subspace_solution: need 1 <= p <= n = {array.shape[0]}, got p={p}"
        )
    return np.linalg.eigh(array)[1][:, ::-1][:, : int(p)]


# -- closest matrix with unit rows ------------------------------------------------------------
def closest_unit_rows(M: ArrayLike, *, backend: Backend = "torch") -> pymanopt.Problem:
    r""":math:`\min_X \tfrac12\|X - M\|_F^2` over ``Oblique(m, n, unit="rows")`` (every row
    of :math:`X` unit-norm).

    The problem separates by rows: the optimum is :math:`x_i = m_i/\|m_i\|` (``M`` must have
    no zero row), with cost :math:`\tfrac12\sum_i(\|m_i\| - 1)^2`.
    """
    array = _to_numpy(M, "closest_unit_rows")
    manifold = Oblique(*array.shape, unit="rows")
    if backend == "torch":
        data = _TorchData(M if isinstance(M, torch.Tensor) else array)

        @_decorator(backend, manifold)
        def cost(X):
            return 0.5 * torch.sum((X - data.like(X)) ** 2)
    else:
        import autograd.numpy as anp

        @_decorator(backend, manifold)
        def cost(X):
            return 0.5 * anp.sum((X - array) ** 2)

    return pymanopt.Problem(manifold, cost)


def closest_unit_rows_solution(M: ArrayLike) -> np.ndarray:
    """``M`` with each row divided by its norm (raises ``ValueError`` on a zero row)."""
    array = _to_numpy(M, "closest_unit_rows_solution")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(
            f"closest_unit_rows_solution: M has zero rows {np.flatnonzero(norms[:, 0] == 0)}; "
            "their closest unit vector is not unique"
        )
    return array / norms
