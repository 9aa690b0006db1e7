"""FiniteSumProblem: batches, batch costs and gradients (torch and numpy), full problem, errors."""

from __future__ import annotations

import autograd.numpy as anp
import numpy as np
import pymanopt
import pytest
import torch

from riemann_dnn.manifolds import Euclidean, Oblique, Product, Stiefel
from riemann_dnn.problems import FiniteSumProblem

N, n, p = 60, 5, 2


def _pca_data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, n)) * np.array([3.0, 2.0, 1.0, 0.5, 0.3])


def _pca_cost_torch(U, batch):
    return -(batch @ U).square().sum() / batch.shape[0]


def _pca_cost_numpy(U, batch):
    return -anp.sum(anp.dot(batch, U) ** 2) / batch.shape[0]


def _pca_problem(backend: str, **kwargs) -> FiniteSumProblem:
    X = _pca_data()
    if backend == "torch":
        return FiniteSumProblem(Stiefel(n, p), _pca_cost_torch, torch.from_numpy(X), **kwargs)
    return FiniteSumProblem(Stiefel(n, p), _pca_cost_numpy, X, backend="numpy", **kwargs)


def _ls_cost_torch(W, b, batch):
    x, y = batch
    return (x @ W.T + b - y).square().sum() / x.shape[0]


def _ls_cost_numpy(W, b, batch):
    x, y = batch
    return anp.sum((anp.dot(x, W.T) + b - y) ** 2) / x.shape[0]


def _ls_data(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 4))
    y = rng.standard_normal((N, 3))
    return x, y


