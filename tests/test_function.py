"""riemann_dnn.function.torch (riemann_dnn/autodiff.py): derivatives, types, devices, errors.

Derivatives are compared with the analytic ones of quadratics in float64:
f(X) = 1/2 tr(X^T A X) + tr(B^T X) has gradient A X + B and Hessian-vector product A U.
"""

from __future__ import annotations

import warnings

import numpy as np
import pymanopt
import pytest
import torch

import riemann_dnn.function
from riemann_dnn.manifolds import Euclidean, Oblique, Product, Sphere

N, K = 6, 3


def _sym(rng, n):
    a = rng.standard_normal((n, n))
    return a + a.T


@pytest.fixture
def quadratic():
    rng = np.random.default_rng(0)
    A, B = _sym(rng, N), rng.standard_normal((N, K))
    At, Bt = torch.from_numpy(A), torch.from_numpy(B)
    manifold = Euclidean(N, K)

    @riemann_dnn.function.torch(manifold)
    def cost(X):
        Ac, Bc = At.to(X), Bt.to(X)
        return 0.5 * torch.sum(X * (Ac @ X)) + torch.sum(Bc * X)

    X, U = rng.standard_normal((N, K)), rng.standard_normal((N, K))
    return {"cost": cost, "A": A, "B": B, "X": X, "U": U}


@pytest.fixture
def product_quadratic():
    """f(x, y) = 1/2 x^T A x + x^T C y + 1/2 y^T D y on Euclidean(N) x Euclidean(K)."""
    rng = np.random.default_rng(1)
    A, C, D = _sym(rng, N), rng.standard_normal((N, K)), _sym(rng, K)
    At, Ct, Dt = map(torch.from_numpy, (A, C, D))
    manifold = Product([Euclidean(N), Euclidean(K)])

    @riemann_dnn.function.torch(manifold)
    def cost(x, y):
        return 0.5 * x @ At @ x + x @ Ct @ y + 0.5 * y @ Dt @ y

    point = [rng.standard_normal(N), rng.standard_normal(K)]
    vector = [rng.standard_normal(N), rng.standard_normal(K)]
    return {"cost": cost, "A": A, "C": C, "D": D, "point": point, "vector": vector}


def _close(actual, expected, name):
    actual = actual.numpy() if isinstance(actual, torch.Tensor) else actual
    error = np.max(np.abs(actual - expected))
    assert error <= 1e-12 * max(1.0, np.max(np.abs(expected))), f"{name}: max error {error:.2e}"


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_gradient_and_hessian_match_analytic_quadratic(quadratic, kind):
    q = quadratic
    X, U = q["X"], q["U"]
    if kind == "torch":
        X, U = torch.from_numpy(X), torch.from_numpy(U)
    value = q["cost"](X)
    expected_value = 0.5 * np.sum(q["X"] * (q["A"] @ q["X"])) + np.sum(q["B"] * q["X"])
    assert isinstance(value, float), type(value)
    assert value == pytest.approx(expected_value, rel=1e-13)
    _close(q["cost"].get_gradient_operator()(X), q["A"] @ q["X"] + q["B"], "gradient")
    _close(q["cost"].get_hessian_operator()(X, U), q["A"] @ q["U"], "Hessian-vector product")


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_product_gradient_and_hessian_match_analytic(product_quadratic, kind):
    q = product_quadratic
    (x, y), (u, v) = q["point"], q["vector"]
    A, C, D = q["A"], q["C"], q["D"]
    args = [x, y, u, v]
    if kind == "torch":
        args = [torch.from_numpy(a) for a in args]
    grad_x, grad_y = q["cost"].get_gradient_operator()(*args[:2])
    _close(grad_x, A @ x + C @ y, "gradient in x")
    _close(grad_y, C.T @ x + D @ y, "gradient in y")
    hess_x, hess_y = q["cost"].get_hessian_operator()(*args)
    _close(hess_x, A @ u + C @ v, "Hessian-vector product in x")
    _close(hess_y, C.T @ u + D @ v, "Hessian-vector product in y")


def test_problem_on_product_gives_list_gradients(product_quadratic):
    q = product_quadratic
    manifold = Product([Euclidean(N), Euclidean(K)])
    problem = pymanopt.Problem(manifold, q["cost"])
    point = [torch.from_numpy(a) for a in q["point"]]
    grad = problem.euclidean_gradient(point)
    (x, y), A, C, D = q["point"], q["A"], q["C"], q["D"]
    _close(grad[0], A @ x + C @ y, "Problem gradient in x")
    _close(grad[1], C.T @ x + D @ y, "Problem gradient in y")


