"""Identities every manifold must satisfy, on numpy float64, torch float64 and torch float32.

Each check compares against an independent formula (tangent-space conditions written in
numpy, closed-form geodesic velocities, finite differences), never against stored numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from manifold_cases import (
    BACKENDS,
    CASES,
    FLOAT64_BACKENDS,
    Quadratic,
    add,
    assert_like,
    flat,
    fro,
    gap,
    is_list,
    scale,
    size_of,
    sub,
    to_numpy,
)

from riemann_dnn.manifolds import Grassmann, Oblique, Sphere, Stiefel

by_case = pytest.mark.parametrize("case", CASES, ids=str)
by_backend = pytest.mark.parametrize("backend", BACKENDS, ids=str)
by_f64_backend = pytest.mark.parametrize("backend", FLOAT64_BACKENDS, ids=str)


def _setup(case, backend, seed=0):
    manifold = case.build()
    x = backend.random_point(manifold, seed)
    return manifold, x


def _subspace_gap(a, b) -> float:
    """max |A A^T - B B^T| (basis-independent; accurate for nearby subspaces)."""
    a, b = to_numpy(a), to_numpy(b)
    return float(np.max(np.abs(a @ np.swapaxes(a, -1, -2) - b @ np.swapaxes(b, -1, -2))))


# -- points -----------------------------------------------------------------------------------


@by_case
@by_backend
def test_random_point_lies_on_manifold(case, backend):
    manifold = case.build()
    for seed in range(3):
        x = backend.random_point(manifold, seed)
        violation = manifold.constraint_violation(x)
        assert isinstance(violation, float)
        assert violation < backend.tol, f"seed {seed}: constraint violation {violation:.3g}"
        manifold.check_point(x)  # must not raise
        reference = x[0] if is_list(x) else x
        expected = backend.convert(np.zeros(1))
        assert type(reference) is type(expected) and reference.dtype == expected.dtype, (
            f"random_point gave {type(reference).__name__} {reference.dtype}, "
            f"wanted {backend.name}"
        )


@by_case
def test_random_point_respects_seed_generator_dtype_and_device(case):
    manifold = case.build()

    def first(point):
        return point[0] if is_list(point) else point

    default = manifold.random_point()
    assert isinstance(first(default), np.ndarray) and first(default).dtype == np.float64

    same = gap(manifold.random_point(generator=7), manifold.random_point(generator=7))
    other = gap(manifold.random_point(generator=7), manifold.random_point(generator=8))
    assert same == 0.0 and other > 1e-3, f"numpy seed: same seed gap {same}, other {other}"

    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert (
        gap(manifold.random_point(generator=rng_a), manifold.random_point(generator=rng_b)) == 0.0
    )

    t1 = manifold.random_point(dtype=torch.float64, generator=7)
    t2 = manifold.random_point(dtype=torch.float64, generator=7)
    assert isinstance(first(t1), torch.Tensor) and first(t1).dtype == torch.float64
    assert gap(t1, t2) == 0.0, "torch: same int seed gave different points"

    g1 = torch.Generator().manual_seed(11)
    g2 = torch.Generator().manual_seed(11)
    p1, p2 = manifold.random_point(generator=g1), manifold.random_point(generator=g2)
    assert isinstance(first(p1), torch.Tensor) and first(p1).device.type == "cpu"
    assert gap(p1, p2) == 0.0, "torch.Generator with the same seed gave different points"
    # the generator advances: a second draw differs
    assert gap(p1, manifold.random_point(generator=g1)) > 1e-3

    t32 = manifold.random_point(device="cpu", dtype=torch.float32, generator=7)
    assert first(t32).dtype == torch.float32 and first(t32).device == torch.device("cpu")
    assert manifold.constraint_violation(t32) < 2e-5


# -- tangent spaces, metric -------------------------------------------------------------------


@by_case
@by_backend
def test_projection_is_idempotent_and_tangent(case, backend):
    manifold, x = _setup(case, backend)
    z = backend.gaussian_like(x, 1)
    v = manifold.projection(x, z)
    assert_like(v, x, "projection")
    assert case.tangent_error(x, v) < backend.tol * 10, (
        f"projection not tangent: residual {case.tangent_error(x, v):.3g}"
    )
    twice = manifold.projection(x, v)
    assert gap(twice, v) < backend.tol * 10, f"P(P(z)) != P(z): gap {gap(twice, v):.3g}"
    # orthogonal projection: z - P(z) is orthogonal to every tangent vector
    w = manifold.projection(x, backend.gaussian_like(x, 2))
    residual = float(np.dot(flat(z) - flat(v), flat(w)))
    assert abs(residual) < backend.tol * 10 * size_of(x), f"<z - P z, w> = {residual:.3g}"
    assert gap(manifold.to_tangent_space(x, z), v) == 0.0
    assert gap(manifold.euclidean_to_riemannian_gradient(x, z), v) < backend.tol


@by_case
@by_backend
def test_inner_product_is_symmetric_and_norm_consistent(case, backend):
    manifold, x = _setup(case, backend)
    u = manifold.projection(x, backend.gaussian_like(x, 1))
    v = manifold.projection(x, backend.gaussian_like(x, 2))
    uv, vu = manifold.inner_product(x, u, v), manifold.inner_product(x, v, u)
    assert isinstance(uv, float) and isinstance(manifold.norm(x, u), float)
    assert abs(uv - vu) < backend.tol * 10, f"<u,v> = {uv}, <v,u> = {vu}"
    norm = manifold.norm(x, u)
    assert abs(norm**2 - manifold.inner_product(x, u, u)) < backend.tol * 10 * norm**2
    # embedded (trace) metric: the norm is the Frobenius norm over all entries
    assert abs(norm - fro(u)) < backend.tol * 10 * norm, f"norm {norm} vs Frobenius {fro(u)}"
    assert abs(manifold.norm(x, scale(-2.0, u)) - 2 * norm) < backend.tol * 10 * norm


@by_case
@by_backend
def test_random_tangent_vector_and_zero_vector(case, backend):
    manifold, x = _setup(case, backend)
    v = manifold.random_tangent_vector(x, generator=5)
    assert_like(v, x, "random_tangent_vector")
    assert case.tangent_error(x, v) < backend.tol * 10
    assert abs(manifold.norm(x, v) - 1) < backend.tol * 10, f"norm {manifold.norm(x, v)}"
    assert gap(v, manifold.random_tangent_vector(x, generator=5)) == 0.0, "not reproducible"
    zero = manifold.zero_vector(x)
    assert_like(zero, x, "zero_vector")
    assert fro(zero) == 0.0


@by_case
@by_backend
def test_methods_keep_kind_dtype_and_device(case, backend):
    manifold, x = _setup(case, backend)
    u = scale(0.3, manifold.random_tangent_vector(x, generator=1))
    y = manifold.retraction(x, u)
    z = backend.gaussian_like(x, 2)
    outputs = {
        "projection": manifold.projection(x, z),
        "to_tangent_space": manifold.to_tangent_space(x, z),
        "euclidean_to_riemannian_gradient": manifold.euclidean_to_riemannian_gradient(x, z),
        "euclidean_to_riemannian_hessian": manifold.euclidean_to_riemannian_hessian(x, z, z, u),
        "retraction": y,
        "exp": manifold.exp(x, u),
        "transport": manifold.transport(x, y, u),
    }
    if case.has_log:
        outputs["log"] = manifold.log(x, y)
    if case.has_weingarten:
        outputs["weingarten"] = manifold.weingarten(x, u, sub(z, manifold.projection(x, z)))
    if case.has_parallel_transport:
        outputs["parallel_transport"] = manifold.parallel_transport(x, u, u)
    if case.has_pair_mean:
        outputs["pair_mean"] = manifold.pair_mean(x, y)
    for name, out in outputs.items():
        assert_like(out, x, name)
    scalars = {
        "inner_product": manifold.inner_product(x, u, u),
        "norm": manifold.norm(x, u),
        "constraint_violation": manifold.constraint_violation(x),
        "typical_dist": manifold.typical_dist,
    }
    if case.has_log:
        scalars["dist"] = manifold.dist(x, y)
    for name, value in scalars.items():
        assert isinstance(value, float), f"{name} returned {type(value).__name__}"


@by_case
@by_backend
def test_transport_lands_in_target_tangent_space(case, backend):
    manifold, x = _setup(case, backend)
    y = backend.random_point(manifold, 1)
    u = manifold.random_tangent_vector(x, generator=2)
    moved = manifold.transport(x, y, u)
    assert_like(moved, y, "transport")
    assert case.tangent_error(y, moved) < backend.tol * 10, (
        f"transported vector off T_y: residual {case.tangent_error(y, moved):.3g}"
    )


# -- sphere-type extras -----------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.has_parallel_transport], ids=str)
@by_backend
def test_parallel_transport_is_an_isometry_into_the_tangent_space_at_exp(case, backend):
    manifold, x = _setup(case, backend)
    u = scale(1.3, manifold.random_tangent_vector(x, generator=1))  # a long step
    v = manifold.random_tangent_vector(x, generator=2)
    w = manifold.random_tangent_vector(x, generator=3)
    y = manifold.exp(x, u)
    pv, pw = manifold.parallel_transport(x, u, v), manifold.parallel_transport(x, u, w)
    tol = backend.tol * 10
    assert case.tangent_error(y, pv) < tol, f"off T_exp(x,u): {case.tangent_error(y, pv):.3g}"
    assert abs(manifold.norm(y, pv) - manifold.norm(x, v)) < tol
    before, after = manifold.inner_product(x, v, w), manifold.inner_product(y, pv, pw)
    assert abs(before - after) < tol, f"<v,w> = {before} but after transport {after}"
    # the geodesic's velocity is parallel: P(u) = d/dt exp(x, t u) at t = 1, which per
    # sphere is -|u| sin|u| x + cos|u| u
    xn, un = to_numpy(x), to_numpy(u)
    axis = None
    if case.family == "oblique":
        axis = 0 if manifold.unit == "columns" else 1
    t = np.linalg.norm(un, axis=axis, keepdims=axis is not None)
    velocity = -t * np.sin(t) * xn + np.cos(t) * un
    moved_u = manifold.parallel_transport(x, u, u)
    assert gap(moved_u, velocity) < tol, f"P(u) vs geodesic velocity: {gap(moved_u, velocity):.3g}"
    # zero step: the identity
    assert gap(manifold.parallel_transport(x, manifold.zero_vector(x), v), v) < tol


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.has_pair_mean and c.family != "euclidean"], ids=str
)
@by_f64_backend
def test_pair_mean_is_the_geodesic_midpoint(case, backend):
    manifold, x = _setup(case, backend)
    y = manifold.exp(x, scale(1.2, manifold.random_tangent_vector(x, generator=1)))
    mid = manifold.pair_mean(x, y)
    half = manifold.exp(x, scale(0.5, manifold.log(x, y)))
    assert gap(mid, half) < 1e-8, f"pair_mean vs exp(x, log(x,y)/2): {gap(mid, half):.3g}"


# -- exp / log / dist -------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.has_log], ids=str)
@by_backend
def test_exp_log_round_trip_and_dist(case, backend):
    """log(x, exp(x, v)) = v, exp(x, log(x, y)) = y, dist(x, exp(x, v)) = |v| (inside the
    injectivity radius), down to tiny steps in float64 (where arccos-based distances fail)."""
    manifold, x = _setup(case, backend)
    if backend.is_float64:
        lengths, rel, floor = (1e-6, 1e-3, 0.05, 0.5, 1.0), 1e-9, 1e-14
    else:
        lengths, rel, floor = (0.05, 0.5, 1.0), 1e-4, 2e-5
    for length in lengths:
        tol = rel * length + floor
        v = scale(length, manifold.random_tangent_vector(x, generator=1))
        y = manifold.exp(x, v)
        assert manifold.constraint_violation(y) < backend.tol * 10
        back = manifold.log(x, y)
        assert_like(back, x, "log")
        assert case.tangent_error(x, back) < backend.tol * 10
        assert gap(back, v) < tol, f"|v| = {length}: log(x, exp(x, v)) off by {gap(back, v):.3g}"
        again = manifold.exp(x, back)
        err = _subspace_gap(again, y) if case.family == "grassmann" else gap(again, y)
        assert err < backend.tol * 10, f"|v| = {length}: exp(x, log(x, y)) off by {err:.3g}"
        d = manifold.dist(x, y)
        assert isinstance(d, float)
        assert abs(d - length) < tol, f"dist(x, exp(x, v)) = {d!r}, |v| = {length}"
        assert abs(manifold.dist(y, x) - d) < tol, "dist is not symmetric"
    assert manifold.dist(x, x) < backend.tol, f"dist(x, x) = {manifold.dist(x, x)!r}"
    assert fro(manifold.log(x, x)) < backend.tol, f"|log(x, x)| = {fro(manifold.log(x, x))!r}"


@by_case
@by_backend
def test_exp_of_zero_is_identity(case, backend):
    manifold, x = _setup(case, backend)
    assert gap(manifold.exp(x, manifold.zero_vector(x)), x) < backend.tol


# -- second order: Riemannian Hessian against finite differences of the gradient -----------


@pytest.mark.parametrize(
    "case, retraction",
    [(c, r) for c in CASES for r in c.retractions],
    ids=lambda p: str(p),
)
@by_backend
def test_riemannian_hessian_matches_finite_differences(case, retraction, backend):
    """Hess f(x)[v] = (P_x grad f(c(t)) - P_x grad f(c(-t))) / 2t + O(t^2), c(t) = R_x(tv).

    f(x) = 1/2 vec(x)^T A vec(x) + b^T vec(x) with hand-written gradient A x + b and Hessian
    A v; the linear term makes the gradient's normal part (the curvature term) non-zero.
    Central differences need only c(0) = x, c'(0) = v, so any retraction gives the curve.
    """
    manifold = case.build(retraction)
    x = backend.random_point(manifold, 0)
    cost = Quadratic(size_of(x), seed=4)
    v = manifold.random_tangent_vector(x, generator=1)

    def projected_gradient(point):
        grad = manifold.euclidean_to_riemannian_gradient(point, cost.egrad(point))
        return manifold.projection(x, grad)

    hess = manifold.euclidean_to_riemannian_hessian(x, cost.egrad(x), cost.ehess(x, v), v)
    assert_like(hess, x, "euclidean_to_riemannian_hessian")
    assert case.tangent_error(x, hess) < backend.tol * 100
    t, rtol = (1e-5, 1e-6) if backend.is_float64 else (1e-2, 3e-2)
    ahead = projected_gradient(manifold.retraction(x, scale(t, v)))
    behind = projected_gradient(manifold.retraction(x, scale(-t, v)))
    finite_difference = scale(1 / (2 * t), sub(ahead, behind))
    error = fro(sub(to_numpy(hess), to_numpy(finite_difference)))
    assert error < rtol * max(1.0, fro(hess)), (
        f"|Hess - FD| = {error:.3g}, |Hess| = {fro(hess):.3g} (t = {t}, retraction {retraction})"
    )


# -- numpy and torch give the same numbers -----------------------------------------------------


def _all_outputs(case, data):
    """Every method of ``case``'s manifold on ``data`` (arrays of one backend)."""
    x, y, u, v, z = data["x"], data["y"], data["u"], data["v"], data["z"]
    manifold = case.build()
    out = {
        "projection": manifold.projection(x, z),
        "to_tangent_space": manifold.to_tangent_space(x, z),
        "euclidean_to_riemannian_gradient": manifold.euclidean_to_riemannian_gradient(x, z),
        "euclidean_to_riemannian_hessian": manifold.euclidean_to_riemannian_hessian(
            x, z, data["h"], u
        ),
        "exp": manifold.exp(x, u),
        "transport": manifold.transport(x, y, u),
        "inner_product": manifold.inner_product(x, u, v),
        "norm": manifold.norm(x, u),
        "zero_vector": manifold.zero_vector(x),
        "constraint_violation": manifold.constraint_violation(y),
    }
    for name in case.retractions:
        out[f"retraction[{name}]"] = case.build(name).retraction(x, u)
    if case.has_log:
        out["log"] = manifold.log(x, y)
        out["dist"] = manifold.dist(x, y)
    if case.has_weingarten:
        out["weingarten"] = manifold.weingarten(x, u, sub(z, manifold.projection(x, z)))
    if case.has_parallel_transport:
        out["parallel_transport"] = manifold.parallel_transport(x, u, v)
    if case.has_pair_mean:
        out["pair_mean"] = manifold.pair_mean(x, y)
    return out