def _as_numpy(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


# -- batches ----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_batch_selects_rows_with_the_structure_of_data(backend):
    x, y = _ls_data()
    data = (torch.from_numpy(x), torch.from_numpy(y)) if backend == "torch" else (x, y)
    problem = FiniteSumProblem(
        Product([Oblique(3, 4, unit="rows"), Euclidean(3)]),
        _ls_cost_torch if backend == "torch" else _ls_cost_numpy,
        data,
        backend=backend,
    )
    assert problem.num_samples == N
    idx = [3, 0, 59, 3]
    bx, by = problem.batch(idx)
    kind = torch.Tensor if backend == "torch" else np.ndarray
    assert isinstance(bx, kind) and isinstance(by, kind)
    np.testing.assert_array_equal(_as_numpy(bx), x[idx])
    np.testing.assert_array_equal(_as_numpy(by), y[idx])
    assert isinstance(problem.batch(None), tuple) and len(problem.batch(None)) == 2
    single = _pca_problem(backend)
    assert isinstance(single.batch([1, 2]), kind)
    np.testing.assert_array_equal(_as_numpy(single.batch(np.array([1, 2]))), _pca_data()[[1, 2]])


# -- costs and gradients against closed forms -------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_cost_and_gradient_on_a_batch_match_the_closed_form(backend):
    problem = _pca_problem(backend)
    X = _pca_data()
    U = problem.manifold.random_point(generator=3)
    point = torch.from_numpy(U) if backend == "torch" else U
    idx = np.array([4, 9, 17, 33, 41])
    B = X[idx]
    expected_cost = -np.sum((B @ U) ** 2) / len(idx)
    expected_grad = -2 * B.T @ B @ U / len(idx)
    cost = problem.cost_on(point, idx)
    grad = problem.euclidean_gradient_on(point, idx)
    assert isinstance(cost, float)
    assert abs(cost - expected_cost) < 1e-12, (cost, expected_cost)
    assert type(grad) is type(point)
    err = np.abs(_as_numpy(grad) - expected_grad).max()
    assert err < 1e-12, f"gradient error {err:.3e}"
    full = problem.cost_on(point)
    assert abs(full - (-np.sum((X @ U) ** 2) / N)) < 1e-12
    both_cost, both_grad = problem.cost_and_euclidean_gradient_on(point, idx)
    assert abs(both_cost - expected_cost) < 1e-12
    assert np.abs(_as_numpy(both_grad) - expected_grad).max() < 1e-12


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_product_gradient_is_a_list_per_factor(backend):
    x, y = _ls_data()
    manifold = Product([Oblique(3, 4, unit="rows"), Euclidean(3)])
    data = (torch.from_numpy(x), torch.from_numpy(y)) if backend == "torch" else (x, y)
    cost = _ls_cost_torch if backend == "torch" else _ls_cost_numpy
    problem = FiniteSumProblem(manifold, cost, data, backend=backend)
    W, b = manifold.random_point(generator=5)
    point = [torch.from_numpy(W), torch.from_numpy(b)] if backend == "torch" else [W, b]
    idx = np.arange(0, N, 3)
    gW, gb = problem.euclidean_gradient_on(point, idx)
    r = x[idx] @ W.T + b - y[idx]
    assert np.abs(_as_numpy(gW) - 2 * r.T @ x[idx] / len(idx)).max() < 1e-12
    assert np.abs(_as_numpy(gb) - 2 * r.sum(0) / len(idx)).max() < 1e-12
    assert abs(problem.cost_on(point, idx) - np.sum(r**2) / len(idx)) < 1e-12


def test_torch_gradient_keeps_dtype_and_numpy_points_come_back_as_numpy():
    X32 = torch.from_numpy(_pca_data()).float()
    problem = FiniteSumProblem(Stiefel(n, p), _pca_cost_torch, X32)
    U = problem.random_point(generator=0)
    assert isinstance(U, torch.Tensor) and U.dtype == torch.float32
    grad = problem.euclidean_gradient_on(U, [1, 2, 3])
    assert grad.dtype == torch.float32 and grad.device == X32.device
    assert not U.requires_grad and not grad.requires_grad
    problem64 = _pca_problem("torch")
    U_np = Stiefel(n, p).random_point(generator=1)
    grad_np = problem64.euclidean_gradient_on(U_np, [1, 2, 3])
    assert isinstance(grad_np, np.ndarray)
    grad_t = problem64.euclidean_gradient_on(torch.from_numpy(U_np), [1, 2, 3])
    np.testing.assert_allclose(grad_np, grad_t.numpy(), rtol=0, atol=1e-14)


def test_gradients_work_inside_no_grad():
    problem = _pca_problem("torch")
    U = problem.random_point(generator=0)
    with torch.no_grad():
        grad = problem.euclidean_gradient_on(U, [0, 1])
    B = _pca_data()[[0, 1]]
    assert np.abs(grad.numpy() - (-B.T @ B @ U.numpy())).max() < 1e-12


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_user_gradient_replaces_autodiff(backend):
    calls = []
    X = _pca_data()

    def grad(U, batch):
        calls.append(batch.shape[0])
        return -2 * batch.T @ (batch @ U) / batch.shape[0]

    data = torch.from_numpy(X) if backend == "torch" else X
    cost = _pca_cost_torch if backend == "torch" else _pca_cost_numpy
    problem = FiniteSumProblem(Stiefel(n, p), cost, data, backend=backend, euclidean_gradient=grad)
    U = problem.random_point(generator=2)
    c, g = problem.cost_and_euclidean_gradient_on(U, [5, 6, 7])
    assert calls == [3]
    B = X[[5, 6, 7]]
    assert np.abs(_as_numpy(g) - (-2 * B.T @ B @ _as_numpy(U) / 3)).max() < 1e-12
    assert abs(c - (-np.sum((B @ _as_numpy(U)) ** 2) / 3)) < 1e-12


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_chunked_evaluation_equals_one_pass(backend):
    whole = _pca_problem(backend)
    chunked = _pca_problem(backend, eval_batch_size=7)
    U = whole.random_point(generator=4)
    idx = np.arange(1, N, 2)  # 30 samples -> chunks 7,7,7,7,2
    for indices in (None, idx):
        c1, g1 = whole.cost_and_euclidean_gradient_on(U, indices)
        c2, g2 = chunked.cost_and_euclidean_gradient_on(U, indices)
        assert abs(c1 - c2) < 1e-12, (c1, c2)
        assert np.abs(_as_numpy(g1) - _as_numpy(g2)).max() < 1e-12
        assert abs(whole.cost_on(U, indices) - chunked.cost_on(U, indices)) < 1e-12


# -- the full sum as a pymanopt problem -------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_full_problem_is_solved_by_trust_regions(backend):
    problem = _pca_problem(backend)
    X = _pca_data()
    _, V = np.linalg.eigh(X.T @ X / N)
    top = V[:, ::-1][:, :p]
    x0 = problem.random_point(generator=0)
    result = pymanopt.optimizers.TrustRegions(verbosity=0).run(
        problem.full_problem(), initial_point=x0
    )
    U = _as_numpy(result.point)
    sines = np.linalg.norm(U - top @ (top.T @ U), 2)
    assert sines < 1e-6, f"sin of the largest principal angle {sines:.2e}"
    assert abs(result.cost - problem.cost_on(result.point)) < 1e-10


def test_full_problem_with_user_gradient_is_solved_by_steepest_descent():
    X = _pca_data()

    def grad(U, batch):
        return -2 * batch.T @ (batch @ U) / batch.shape[0]

    problem = FiniteSumProblem(
        Stiefel(n, p), _pca_cost_numpy, X, backend="numpy", euclidean_gradient=grad
    )
    full = problem.full_problem()
    U = problem.random_point(generator=1)
    np.testing.assert_allclose(full.euclidean_gradient(U), grad(U, X), atol=1e-12)
    result = pymanopt.optimizers.SteepestDescent(verbosity=0, max_iterations=500).run(
        full, initial_point=U
    )
    _, V = np.linalg.eigh(X.T @ X / N)
    top = V[:, ::-1][:, :p]
    sines = np.linalg.norm(result.point - top @ (top.T @ result.point), 2)
    assert sines < 1e-4, f"sin of the largest principal angle {sines:.2e}"


# -- errors -----------------------------------------------------------------------------------
def test_mismatched_sample_axes_raise():
    with pytest.raises(ValueError, match=r"first \(sample\) axis.*\[60, 59\]"):
        FiniteSumProblem(
            Euclidean(2), _pca_cost_numpy, (np.zeros((60, 2)), np.zeros((59,))), backend="numpy"
        )


@pytest.mark.parametrize("data", [(), np.zeros((0, 3)), np.float64(1.0)])
def test_empty_or_scalar_data_raise(data):
    with pytest.raises(ValueError, match="data"):
        FiniteSumProblem(Euclidean(3), _pca_cost_numpy, data, backend="numpy")


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_non_scalar_cost_raises(backend):
    X = _pca_data()
    if backend == "torch":
        problem = FiniteSumProblem(Stiefel(n, p), lambda U, b: b @ U, torch.from_numpy(X))
    else:
        problem = FiniteSumProblem(Stiefel(n, p), lambda U, b: anp.dot(b, U), X, backend="numpy")
    U = problem.random_point(generator=0)
    with pytest.raises(ValueError, match=r"scalar.*shape \(3, 2\)"):
        problem.euclidean_gradient_on(U, [0, 1, 2])
    with pytest.raises(ValueError, match="scalar"):
        problem.cost_on(U, [0, 1, 2])


def test_other_bad_inputs_raise_clear_errors():
    X = _pca_data()
    with pytest.raises(ValueError, match="backend.*'jax'"):
        FiniteSumProblem(Stiefel(n, p), _pca_cost_torch, X, backend="jax")
    with pytest.raises(TypeError, match="backend='numpy'"):
        FiniteSumProblem(Stiefel(n, p), _pca_cost_numpy, torch.from_numpy(X), backend="numpy")
    with pytest.raises(ValueError, match="eval_batch_size"):
        FiniteSumProblem(Stiefel(n, p), _pca_cost_numpy, X, backend="numpy", eval_batch_size=0)
    problem = _pca_problem("torch")
    with pytest.raises(IndexError, match=r"\[0, 60\)"):
        problem.batch([0, 60])
    with pytest.raises(ValueError, match="empty"):
        problem.cost_on(problem.random_point(), [])
    ls = FiniteSumProblem(
        Product([Oblique(3, 4, unit="rows"), Euclidean(3)]),
        _ls_cost_numpy,
        _ls_data(),
        backend="numpy",
    )
    with pytest.raises(ValueError, match="list of 2 arrays"):
        ls.cost_on(np.zeros((3, 4)))
