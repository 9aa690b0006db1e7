"""Drop-in parity: our classes give pymanopt's numbers (same constructor arguments, numpy
inputs) for every operation both define; ``Oblique(m, n, unit="rows")`` is pymanopt's
``Oblique(n, m)`` on transposed arrays."""

from __future__ import annotations

import numpy as np
import pymanopt.manifolds as pm
import pytest
from manifold_cases import gap, is_list

import riemann_dnn.manifolds as rm

TOL = 1e-12


def _pairs():
    """(id, ours, pymanopt's, operations beyond the common ones)."""
    sphere_ops = {"log", "dist", "pair_mean"}
    return [
        ("sphere(5)", rm.Sphere(5), pm.Sphere(5), sphere_ops),
        ("sphere(4,3)", rm.Sphere(4, 3), pm.Sphere(4, 3), sphere_ops),
        ("oblique(4,3)", rm.Oblique(4, 3), pm.Oblique(4, 3), sphere_ops),
        ("stiefel(5,3)", rm.Stiefel(5, 3), pm.Stiefel(5, 3), set()),
        ("stiefel(5,3,k=2)", rm.Stiefel(5, 3, k=2), pm.Stiefel(5, 3, k=2), set()),
        (
            "stiefel(5,3,polar)",
            rm.Stiefel(5, 3, retraction="polar"),
            pm.Stiefel(5, 3, retraction="polar"),
            set(),
        ),
        ("grassmann(5,2)", rm.Grassmann(5, 2), pm.Grassmann(5, 2), {"log", "dist"}),
        ("grassmann(5,2,k=2)", rm.Grassmann(5, 2, k=2), pm.Grassmann(5, 2, k=2), {"log", "dist"}),
        ("euclidean(4,3)", rm.Euclidean(4, 3), pm.Euclidean(4, 3), sphere_ops),
        ("euclidean(6)", rm.Euclidean(6), pm.Euclidean(6), sphere_ops),
        (
            "product(sphere,oblique,grassmann,euclidean)",
            rm.Product([rm.Sphere(3), rm.Oblique(4, 2), rm.Grassmann(4, 2), rm.Euclidean(2)]),
            pm.Product([pm.Sphere(3), pm.Oblique(4, 2), pm.Grassmann(4, 2), pm.Euclidean(2)]),
            {"log", "dist"},
        ),
        (
            "product(stiefel,euclidean)",
            rm.Product([rm.Stiefel(4, 2, k=2), rm.Euclidean(3, 2)]),
            pm.Product([pm.Stiefel(4, 2, k=2), pm.Euclidean(3, 2)]),
            set(),
        ),
    ]


PAIRS = _pairs()


def _data(manifold, seed):
    rng = np.random.default_rng(seed)
    x = manifold.random_point(generator=rng)

    def gaussian():
        return (
            [rng.standard_normal(p.shape) for p in x]
            if is_list(x)
            else rng.standard_normal(x.shape)
        )

    u = manifold.projection(x, gaussian())
    u = u / manifold.norm(x, u)
    v = manifold.projection(x, gaussian())
    y = manifold.retraction(x, 0.8 * u)
    return {"x": x, "y": y, "u": 0.6 * u, "v": v, "g": gaussian(), "h": gaussian()}


def _operations(manifold, d, extra):
    x, y, u, v, g, h = d["x"], d["y"], d["u"], d["v"], d["g"], d["h"]
    ops = {
        "projection": lambda: manifold.projection(x, g),
        "to_tangent_space": lambda: manifold.to_tangent_space(x, g),
        "euclidean_to_riemannian_gradient": lambda: manifold.euclidean_to_riemannian_gradient(
            x, g
        ),
        "euclidean_to_riemannian_hessian": lambda: manifold.euclidean_to_riemannian_hessian(
            x, g, h, u
        ),
        "retraction": lambda: manifold.retraction(x, u),
        "exp": lambda: manifold.exp(x, u),
        "transport": lambda: manifold.transport(x, y, u),
        "inner_product": lambda: manifold.inner_product(x, u, v),
        "norm": lambda: manifold.norm(x, u),
        "zero_vector": lambda: manifold.zero_vector(x),
        "dim": lambda: manifold.dim,
        "typical_dist": lambda: manifold.typical_dist,
    }
    if "log" in extra:
        ops["log"] = lambda: manifold.log(x, y)
    if "dist" in extra:
        ops["dist"] = lambda: manifold.dist(x, y)
    if "pair_mean" in extra:
        ops["pair_mean"] = lambda: manifold.pair_mean(x, y)
    return ops