@by_case
def test_numpy_and_torch_give_the_same_numbers(case):
    manifold = case.build()
    x = manifold.random_point(generator=0)
    u = scale(0.7, manifold.random_tangent_vector(x, generator=1))
    v = manifold.random_tangent_vector(x, generator=2)
    y = manifold.exp(x, scale(0.9, manifold.random_tangent_vector(x, generator=3)))
    rng = np.random.default_rng(4)
    z = [rng.standard_normal(p.shape) for p in x] if is_list(x) else rng.standard_normal(x.shape)
    h = [rng.standard_normal(p.shape) for p in x] if is_list(x) else rng.standard_normal(x.shape)
    data_np = {"x": x, "y": y, "u": u, "v": v, "z": z, "h": h}

    def torchify(a):
        return [torchify(p) for p in a] if is_list(a) else torch.from_numpy(np.array(a))

    data_t = {key: torchify(value) for key, value in data_np.items()}
    out_np, out_t = _all_outputs(case, data_np), _all_outputs(case, data_t)
    assert out_np.keys() == out_t.keys()
    for name in out_np:
        a, b = out_np[name], out_t[name]
        if isinstance(a, float):
            assert isinstance(b, float), f"{name}: torch returned {type(b).__name__}"
            assert abs(a - b) < 1e-12, f"{name}: numpy {a!r} vs torch {b!r}"
        else:
            assert_like(b, data_t["x"], f"{name} (torch)")
            assert_like(a, data_np["x"], f"{name} (numpy)")
            assert gap(a, b) < 1e-12, f"{name}: numpy and torch differ by {gap(a, b):.3g}"


