"""Classic problems solved by pymanopt's optimizers against their closed-form optima.

Every problem x backend (riemann_dnn's torch backend on torch float64 points, pymanopt's
autograd backend on numpy points) x optimizer (SteepestDescent, ConjugateGradient,
TrustRegions) must reach the optimum given by ``numpy.linalg.eigh`` / row normalisation. Then
pymanopt's own numpy, autograd and pytorch backends on numpy points with our manifolds.
"""

from __future__ import annotations

import numpy as np
import pymanopt
import pytest
import torch
from pymanopt.optimizers import ConjugateGradient, SteepestDescent, TrustRegions

from riemann_dnn.manifolds import Grassmann, Oblique, Product, Sphere, Stiefel
from riemann_dnn.problems import (
    closest_unit_rows,
    closest_unit_rows_solution,
    dominant_eigenvector,
    dominant_eigenvector_solution,
    dominant_subspace,
    dominant_subspace_solution,
)

N, P, M_ROWS = 12, 3, 8
COST_RTOL = 1e-6  # |f(x) - f*| <= COST_RTOL * |f*|
POINT_TOL = 1e-5  # point / projector distance to the closed form
OPTIMIZERS = {
    "SteepestDescent": lambda: SteepestDescent(verbosity=0, max_iterations=2000),
    "ConjugateGradient": lambda: ConjugateGradient(verbosity=0, max_iterations=2000),
    "TrustRegions": lambda: TrustRegions(verbosity=0, max_iterations=200),
}


