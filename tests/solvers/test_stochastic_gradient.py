"""StochasticGradient: closed-form optima (stochastic PCA, least squares on a product),
step-size rules, bold driver, sampling, reproducibility, stopping, the shared step, options."""

from __future__ import annotations

import math

import autograd.numpy as anp
import numpy as np
import pymanopt
import pytest
import torch

import riemann_dnn.solvers.stochastic_gradient as sg_module
from riemann_dnn.manifolds import Euclidean, Grassmann, Oblique, Product, Sphere, Stiefel
from riemann_dnn.problems import FiniteSumProblem
from riemann_dnn.solvers import StochasticGradient
from riemann_dnn.step import SGDHyperparameters, riemannian_sgd_step

# -- stochastic PCA with a planted top-p subspace ---------------------------------------------
N_PCA, n, p = 2000, 10, 3


def _pca_data() -> np.ndarray:
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    scales = np.array([3.0, 2.5, 2.0] + [0.7] * (n - p))
    return (rng.standard_normal((N_PCA, n)) * scales) @ Q.T


def _top_subspace(X: np.ndarray) -> np.ndarray:
    _, V = np.linalg.eigh(X.T @ X / X.shape[0])
    return V[:, ::-1][:, :p]


def _largest_principal_angle(U, V: np.ndarray) -> float:
    U = U.detach().cpu().numpy() if isinstance(U, torch.Tensor) else np.asarray(U)
    Qu, _ = np.linalg.qr(U)
    cosines = np.linalg.svd(V.T @ Qu, compute_uv=False)
    return float(np.arccos(np.clip(cosines.min(), -1.0, 1.0)))


def _pca_cost_torch(U, batch):
    return -(batch @ U).square().sum() / batch.shape[0]


def _pca_cost_numpy(U, batch):
    return -anp.sum(anp.dot(batch, U) ** 2) / batch.shape[0]


def _pca_problem(manifold, backend: str, X: np.ndarray | None = None) -> FiniteSumProblem:
    X = _pca_data() if X is None else X
    if backend == "torch":
        return FiniteSumProblem(manifold, _pca_cost_torch, torch.from_numpy(X))
    return FiniteSumProblem(manifold, _pca_cost_numpy, X, backend="numpy")


# -- noiseless least squares on Oblique(rows) x Euclidean --------------------------------------
N_LS, m, d = 400, 4, 6