# -- property-based: projection identities over random shapes ---------------------------------


@st.composite
def manifolds(draw):
    family = draw(
        st.sampled_from(["sphere", "oblique-columns", "oblique-rows", "stiefel", "grassmann"])
    )
    n = draw(st.integers(1, 6))
    if family == "sphere":
        return Sphere(n, draw(st.integers(1, 4)))
    if family.startswith("oblique"):
        return Oblique(n, draw(st.integers(1, 5)), unit=family.split("-")[1])
    p = draw(st.integers(1, n))
    k = draw(st.integers(1, 3))
    return (Stiefel if family == "stiefel" else Grassmann)(n, p, k=k)


def _tangent_residual(manifold, x, v):
    x, v = to_numpy(x), to_numpy(v)
    xt = np.swapaxes(x, -1, -2)
    if isinstance(manifold, Oblique):
        return np.sum(x * v, axis=0 if manifold.unit == "columns" else 1)
    if isinstance(manifold, Sphere):
        return np.sum(x * v)
    if isinstance(manifold, Stiefel):
        return xt @ v + np.swapaxes(v, -1, -2) @ x
    return xt @ v  # Grassmann


@settings(max_examples=40, deadline=None)
@given(manifold=manifolds(), seed=st.integers(0, 2**16), use_torch=st.booleans())
def test_projection_identities_hold_for_random_shapes(manifold, seed, use_torch):
    x = manifold.random_point(generator=seed, dtype=torch.float64 if use_torch else None)
    rng = np.random.default_rng(seed + 1)
    z = rng.standard_normal(manifold.point_shape)
    z = torch.from_numpy(z) if use_torch else z
    v = manifold.projection(x, z)
    residual = float(np.max(np.abs(_tangent_residual(manifold, x, v))))
    assert residual < 1e-12 * max(1.0, math.prod(manifold.point_shape)), residual
    assert gap(manifold.projection(x, v), v) < 1e-12
    # Pythagoras: |z|^2 = |P z|^2 + |z - P z|^2 (orthogonal projection)
    lhs = fro(z) ** 2
    rhs = fro(v) ** 2 + fro(sub(to_numpy(z), to_numpy(v))) ** 2
    assert abs(lhs - rhs) < 1e-10 * max(1.0, lhs), (lhs, rhs)
    w = manifold.projection(x, add(z, z))
    assert gap(w, scale(2.0, v)) < 1e-12, "projection is not linear"