def _spectrum_matrix(seed: int, n: int = N) -> np.ndarray:
    """Symmetric A = Q diag(lambda) Q^T with eigenvalues 1, 2, ..., n (unit gaps)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.arange(1.0, n + 1)) @ q.T


def _rows_matrix(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((M_ROWS, N)) * rng.uniform(0.5, 3.0, size=(M_ROWS, 1))


def _eigen_case(backend):
    A = _spectrum_matrix(1)
    v = dominant_eigenvector_solution(A)
    f_star = -np.linalg.eigvalsh(A)[-1]

    def point_error(x):  # sign-invariant
        return min(np.linalg.norm(x - v), np.linalg.norm(x + v))

    return dominant_eigenvector(A, backend=backend), f_star, point_error


def _subspace_case(manifold):
    def build(backend):
        A = _spectrum_matrix(2)
        V = dominant_subspace_solution(A, P)
        f_star = -np.sum(np.linalg.eigvalsh(A)[-P:])

        def point_error(X):  # distance of the projectors onto the two subspaces
            return np.linalg.norm(X @ X.T - V @ V.T)

        return dominant_subspace(A, P, manifold=manifold, backend=backend), f_star, point_error

    return build


def _rows_case(backend):
    M = _rows_matrix(3)
    X_star = closest_unit_rows_solution(M)
    f_star = 0.5 * np.sum((np.linalg.norm(M, axis=1) - 1) ** 2)
    return closest_unit_rows(M, backend=backend), f_star, lambda X: np.linalg.norm(X - X_star)


CASES = {
    "eigenvector-sphere": _eigen_case,
    "subspace-stiefel": _subspace_case("stiefel"),
    "subspace-grassmann": _subspace_case("grassmann"),
    "unit-rows-oblique": _rows_case,
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("backend", ["torch", "autograd"])
@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_reaches_closed_form_optimum(case, backend, optimizer):
    problem, f_star, point_error = CASES[case](backend)
    manifold = problem.manifold
    if backend == "torch":
        x0 = manifold.random_point(dtype=torch.float64, generator=7)
    else:
        x0 = manifold.random_point(generator=7)
    result = OPTIMIZERS[optimizer]().run(problem, initial_point=x0)
    x = result.point

    if backend == "torch":
        assert isinstance(x, torch.Tensor), f"point became {type(x).__name__}"
        assert x.dtype == x0.dtype and x.device == x0.device, (x.dtype, x.device)
        x = x.numpy()
    else:
        assert isinstance(x, np.ndarray), f"point became {type(x).__name__}"
    cost_error = abs(result.cost - f_star) / abs(f_star)
    assert cost_error <= COST_RTOL, (
        f"{case}/{backend}/{optimizer}: cost {result.cost!r} vs optimum {f_star!r} "
        f"(relative error {cost_error:.2e}; {result.stopping_criterion})"
    )
    error = point_error(x)
    assert error <= POINT_TOL, (
        f"{case}/{backend}/{optimizer}: distance to the closed form {error:.2e} > {POINT_TOL}"
        f" ({result.stopping_criterion})"
    )
    assert manifold.constraint_violation(x) < 1e-10


def test_builders_accept_torch_data_and_agree_with_numpy_data():
    A = _spectrum_matrix(4)
    x = Sphere(N).random_point(generator=0)
    from_numpy = dominant_eigenvector(A).cost(x)
    from_torch = dominant_eigenvector(torch.from_numpy(A).float()).cost(x)
    assert from_numpy == pytest.approx(-x @ A @ x, rel=1e-12)
    assert from_torch == pytest.approx(-x @ A @ x, rel=1e-5)  # data were float32
    M = _rows_matrix(5)
    X = Oblique(M_ROWS, N, unit="rows").random_point(generator=1)
    expected = 0.5 * np.sum((X - M) ** 2)
    for backend in ("torch", "autograd"):
        assert closest_unit_rows(torch.from_numpy(M), backend=backend).cost(X) == (
            pytest.approx(expected, rel=1e-12)
        )


def test_torch_backend_follows_point_dtype():
    problem = dominant_subspace(_spectrum_matrix(6), P, manifold="grassmann")
    x32 = problem.manifold.random_point(dtype=torch.float32, generator=0)
    grad = problem.riemannian_gradient(x32)
    assert grad.dtype == torch.float32 and isinstance(grad, torch.Tensor)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: dominant_eigenvector(np.ones((3, 4))), "square"),
        (lambda: dominant_eigenvector(np.triu(np.ones((3, 3)))), "symmetric"),
        (lambda: dominant_eigenvector(np.eye(3), backend="jax"), "backend"),
        (lambda: dominant_subspace(np.eye(3), 4), "p <= n"),
        (lambda: dominant_subspace(np.eye(3), 2, manifold="sphere"), "manifold"),
        (lambda: closest_unit_rows(np.ones(3)), "2-D"),
        (lambda: closest_unit_rows_solution(np.zeros((2, 3))), "zero rows"),
    ],
)
def test_bad_input_names_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- pymanopt's own backends with our manifolds on numpy points ------------------------------
def test_pymanopt_numpy_backend_with_handwritten_derivatives_on_stiefel():
    A = _spectrum_matrix(8)
    manifold = Stiefel(N, P)

    @pymanopt.function.numpy(manifold)
    def cost(X):
        return -np.trace(X.T @ A @ X)

    @pymanopt.function.numpy(manifold)
    def euclidean_gradient(X):
        return -2 * A @ X

    @pymanopt.function.numpy(manifold)
    def euclidean_hessian(X, U):
        return -2 * A @ U

    problem = pymanopt.Problem(
        manifold, cost, euclidean_gradient=euclidean_gradient, euclidean_hessian=euclidean_hessian
    )
    result = TrustRegions(verbosity=0).run(
        problem, initial_point=manifold.random_point(generator=0)
    )
    V = dominant_subspace_solution(A, P)
    f_star = -np.sum(np.linalg.eigvalsh(A)[-P:])
    assert isinstance(result.point, np.ndarray)
    assert abs(result.cost - f_star) <= COST_RTOL * abs(f_star), (result.cost, f_star)
    error = np.linalg.norm(result.point @ result.point.T - V @ V.T)
    assert error <= POINT_TOL, error


def test_pymanopt_autograd_backend_on_oblique_columns():
    import autograd.numpy as anp

    M = _rows_matrix(9).T  # unit columns: the transpose of the rows problem
    manifold = Oblique(N, M_ROWS)  # pymanopt's default convention, unit columns

    @pymanopt.function.autograd(manifold)
    def cost(X):
        return 0.5 * anp.sum((X - M) ** 2)

    result = ConjugateGradient(verbosity=0).run(
        pymanopt.Problem(manifold, cost), initial_point=manifold.random_point(generator=0)
    )
    expected = M / np.linalg.norm(M, axis=0, keepdims=True)
    error = np.linalg.norm(result.point - expected)
    assert isinstance(result.point, np.ndarray)
    assert error <= POINT_TOL, error


def test_pymanopt_pytorch_backend_on_sphere_and_grassmann_product():
    A = _spectrum_matrix(10)
    A_t = torch.from_numpy(A)
    manifold = Product([Sphere(N), Grassmann(N, P)])

    @pymanopt.function.pytorch(manifold)
    def cost(x, X):
        return -(x @ A_t @ x) - torch.sum(X * (A_t @ X))

    result = TrustRegions(verbosity=0).run(
        pymanopt.Problem(manifold, cost), initial_point=manifold.random_point(generator=0)
    )
    x, X = result.point
    assert isinstance(x, np.ndarray) and isinstance(X, np.ndarray)
    eigenvalues = np.linalg.eigvalsh(A)
    f_star = -eigenvalues[-1] - np.sum(eigenvalues[-P:])
    assert abs(result.cost - f_star) <= COST_RTOL * abs(f_star), (result.cost, f_star)
    v, V = dominant_eigenvector_solution(A), dominant_subspace_solution(A, P)
    assert min(np.linalg.norm(x - v), np.linalg.norm(x + v)) <= POINT_TOL
    assert np.linalg.norm(X @ X.T - V @ V.T) <= POINT_TOL