def _ls_truth():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((m, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    b = rng.standard_normal(m)
    x = rng.standard_normal((N_LS, d))
    return W, b, x, x @ W.T + b


def _ls_cost_torch(W, b, batch):
    x, y = batch
    return (x @ W.T + b - y).square().sum() / x.shape[0]


def _ls_cost_numpy(W, b, batch):
    x, y = batch
    return anp.sum((anp.dot(x, W.T) + b - y) ** 2) / x.shape[0]


def _ls_problem(backend: str) -> FiniteSumProblem:
    _, _, x, y = _ls_truth()
    manifold = Product([Oblique(m, d, unit="rows"), Euclidean(m)])
    if backend == "torch":
        return FiniteSumProblem(
            manifold, _ls_cost_torch, (torch.from_numpy(x), torch.from_numpy(y))
        )
    return FiniteSumProblem(manifold, _ls_cost_numpy, (x, y), backend="numpy")


def _quiet(**kwargs) -> StochasticGradient:
    return StochasticGradient(verbosity=0, **kwargs)


def _np(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


# -- closed-form optima -----------------------------------------------------------------------
PCA_TOL = 1e-2  # rad; measured 3.8e-4 after 3000 decaying steps (all four cases)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize(
    "manifold", [Stiefel(n, p), Grassmann(n, p)], ids=["stiefel", "grassmann"]
)
def test_stochastic_pca_reaches_the_top_eigenvectors(manifold, backend):
    X = _pca_data()
    problem = _pca_problem(manifold, backend, X)
    solver = _quiet(
        batch_size=50,
        max_iterations=3000,
        step_size="decay",
        initial_step_size=0.05,
        step_size_decay=1.0,
        check_samples=None,
        seed=0,
    )
    result = solver.run(problem)
    angle = _largest_principal_angle(result.point, _top_subspace(X))
    assert angle < PCA_TOL, f"largest principal angle {angle:.3e} rad >= {PCA_TOL}"
    kind = torch.Tensor if backend == "torch" else np.ndarray
    assert isinstance(result.point, kind)
    optimum = -np.sum(np.linalg.eigvalsh(X.T @ X / N_PCA)[-p:])
    assert abs(result.cost - optimum) < 1e-5 * abs(optimum), (result.cost, optimum)
    assert result.stopping_criterion.startswith("Terminated - max iterations reached")


LS_TOL = 1e-10  # noiseless data: the optimum interpolates every sample; measured 1.8e-15


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_least_squares_on_a_product_reaches_the_ground_truth(backend):
    W_true, b_true, _, _ = _ls_truth()
    problem = _ls_problem(backend)
    solver = _quiet(
        batch_size=20, max_iterations=2000, step_size="fixed", initial_step_size=0.05, seed=0
    )
    result = solver.run(problem)
    W, b = map(_np, result.point)
    err = max(np.abs(W - W_true).max(), np.abs(b - b_true).max())
    assert err < LS_TOL, f"max error to the ground truth {err:.3e}"
    assert result.cost < 1e-20
    # pymanopt's TrustRegions on the full-sum problem agrees.
    x0 = problem.random_point(generator=1)
    tr = pymanopt.optimizers.TrustRegions(verbosity=0).run(
        problem.full_problem(), initial_point=x0
    )
    tr_err = max(np.abs(_np(tr.point[0]) - W).max(), np.abs(_np(tr.point[1]) - b).max())
    assert tr_err < 1e-6, f"TrustRegions vs StochasticGradient: {tr_err:.3e}"


# -- the step is the shared one ---------------------------------------------------------------
def test_one_full_batch_iteration_equals_the_shared_step():
    X = _pca_data()[:200]
    problem = _pca_problem(Stiefel(n, p), "torch", X)
    x0 = problem.random_point(generator=3)
    result = _quiet(
        batch_size=200, max_iterations=1, step_size="fixed", initial_step_size=0.01
    ).run(problem, initial_point=x0)
    egrad = problem.euclidean_gradient_on(x0)
    expected, _ = riemannian_sgd_step(
        problem.manifold, x0, egrad, None, SGDHyperparameters(lr=0.01)
    )
    err = (result.point - expected).abs().max().item()
    assert err < 1e-14, f"solver step vs riemannian_sgd_step: {err:.3e}"


def test_momentum_nesterov_weight_decay_iterations_equal_the_shared_step_on_a_product():
    problem = _ls_problem("numpy")
    manifold = problem.manifold
    x0 = manifold.random_point(generator=4)
    hp = SGDHyperparameters(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3)
    result = _quiet(
        batch_size=N_LS,
        max_iterations=3,
        step_size="fixed",
        initial_step_size=hp.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-3,
        seed=0,
    ).run(problem, initial_point=x0)
    point, buffers = list(x0), [None, None]
    for _ in range(3):
        egrad = problem.euclidean_gradient_on(point)
        for i, factor in enumerate(manifold.manifolds):
            point[i], buffers[i] = riemannian_sgd_step(factor, point[i], egrad[i], buffers[i], hp)
    # The solver's batch is a permutation of all samples: only the summation order differs.
    err = max(np.abs(a - b).max() for a, b in zip(result.point, point))
    assert err < 1e-12, f"solver vs 3 shared steps: {err:.3e}"


def test_solver_calls_the_shared_step_factor_wise(monkeypatch):
    calls = []

    def spy(manifold, point, egrad, buffer, hp):
        calls.append(type(manifold).__name__)
        return riemannian_sgd_step(manifold, point, egrad, buffer, hp)

    monkeypatch.setattr(sg_module, "riemannian_sgd_step", spy)
    _quiet(batch_size=40, max_iterations=5, seed=0).run(_ls_problem("torch"))
    assert calls == ["Oblique", "Euclidean"] * 5, calls


# -- step-size rules --------------------------------------------------------------------------
def _step_sizes(step_size, iterations=30, **kwargs):
    problem = _pca_problem(Sphere(n), "numpy", _pca_data()[:100])
    solver = _quiet(
        batch_size=10,
        max_iterations=iterations,
        step_size=step_size,
        log_verbosity=2,
        seed=0,
        **kwargs,
    )
    result = solver.run(problem)
    return np.array(result.log["step_sizes"]), result


def test_fixed_decay_hybrid_and_callable_rules_follow_their_formulas():
    k = np.arange(30)
    sizes, _ = _step_sizes("fixed", initial_step_size=0.2)
    np.testing.assert_array_equal(sizes, np.full(30, 0.2))
    sizes, _ = _step_sizes("decay", initial_step_size=0.2, step_size_decay=0.5)
    np.testing.assert_allclose(sizes, 0.2 / (1 + 0.2 * 0.5 * k), rtol=1e-15)
    sizes, _ = _step_sizes("hybrid", initial_step_size=0.2, step_size_decay=0.5, decay_steps=10)
    np.testing.assert_allclose(sizes, 0.2 / (1 + 0.2 * 0.5 * np.minimum(k, 10)), rtol=1e-15)
    sizes, _ = _step_sizes(lambda it: 0.1 * 0.9**it)
    np.testing.assert_allclose(sizes, 0.1 * 0.9**k, rtol=1e-15)
    from riemann_dnn.step import DecayStepSize

    sizes, _ = _step_sizes(DecayStepSize(0.3, 2.0))
    np.testing.assert_allclose(sizes, 0.3 / (1 + 0.6 * k), rtol=1e-15)


def test_bold_driver_is_constant_per_epoch_and_grows_after_a_falling_epoch():
    sizes, result = _step_sizes(
        "bold_driver", iterations=40, initial_step_size=0.01, check_samples=None
    )
    per_epoch = sizes.reshape(4, 10)  # 100 samples, batch 10: 10 iterations per epoch
    assert np.all(per_epoch == per_epoch[:, :1]), per_epoch
    epochs = result.log["epochs"]
    assert epochs["accepted"] == [True] * 4, epochs["cost"]
    np.testing.assert_allclose(per_epoch[:, 0], 0.01 * 1.05 ** np.arange(4), rtol=1e-14)
    assert epochs["step_size"][-1] == pytest.approx(0.01 * 1.05**4, rel=1e-14)


def test_bold_driver_restores_the_previous_point_after_a_cost_increase():
    problem = _ls_problem("torch")
    x0 = problem.random_point(generator=2)
    solver = _quiet(
        batch_size=100,
        max_epochs=1,
        max_iterations=None,
        step_size="bold_driver",
        initial_step_size=50.0,
        check_samples=None,
        log_verbosity=1,
        seed=0,
    )
    result = solver.run(problem, initial_point=x0)
    epochs = result.log["epochs"]
    first_cost = result.log["iterations"]["cost"][0]
    assert epochs["accepted"] == [False], (first_cost, epochs["cost"])
    assert epochs["cost"][0] > first_cost, "the huge step should have raised the cost"
    for got, start in zip(result.point, x0):
        assert torch.equal(got, start), "the rejected epoch was not undone"
    assert result.step_size == 25.0
    assert result.cost == pytest.approx(first_cost, rel=1e-15)
    # Given time, the halving rate recovers and the cost falls far below the start.
    longer = _quiet(
        batch_size=100,
        max_epochs=40,
        max_iterations=None,
        step_size="bold_driver",
        initial_step_size=50.0,
        check_samples=None,
        log_verbosity=1,
        seed=0,
    ).run(problem, initial_point=x0)
    accepted = longer.log["epochs"]["accepted"]
    assert accepted[:3] == [False] * 3 and any(accepted), accepted
    assert longer.cost < 1e-3 * first_cost, (longer.cost, first_cost)


def test_bold_driver_restores_the_momentum_too():
    """Epoch 1 accepted (small rate), epoch 2 rejected (rate x 1000), epoch 3 must restart from
    the point *and momentum* after epoch 1. Full batches make each epoch one known step."""
    problem = _ls_problem("numpy")
    manifold = problem.manifold
    x0 = manifold.random_point(generator=6)
    lr = 0.01
    result = _quiet(
        batch_size=N_LS,
        max_epochs=3,
        max_iterations=None,
        step_size="bold_driver",
        initial_step_size=lr,
        bold_driver_increase=1000.0,
        bold_driver_decrease=0.001,
        momentum=0.9,
        check_samples=None,
        log_verbosity=1,
        seed=0,
    ).run(problem, initial_point=x0)
    assert result.log["epochs"]["accepted"] == [True, False, True], result.log["epochs"]

    def step(point, buffers, rate):
        egrad = problem.euclidean_gradient_on(point)
        hp = SGDHyperparameters(lr=rate, momentum=0.9)
        out = [
            riemannian_sgd_step(f, x, g, b_, hp)
            for f, x, g, b_ in zip(manifold.manifolds, point, egrad, buffers)
        ]
        return [o[0] for o in out], [o[1] for o in out]

    x1, m1 = step(list(x0), [None, None], lr)
    x3, _ = step(x1, m1, lr * 1000 * 0.001)
    err = max(np.abs(a - b).max() for a, b in zip(result.point, x3))
    assert err < 1e-12, f"epoch 3 did not restart from epoch 1's point and momentum: {err:.3e}"


# -- sampling ---------------------------------------------------------------------------------
def _recording_problem(N: int):
    seen = []
    X = torch.randn(N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(N)

    def cost(x, batch):
        data, idx = batch
        if torch.is_grad_enabled() and idx.shape[0] != N:  # training batches, not checks
            seen.append(idx.tolist())
        return ((data @ x) ** 2).mean()

    return FiniteSumProblem(Sphere(3), cost, (X, ids)), seen


def test_sampling_without_replacement_visits_each_sample_once_per_epoch():
    N, batch = 103, 10  # 11 batches per epoch, the last one of 3 samples
    problem, seen = _recording_problem(N)
    result = _quiet(
        batch_size=batch,
        max_epochs=3,
        max_iterations=None,
        check_period=10**6,
        check_samples=None,
        seed=1,
    ).run(problem)
    assert result.iterations == 33 and len(seen) == 33
    assert result.stopping_criterion.startswith("Terminated - max epochs reached after 33")
    epochs = [sum(seen[e * 11 : (e + 1) * 11], []) for e in range(3)]
    for e, visited in enumerate(epochs):
        assert sorted(visited) == list(range(N)), f"epoch {e} visited {sorted(visited)}"
    assert [len(b) for b in seen[:11]] == [10] * 10 + [3]
    assert epochs[0] != epochs[1] != epochs[2], "epochs were not reshuffled"


def test_sampling_with_replacement_draws_full_batches_with_repeats():
    N = 50
    problem, seen = _recording_problem(N)
    _quiet(
        batch_size=10,
        max_epochs=20,
        max_iterations=None,
        check_period=10**6,
        check_samples=None,
        sampling="with_replacement",
        seed=1,
    ).run(problem)
    assert len(seen) == 100 and all(len(b) == 10 for b in seen)
    flat = sum(seen, [])
    epoch_sets = [sum(seen[e * 5 : (e + 1) * 5], []) for e in range(20)]
    assert any(len(set(s)) < N for s in epoch_sets), "no repeats: not sampling with replacement"
    assert set(flat) == set(range(N))


# -- reproducibility --------------------------------------------------------------------------
def test_same_seed_gives_identical_results_and_another_seed_differs():
    X = _pca_data()[:500]

    def run(seed):
        problem = _pca_problem(Stiefel(n, p), "torch", X)
        return _quiet(
            batch_size=32,
            max_iterations=200,
            momentum=0.5,
            seed=seed,
            check_period=50,
            log_verbosity=1,
        ).run(problem)

    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a.point, b.point)
    assert a.log["iterations"]["cost"] == b.log["iterations"]["cost"]
    assert not torch.equal(a.point, c.point)


# -- stopping criteria ------------------------------------------------------------------------
def test_max_iterations_max_epochs_max_time_and_callback_stop_with_their_reason():
    problem = _pca_problem(Stiefel(n, p), "numpy", _pca_data()[:200])
    r = _quiet(batch_size=50, max_iterations=7, seed=0).run(problem)
    assert r.iterations == 7 and r.stopping_criterion.startswith(
        "Terminated - max iterations reached after"
    ), r.stopping_criterion
    r = _quiet(batch_size=50, max_iterations=None, max_epochs=3, seed=0).run(problem)
    assert r.iterations == 12 and r.stopping_criterion.startswith(
        "Terminated - max epochs reached after 12 iterations"
    ), r.stopping_criterion
    r = _quiet(batch_size=50, max_iterations=None, max_time=0.2, seed=0).run(problem)
    assert r.stopping_criterion.startswith("Terminated - max time reached after"), (
        r.stopping_criterion
    )
    assert 0.2 <= r.time < 5, r.time

    seen = []

    def callback(iteration, point, stats):
        seen.append((iteration, stats["cost"], stats["gradient_norm"], stats["step_size"]))
        return iteration >= 30

    r = _quiet(batch_size=50, max_iterations=1000, check_period=10, callback=callback, seed=0).run(
        problem
    )
    assert r.iterations == 30 and [s[0] for s in seen] == [0, 10, 20, 30], seen
    assert "callback requested a stop after 30 iterations" in r.stopping_criterion
    assert all(math.isfinite(s[1]) and s[2] >= 0 and s[3] > 0 for s in seen)
    r = _quiet(
        batch_size=200,
        max_iterations=10**4,
        check_period=5,
        min_gradient_norm=1e-3,
        step_size="fixed",
        initial_step_size=0.02,
        check_samples=None,
        seed=0,
    ).run(problem)
    assert r.stopping_criterion.startswith("Terminated - min grad norm reached"), (
        r.stopping_criterion
    )
    assert r.gradient_norm < 1e-3 and r.iterations % 5 == 0


def test_max_epochs_is_not_cut_short_by_the_default_iteration_limit():
    """A user's max_epochs decides when max_iterations is left at its default (1000); an
    explicit max_iterations still applies, and without max_epochs the default 1000 does."""
    problem = _pca_problem(Stiefel(n, p), "numpy", _pca_data()[:200])
    options = dict(
        batch_size=50, check_period=10**6, step_size="fixed", initial_step_size=1e-3, seed=0
    )
    r = _quiet(max_epochs=300, **options).run(problem)  # 300 epochs x 4 = 1200 > 1000
    assert r.iterations == 1200 and r.stopping_criterion.startswith(
        "Terminated - max epochs reached after 1200 iterations"
    ), (r.iterations, r.stopping_criterion)
    r = _quiet(max_epochs=300, max_iterations=1000, **options).run(problem)
    assert r.iterations == 1000 and r.stopping_criterion.startswith(
        "Terminated - max iterations reached"
    ), (r.iterations, r.stopping_criterion)
    r = _quiet(**options).run(problem)
    assert r.iterations == 1000 and r.stopping_criterion.startswith(
        "Terminated - max iterations reached"
    ), (r.iterations, r.stopping_criterion)


def test_diverging_run_stops_on_a_non_finite_cost():
    problem = _ls_problem("numpy")
    with np.errstate(all="ignore"):
        r = _quiet(
            batch_size=50,
            max_iterations=5000,
            step_size="fixed",
            initial_step_size=50.0,
            check_period=1,
            seed=0,
        ).run(problem)
    assert r.stopping_criterion.startswith("Terminated - non-finite cost"), r.stopping_criterion
    assert r.iterations < 5000 and not math.isfinite(r.cost)


# -- logging and printing ---------------------------------------------------------------------
def test_log_records_each_check_and_verbosity_prints_a_table(capsys):
    problem = _pca_problem(Stiefel(n, p), "numpy", _pca_data()[:200])
    result = StochasticGradient(
        batch_size=50,
        max_iterations=25,
        check_period=10,
        seed=0,
        verbosity=2,
        log_verbosity=1,
        progress_bar=False,
    ).run(problem)
    log = result.log["iterations"]
    assert log["iteration"] == [0, 10, 20, 25]
    for key in ("cost", "gradient_norm", "step_size", "epoch", "time", "point"):
        assert len(log[key]) == 4, key
    assert log["epoch"] == [0.0, 2.5, 5.0, 6.25]
    assert result.log["epochs"]["iteration"] == [4, 8, 12, 16, 20, 24]
    assert result.log["optimizer"] == "StochasticGradient"
    out = capsys.readouterr().out
    assert "Iteration" in out and "Step size" in out and "Optimizing..." in out
    assert "Terminated - max iterations reached" in out
    assert (
        len([line for line in out.splitlines() if line.strip()[:2] in ("0 ", "10", "20", "25")])
        >= 4
    ), out
    _quiet(batch_size=50, max_iterations=5, seed=0).run(problem)
    assert capsys.readouterr().out == ""


# -- bad options and inputs -------------------------------------------------------------------
@pytest.mark.parametrize(
    "option, value",
    [
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("max_iterations", -1),
        ("max_iterations", 1.5),
        ("max_epochs", -2),
        ("max_time", -1.0),
        ("sampling", "random"),
        ("step_size", "adam"),
        ("step_size", 3),
        ("initial_step_size", 0.0),
        ("initial_step_size", math.inf),
        ("step_size_decay", -0.1),
        ("decay_steps", -1),
        ("bold_driver_increase", 0),
        ("bold_driver_decrease", 1.0),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("dampening", 2),
        ("weight_decay", -1),
        ("nesterov", "yes"),
        ("check_period", 0),
        ("check_samples", 0),
        ("min_gradient_norm", -1),
        ("callback", 5),
        ("seed", "abc"),
        ("seed", -1),
        ("verbosity", -1),
        ("log_verbosity", 1.5),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(option, value):
    with pytest.raises(ValueError, match=option):
        StochasticGradient(**{option: value})


def test_nesterov_without_momentum_and_no_limits_raise():
    with pytest.raises(ValueError, match="nesterov"):
        StochasticGradient(nesterov=True)
    with pytest.raises(ValueError, match="max_iterations, max_epochs, max_passes and max_time"):
        StochasticGradient(max_iterations=None, max_epochs=None, max_time=None)


def test_run_rejects_other_problems_and_off_manifold_points():
    solver = _quiet(max_iterations=1)
    X = _pca_data()[:50]
    plain = _pca_problem(Stiefel(n, p), "numpy", X).full_problem()
    with pytest.raises(TypeError, match="FiniteSumProblem"):
        solver.run(plain)
    with pytest.raises(ValueError, match="initial_point"):
        solver.run(_pca_problem(Stiefel(n, p), "numpy", X), initial_point=np.ones((n, p)))


def test_callable_step_size_returning_nan_raises():
    problem = _pca_problem(Sphere(n), "numpy", _pca_data()[:50])
    with pytest.raises(ValueError, match="step_size callable returned nan"):
        _quiet(max_iterations=3, step_size=lambda k: float("nan")).run(problem)


# -- GPU ----------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stochastic_pca_on_cuda_keeps_tensors_on_the_device():
    X = _pca_data()
    problem = FiniteSumProblem(Stiefel(n, p), _pca_cost_torch, torch.from_numpy(X).to("cuda"))
    solver = _quiet(
        batch_size=50,
        max_iterations=3000,
        step_size="decay",
        initial_step_size=0.05,
        step_size_decay=1.0,
        check_samples=None,
        momentum=0.0,
        seed=0,
    )
    result = solver.run(problem)
    assert result.point.device.type == "cuda" and result.point.dtype == torch.float64
    angle = _largest_principal_angle(result.point, _top_subspace(X))
    assert angle < PCA_TOL, f"largest principal angle {angle:.3e} rad"
    ls = FiniteSumProblem(
        Product([Oblique(m, d, unit="rows"), Euclidean(m)]),
        _ls_cost_torch,
        tuple(torch.from_numpy(a).to("cuda") for a in _ls_truth()[2:]),
    )
    r = _quiet(
        batch_size=20, max_iterations=2000, step_size="fixed", initial_step_size=0.05, seed=0
    ).run(ls)
    assert all(t.device.type == "cuda" for t in r.point)
    W_true, b_true = _ls_truth()[:2]
    err = max(np.abs(_np(r.point[0]) - W_true).max(), np.abs(_np(r.point[1]) - b_true).max())
    assert err < LS_TOL, f"max error {err:.3e}"