# -- products draw independent factors ---------------------------------------------------------


@pytest.mark.parametrize("use_torch", [False, True], ids=["numpy", "torch"])
def test_product_draws_are_independent_across_equal_factors(use_torch):
    from riemann_dnn.manifolds import Product

    product = Product([Sphere(4), Sphere(4)])
    x = product.random_point(generator=1, dtype=torch.float64 if use_torch else None)
    assert gap(x[0], x[1]) > 1e-3, "random_point: both factors drew the same sample"
    same = [x[0], x[0]]
    v = product.random_tangent_vector(same, generator=5)
    assert gap(v[0], v[1]) > 1e-3, "random_tangent_vector: both factors drew the same sample"
    assert abs(product.norm(same, v) - 1) < 1e-12
    assert gap(v, product.random_tangent_vector(same, generator=5)) == 0.0


# -- CUDA: points stay on the device, numbers match the CPU ------------------------------------


@pytest.mark.gpu
@by_case
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_cuda_tensors_stay_on_device_and_match_cpu(case, dtype):
    manifold = case.build()
    x = manifold.random_point(device="cuda", dtype=dtype, generator=0)
    first = x[0] if is_list(x) else x
    assert first.device.type == "cuda" and first.dtype == dtype
    g = torch.Generator(device="cuda").manual_seed(1)
    u = scale(0.5, manifold.random_tangent_vector(x, generator=g))
    z = scale(1.0, manifold.random_tangent_vector(x, generator=g))
    y = manifold.retraction(x, u)
    outputs = {
        "projection": (manifold.projection, (x, z)),
        "retraction": (manifold.retraction, (x, u)),
        "exp": (manifold.exp, (x, u)),
        "transport": (manifold.transport, (x, y, u)),
        "euclidean_to_riemannian_hessian": (
            manifold.euclidean_to_riemannian_hessian,
            (x, z, u, u),
        ),
    }
    if case.has_log:
        outputs["log"] = (manifold.log, (x, y))
    tol = 1e-10 if dtype == torch.float64 else 1e-4

    def to_cpu64(a):
        return [to_cpu64(p) for p in a] if is_list(a) else a.detach().cpu().double()

    for name, (method, args) in outputs.items():
        on_gpu = method(*args)
        assert_like(on_gpu, x, f"{name} on cuda")
        on_cpu = method(*[to_cpu64(a) for a in args])
        assert gap(on_gpu, on_cpu) < tol, (
            f"{name}: cuda vs cpu differ by {gap(on_gpu, on_cpu):.3g}"
        )
    assert manifold.constraint_violation(y) < (1e-10 if dtype == torch.float64 else 2e-5)
    assert isinstance(manifold.inner_product(x, u, z), float)
