"""The papers' problems: PCA on Grassmann (exact spectrum, closed-form optimum, gradient) and
low-rank matrix completion (known optimum 0, envelope gradient, test RMSE), on torch
tensors; pymanopt's deterministic solvers reach the closed forms through ``full_problem``."""

from __future__ import annotations

import numpy as np
import pymanopt
import pytest
import torch

from riemann_dnn.data import load_mnist
from riemann_dnn.problems import (
    MatrixCompletionData,
    matrix_completion_data,
    matrix_completion_problem,
    matrix_completion_rmse,
    pca_data,
    pca_problem,
    pca_solution,
    pca_spectrum,
)


def _sin_largest_angle(U, V):
    U, V = (torch.as_tensor(a, dtype=torch.float64) for a in (U, V))
    return float(torch.linalg.matrix_norm(U - V @ (V.T @ U), ord=2))


# -- PCA ----------------------------------------------------------------------------------------
def test_pca_data_has_exactly_the_requested_spectrum():
    X = pca_data(500, 12, 4, eigengap=0.3, seed=2)
    spectrum = pca_spectrum(12, 4, 0.3)
    measured = torch.linalg.eigvalsh(X.T @ X / 500).flip(0).numpy()
    assert np.abs(measured - spectrum).max() < 1e-12
    assert spectrum[3] == pytest.approx(0.8) and spectrum[4] == pytest.approx(0.7 * 0.8)
    assert torch.equal(X, pca_data(500, 12, 4, eigengap=0.3, seed=2))  # seeded
    assert not torch.equal(X, pca_data(500, 12, 4, eigengap=0.3, seed=3))


def test_pca_optimum_is_the_top_eigenspace_and_the_gradient_is_exact():
    X = pca_data(400, 8, 3, eigengap=0.5, seed=0)
    problem = pca_problem(X, 3)
    U = pca_solution(X, 3)
    assert problem.optimal_cost == pytest.approx(-pca_spectrum(8, 3, 0.5)[:3].sum(), abs=1e-12)
    assert abs(problem.cost_on(U) - problem.optimal_cost) < 1e-12
    for seed in range(3):
        assert problem.cost_on(problem.random_point(generator=seed)) > problem.optimal_cost + 0.01
    V = problem.random_point(generator=7)
    batch = [3, 5, 100]
    leaf = V.clone().requires_grad_(True)
    torch.autograd.backward(-(X[batch] @ leaf).square().sum() / 3)
    assert torch.allclose(problem.euclidean_gradient_on(V, batch), leaf.grad, atol=1e-13)


def test_trust_regions_solves_pca_from_its_own_random_start_on_the_data_device():
    X = pca_data(300, 10, 2, eigengap=0.5, seed=1)
    problem = pca_problem(X, 2)
    result = pymanopt.optimizers.TrustRegions(verbosity=0).run(problem.full_problem())
    assert isinstance(result.point, torch.Tensor) and result.point.dtype == torch.float64
    assert result.cost - problem.optimal_cost < 1e-10
    assert _sin_largest_angle(result.point, pca_solution(X, 2)) < 1e-6
    # the problem's own manifold object was not bound to the device (a copy was)
    assert isinstance(problem.manifold.random_point(), np.ndarray)


def test_pca_on_mnist_images():
    mnist = load_mnist(source="embedded")
    X = torch.as_tensor(np.array(mnist.train_images[:1000].reshape(1000, -1)), dtype=torch.float64)
    problem = pca_problem(X / 255.0, 5)
    U = pca_solution(X / 255.0, 5)
    assert problem.manifold.point_shape == (784, 5)
    assert abs(problem.cost_on(U) - problem.optimal_cost) < 1e-9 * abs(problem.optimal_cost)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: pca_data(10, 20, 3), "num_samples must be >= dim"),
        (lambda: pca_data(100, 5, 5), "rank must be < dim"),
        (lambda: pca_spectrum(10, 3, 1.5), r"eigengap must lie in \(0, 1\)"),
        (lambda: pca_problem(torch.zeros(5), 2), r"data must be a floating \(N, d\)"),
        (lambda: pca_problem(torch.zeros(50, 6), 0), "rank must be an int >= 1"),
    ],
)
def test_pca_refusals_name_the_argument(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# -- matrix completion --------------------------------------------------------------------------
def test_completion_data_observes_disjoint_entries_of_a_low_rank_matrix():
    data = matrix_completion_data(200, 30, 3, oversampling=3.0, test_entries=5, seed=0)
    assert isinstance(data, MatrixCompletionData) and data.rank == 3
    per_row = data.mask.sum(dim=1)
    assert bool((per_row == per_row[0]).all()) and int(per_row[0]) >= 4
    assert bool((data.test_mask.sum(dim=1) == 5).all())
    assert float((data.mask * data.test_mask).sum()) == 0.0
    # the observed entries of each row determine it: fitting the true subspace on the
    # training entries predicts the test entries exactly (rank 3, no noise)
    weights = torch.linalg.lstsq(
        data.subspace[None] * data.mask[..., None], (data.mask * data.values)[..., None]
    ).solution
    fitted = (data.subspace @ weights)[..., 0]
    assert float((data.test_mask * (fitted - data.test_values)).abs().max()) < 1e-10


def test_completion_optimum_is_zero_at_the_true_subspace_with_an_exact_gradient():
    data = matrix_completion_data(150, 20, 2, seed=1)
    problem = matrix_completion_problem(data)
    assert problem.optimal_cost == 0.0
    assert problem.cost_on(data.subspace) < 1e-25
    assert matrix_completion_rmse(data.subspace, data) < 1e-12
    U = problem.random_point(generator=0)
    assert problem.cost_on(U) > 1e-3 and matrix_completion_rmse(U, data) > 1e-2
    V = torch.randn(U.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    batch, h = [0, 4, 9], 1e-6
    slope = (problem.cost_on(U + h * V, batch) - problem.cost_on(U - h * V, batch)) / (2 * h)
    gradient = problem.euclidean_gradient_on(U, batch)
    assert abs(slope - float((gradient * V).sum())) < 1e-7 * max(1.0, abs(slope))
    noisy = matrix_completion_problem(matrix_completion_data(150, 20, 2, noise=0.1, seed=1))
    assert noisy.optimal_cost is None


def test_completion_refusals():
    with pytest.raises(ValueError, match="exceed dim"):
        matrix_completion_data(100, 10, 3, oversampling=10.0)
    with pytest.raises(TypeError, match="MatrixCompletionData"):
        matrix_completion_problem((torch.zeros(3, 3), torch.ones(3, 3)))
    data = matrix_completion_data(50, 40, 2, test_entries=5)
    with pytest.raises(ValueError, match="split must be 'test' or 'train'"):
        matrix_completion_rmse(data.subspace, data, split="validation")