def _compare(name, ours, theirs, context):
    if not is_list(theirs) and np.ndim(theirs) == 0:
        assert np.isscalar(ours) or isinstance(ours, float), f"{context} {name}: {type(ours)}"
        assert abs(float(ours) - float(theirs)) < TOL, (
            f"{context} {name}: ours {float(ours)!r}, pymanopt {float(theirs)!r}"
        )
        return
    assert gap(ours, theirs) < TOL, f"{context} {name}: differs by {gap(ours, theirs):.3g}"


@pytest.mark.parametrize("pair", PAIRS, ids=[p[0] for p in PAIRS])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_numbers_as_pymanopt(pair, seed):
    name, ours, theirs, extra = pair
    data = _data(ours, seed)
    ours_ops, theirs_ops = _operations(ours, data, extra), _operations(theirs, data, extra)
    for op in ours_ops:
        _compare(op, ours_ops[op](), theirs_ops[op](), f"{name} seed {seed}:")


@pytest.mark.parametrize("pair", PAIRS, ids=[p[0] for p in PAIRS])
def test_random_draws_match_pymanopt_under_numpy_global_seed(pair):
    """Without a generator, both draw from numpy's global state in the same order."""
    name, ours, theirs, _ = pair
    np.random.seed(123)
    x_ours = ours.random_point()
    u_ours = ours.random_tangent_vector(x_ours)
    np.random.seed(123)
    x_theirs = theirs.random_point()
    u_theirs = theirs.random_tangent_vector(x_theirs)
    assert gap(x_ours, x_theirs) < TOL, f"{name}: random_point differs"
    assert gap(u_ours, u_theirs) < TOL, f"{name}: random_tangent_vector differs"


def _transposed(a):
    return a.T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oblique_rows_is_pymanopt_oblique_on_transposes(seed):
    ours, theirs = rm.Oblique(4, 6, unit="rows"), pm.Oblique(6, 4)
    data = _data(ours, seed)
    extra = {"log", "dist", "pair_mean"}
    ours_ops = _operations(ours, data, extra)
    theirs_ops = _operations(theirs, {k: _transposed(a) for k, a in data.items()}, extra)
    for op in ours_ops:
        expected = theirs_ops[op]()
        if isinstance(expected, np.ndarray) and expected.ndim == 2:
            expected = _transposed(expected)
        _compare(op, ours_ops[op](), expected, f"Oblique rows seed {seed}:")


def test_pymanopt_problem_accepts_our_manifolds():
    """Our manifolds are pymanopt Manifolds: a pymanopt Problem with pymanopt's numpy
    backend solves the dominant eigenvector on our Sphere."""
    import pymanopt

    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6))
    a = a + a.T
    manifold = rm.Sphere(6)

    @pymanopt.function.numpy(manifold)
    def cost(x):
        return -x @ a @ x

    @pymanopt.function.numpy(manifold)
    def euclidean_gradient(x):
        return -2 * a @ x

    problem = pymanopt.Problem(manifold, cost, euclidean_gradient=euclidean_gradient)
    optimizer = pymanopt.optimizers.SteepestDescent(verbosity=0, min_gradient_norm=1e-9)
    result = optimizer.run(problem, initial_point=manifold.random_point(generator=1))
    top = np.linalg.eigh(a)[0][-1]
    assert abs(-result.cost - top) < 1e-8, (
        f"Rayleigh quotient {-result.cost}, top eigenvalue {top}"
    )