def test_callers_tensors_are_not_modified_and_get_no_grad(quadratic):
    q = quadratic
    X = torch.from_numpy(q["X"].copy()).requires_grad_(True)  # a leaf that wants gradients
    U = torch.from_numpy(q["U"].copy())
    X_before, U_before = X.detach().clone(), U.clone()
    q["cost"](X)
    q["cost"].get_gradient_operator()(X)
    hess = q["cost"].get_hessian_operator()(X, U)
    assert X.grad is None and U.grad is None, "the caller's tensors received .grad"
    assert not U.requires_grad, "the backend switched on requires_grad of a caller's tensor"
    assert torch.equal(X.detach(), X_before) and torch.equal(U, U_before), "inputs modified"
    assert not hess.requires_grad and hess.grad_fn is None, "results still carry a graph"
    X_np = q["X"].copy()
    q["cost"].get_gradient_operator()(X_np)
    np.testing.assert_array_equal(X_np, q["X"], err_msg="numpy input modified")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out_same_dtype_and_device(quadratic, dtype):
    q = quadratic
    X, U = torch.from_numpy(q["X"]).to(dtype), torch.from_numpy(q["U"]).to(dtype)
    for result in (q["cost"].get_gradient_operator()(X), q["cost"].get_hessian_operator()(X, U)):
        assert isinstance(result, torch.Tensor), type(result)
        assert (result.dtype, result.device, result.shape) == (X.dtype, X.device, X.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out(quadratic, dtype):
    q = quadratic
    X, U = q["X"].astype(dtype), q["U"].astype(dtype)
    for result in (q["cost"].get_gradient_operator()(X), q["cost"].get_hessian_operator()(X, U)):
        assert isinstance(result, np.ndarray), type(result)
        assert (result.dtype, result.shape) == (X.dtype, X.shape)


def test_unused_arguments_get_zero_gradient_and_hessian():
    manifold = Product([Euclidean(N), Euclidean(K)])

    @riemann_dnn.function.torch(manifold)
    def cost(x, y):
        return torch.sum(x**3)

    rng = np.random.default_rng(2)
    x, y = torch.from_numpy(rng.standard_normal(N)), torch.from_numpy(rng.standard_normal(K))
    u, v = torch.ones(N, dtype=torch.float64), torch.ones(K, dtype=torch.float64)
    grad_x, grad_y = cost.get_gradient_operator()(x, y)
    hess_x, hess_y = cost.get_hessian_operator()(x, y, u, v)
    _close(grad_x, 3 * x.numpy() ** 2, "gradient of the used argument")
    _close(hess_x, 6 * x.numpy() * u.numpy(), "Hessian of the used argument")
    for name, value, like in (("gradient", grad_y, y), ("Hessian", hess_y, y)):
        assert isinstance(value, torch.Tensor) and value.shape == like.shape, name
        assert torch.count_nonzero(value) == 0, f"{name} of the unused argument: {value}"


def test_affine_cost_has_zero_hessian():
    manifold = Euclidean(N)
    b = torch.arange(float(N), dtype=torch.float64)

    @riemann_dnn.function.torch(manifold)
    def cost(x):
        return b @ x

    x, u = torch.ones(N, dtype=torch.float64), torch.ones(N, dtype=torch.float64)
    _close(cost.get_gradient_operator()(x), b.numpy(), "gradient of an affine cost")
    hess = cost.get_hessian_operator()(x, u)
    assert torch.count_nonzero(hess) == 0 and hess.shape == x.shape, hess


def test_non_scalar_cost_raises_clear_value_error():
    manifold = Euclidean(N)

    @riemann_dnn.function.torch(manifold)
    def cost(x):
        return x * 2

    x = torch.ones(N, dtype=torch.float64)
    for call in (
        lambda: cost(x),
        lambda: cost.get_gradient_operator()(x),
        lambda: cost.get_hessian_operator()(x, x),
    ):
        with pytest.raises(ValueError, match=r"must return a scalar.*shape \(6,\)"):
            call()


def test_keyword_only_arguments_are_rejected():
    with pytest.raises(ValueError, match="positional arguments"):

        @riemann_dnn.function.torch(Euclidean(N))
        def cost(x, *, scale=1.0):
            return scale * torch.sum(x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trust_regions_keeps_cuda_sphere_point_on_gpu():
    n = 50
    rng = np.random.default_rng(3)
    A = _sym(rng, n)
    A_cuda = torch.from_numpy(A).cuda()
    manifold = Sphere(n)

    @riemann_dnn.function.torch(manifold)
    def cost(x):
        assert x.is_cuda, f"the backend moved the point to {x.device}"
        return -(x @ (A_cuda @ x))

    x0 = manifold.random_point(device="cuda", dtype=torch.float64, generator=0)
    result = pymanopt.optimizers.TrustRegions(verbosity=0).run(
        pymanopt.Problem(manifold, cost), initial_point=x0
    )
    assert isinstance(result.point, torch.Tensor) and result.point.is_cuda, result.point.device
    top = np.linalg.eigvalsh(A)[-1]
    assert abs(result.cost + top) <= 1e-8 * abs(top), (result.cost, -top)


def test_conjugate_gradient_on_oblique_rows_times_euclidean_keeps_torch_points():
    """The issue's acceptance case: Product([Oblique(20, 5, unit="rows"), Euclidean(5)])
    solved by ConjugateGradient; every iterate is a pair of torch tensors. Data
    ``Y = W*(A + b* 1^T)`` with unit-norm rows of ``W*``, so the optimum is known."""
    import pymanopt

    from riemann_dnn.manifolds import Euclidean, Oblique, Product

    manifold = Product([Oblique(20, 5, unit="rows"), Euclidean(5)])
    gen = torch.Generator().manual_seed(0)
    w_true, b_true = manifold.random_point(dtype=torch.float64, generator=1)
    a = torch.randn(5, 50, generator=gen, dtype=torch.float64)
    y = w_true @ (a + b_true[:, None])

    @riemann_dnn.function.torch(manifold)
    def cost(w, b):
        return 0.5 * torch.sum((w @ (a + b[:, None]) - y) ** 2) / y.shape[1]

    problem = pymanopt.Problem(manifold, cost)
    optimizer = pymanopt.optimizers.ConjugateGradient(
        verbosity=0, log_verbosity=1, max_iterations=500
    )
    start = manifold.manifolds[0].project_point(
        w_true + 0.1 * torch.randn(20, 5, generator=gen, dtype=torch.float64)
    )
    result = optimizer.run(problem, initial_point=[start, torch.zeros(5, dtype=torch.float64)])
    points = result.log["iterations"]["point"]
    assert len(points) > 1
    assert all(isinstance(p, torch.Tensor) for point in points for p in point)
    assert result.cost < 1e-12, result.cost
    assert torch.allclose(result.point[0], w_true, atol=1e-6)
    assert torch.allclose(result.point[1], b_true, atol=1e-6)


# -- complex points: pymanopt's conventions ----------------------------------------------------
def test_complex_gradient_and_hessian_follow_pymanopt_conventions():
    """pymanopt's own complex backend test: f(x) = Re sum x^2 has gradient 2 conj(x) and
    Hessian-vector product 2 conj(u) (the Hessian of Re<g, u>, with the conjugate)."""
    rng = np.random.default_rng(2)
    n = 10
    manifold = Euclidean(n)

    @riemann_dnn.function.torch(manifold)
    def cost(x):
        return torch.real(torch.sum(x**2))

    x = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    u = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    assert np.isclose(cost(x), np.sum(x**2).real)
    _close(cost.get_gradient_operator()(x), 2 * x.conj(), "gradient")
    _close(cost.get_hessian_operator()(x, u), 2 * u.conj(), "hessian-vector product")


def _dominant_complex_subspace_cost(decorator, manifold, matrix):
    """pymanopt's examples/dominant_invariant_complex_subspace.py cost, -Re tr(X^H A X)."""
    matrix_ = torch.from_numpy(matrix)

    @decorator(manifold)
    def cost(X):
        return -torch.tensordot(X.conj(), matrix_.to(X) @ X).real

    return cost


def test_complex_grassmann_trust_regions_matches_pymanopt_pytorch_backend():
    """pymanopt's dominant_invariant_complex_subspace example (128 x 3, TrustRegions) solved
    with our backend reaches the cost of pymanopt's PyTorch backend and the optimum
    -(sum of the 3 largest eigenvalues); their Hessian-vector products agree."""
    from pymanopt.manifolds import ComplexGrassmann

    num_rows, dimension = 128, 3
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(num_rows, num_rows)) + 1j * rng.normal(size=(num_rows, num_rows))
    matrix = 0.5 * (matrix + matrix.T.conj())
    manifold = ComplexGrassmann(num_rows, dimension)
    start, _ = np.linalg.qr(
        rng.normal(size=(num_rows, dimension)) + 1j * rng.normal(size=(num_rows, dimension))
    )
    costs = {}
    for name, decorator in [
        ("ours", riemann_dnn.function.torch),
        ("pymanopt", pymanopt.function.pytorch),
    ]:
        cost = _dominant_complex_subspace_cost(decorator, manifold, matrix)
        problem = pymanopt.Problem(manifold, cost)
        result = pymanopt.optimizers.TrustRegions(verbosity=0).run(
            problem, initial_point=start, Delta_bar=8 * np.sqrt(dimension)
        )
        costs[name] = result.cost
    optimum = -np.sort(np.linalg.eigvalsh(matrix))[-dimension:].sum()
    assert abs(costs["ours"] - costs["pymanopt"]) < 1e-8 * abs(optimum), costs
    assert abs(costs["ours"] - optimum) < 1e-8 * abs(optimum), (costs, optimum)

    ours = _dominant_complex_subspace_cost(riemann_dnn.function.torch, manifold, matrix)
    theirs = _dominant_complex_subspace_cost(pymanopt.function.pytorch, manifold, matrix)
    vector = rng.normal(size=start.shape) + 1j * rng.normal(size=start.shape)
    _close(
        ours.get_hessian_operator()(start, vector),
        theirs.get_hessian_operator()(start, vector),
        "hessian-vector product",
    )


# -- the package exposes the backend as pymanopt does ------------------------------------------
def test_import_riemann_dnn_makes_function_available_without_loading_torch_first():
    """``import riemann_dnn; riemann_dnn.function.torch`` works (like ``pymanopt.function``),
    and the bare import stays light: torch is loaded only when a subpackage is used."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, riemann_dnn\n"
        "light = 'torch' not in sys.modules\n"
        "decorator = riemann_dnn.function.torch\n"
        "print(light, callable(decorator), riemann_dnn.function.__name__, "
        "'function' in dir(riemann_dnn))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["True", "True", "riemann_dnn.function", "True"], (
        completed.stdout
    )


def test_cost_that_detaches_its_argument_gets_a_clear_error():
    import pymanopt

    import riemann_dnn
    from riemann_dnn.manifolds import Sphere

    manifold = Sphere(3)

    @riemann_dnn.function.torch(manifold)
    def cost(x):
        return (x.detach() ** 2).sum()

    problem = pymanopt.Problem(manifold, cost)
    point = torch.nn.functional.normalize(torch.randn(3, dtype=torch.float64), dim=0)
    with pytest.raises(ValueError, match="does not depend on its arguments"):
        problem.riemannian_gradient(point)


# -- a backend that owns its device -----------------------------------------------------------
def _owned_problems(device):
    """The issue's two problems, decorated with a device and float64: a fit on
    Oblique(20, 5, rows) x Euclidean(5) and a Rayleigh quotient on Sphere(30)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(5, 40, generator=gen, dtype=torch.float64).to(device)
    Y = torch.randn(20, 40, generator=gen, dtype=torch.float64).to(device)
    A = torch.randn(30, 30, generator=gen, dtype=torch.float64).to(device)
    A = A + A.T
    product = Product([Oblique(20, 5, unit="rows"), Euclidean(5)])

    @riemann_dnn.function.torch(product, device=device, dtype=torch.float64)
    def fit(W, b):
        return torch.mean((W @ X + b.sum() - Y) ** 2)

    sphere = Sphere(30)

    @riemann_dnn.function.torch(sphere, device=device, dtype=torch.float64)
    def rayleigh(x):
        return -x @ A @ x

    return [pymanopt.Problem(product, fit), pymanopt.Problem(sphere, rayleigh)], A


_OPTIMIZERS = {
    "ConjugateGradient": lambda: pymanopt.optimizers.ConjugateGradient(
        verbosity=0, max_iterations=40
    ),
    "SteepestDescent": lambda: pymanopt.optimizers.SteepestDescent(verbosity=0, max_iterations=40),
    "TrustRegions": lambda: pymanopt.optimizers.TrustRegions(verbosity=0, max_iterations=100),
}


def _check_owned_run(device, name):
    torch.manual_seed(0)  # pymanopt's random initial point comes from torch's global state
    problems, A = _owned_problems(device)
    want = torch.device(device)
    for problem in problems:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no numpy fallback, no other warning
            result = _OPTIMIZERS[name]().run(problem)  # no initial_point: pymanopt draws it
        points = result.point if isinstance(result.point, list) else [result.point]
        for point in points:
            assert isinstance(point, torch.Tensor), type(point)
            assert point.device.type == want.type and point.dtype == torch.float64
        assert problem.manifold.constraint_violation(result.point) < 1e-10
    if name == "TrustRegions":  # and it solved the Rayleigh quotient
        assert abs(result.cost + float(torch.linalg.eigvalsh(A)[-1])) < 1e-8


@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_pymanopt_solvers_without_initial_point_return_tensors_on_the_owned_device(name):
    _check_owned_run("cpu", name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_pymanopt_solvers_without_initial_point_stay_on_cuda(name):
    _check_owned_run("cuda", name)


def test_a_point_off_the_owned_device_or_dtype_is_refused_in_one_line():
    problems, _ = _owned_problems("cpu")
    sphere_problem = problems[1]
    solver = pymanopt.optimizers.TrustRegions(verbosity=0, max_iterations=2)
    cases = {
        "float32": Sphere(30).random_point(dtype=torch.float32, generator=0),
        "numpy": Sphere(30).random_point(generator=0),
    }
    for kind, start in cases.items():
        with pytest.raises(ValueError) as raised:
            solver.run(sphere_problem, initial_point=start)
        message = str(raised.value)
        assert "\n" not in message, message
        assert "device='cpu', dtype=torch.float64" in message and "initial_point" in message
        assert ("torch.float32" if kind == "float32" else "numpy ndarray") in message, message
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            solver.run(sphere_problem, initial_point=cases["float32"].double().cuda())


def test_without_a_device_a_numpy_run_warns_once_and_keeps_todays_behaviour():
    manifold = Sphere(8)
    A = torch.diag(torch.arange(8, dtype=torch.float64))

    @riemann_dnn.function.torch(manifold)
    def cost(x):
        return -x @ A.to(x) @ x

    problem = pymanopt.Problem(manifold, cost)
    with pytest.warns(riemann_dnn.function.NumpyFallbackWarning) as record:
        result = pymanopt.optimizers.TrustRegions(verbosity=0).run(problem)
    assert isinstance(result.point, np.ndarray) and abs(result.cost + 7) < 1e-8
    fallbacks = [
        w for w in record if issubclass(w.category, riemann_dnn.function.NumpyFallbackWarning)
    ]
    assert len(fallbacks) == 1, [str(w.message) for w in fallbacks]
    assert "device=" in str(fallbacks[0].message)
    with warnings.catch_warnings():  # a torch initial point: no warning
        warnings.simplefilter("error")
        start = manifold.random_point(dtype=torch.float64, generator=0)
        assert isinstance(
            pymanopt.optimizers.TrustRegions(verbosity=0).run(problem, initial_point=start).point,
            torch.Tensor,
        )


def test_device_needs_riemann_dnn_manifolds_and_a_floating_dtype():
    with pytest.raises(ValueError, match="riemann_dnn.manifolds"):
        riemann_dnn.function.torch(pymanopt.manifolds.Sphere(3), device="cpu")
    with pytest.raises(ValueError, match="riemann_dnn.manifolds"):
        riemann_dnn.function.torch(
            Product([Sphere(3), pymanopt.manifolds.Sphere(3)]), device="cpu"
        )
    with pytest.raises(ValueError, match="dtype must be a floating torch dtype"):
        riemann_dnn.function.torch(Sphere(3), dtype=torch.int64)
    with pytest.raises(ValueError, match="device must be a torch device"):
        riemann_dnn.function.torch(Sphere(3), device="gpu7")
    bound = Sphere(3)
    riemann_dnn.function.torch(bound, dtype=torch.float64)
    point = bound.random_point()
    assert isinstance(point, torch.Tensor) and point.dtype == torch.float64
    assert isinstance(bound.random_point(dtype=torch.float32), torch.Tensor)  # explicit wins
    assert isinstance(Sphere(3).random_point(), np.ndarray)  # other objects are untouched
