"""Retractions: on the manifold, R(x, 0) = x, R'(x, 0) = id, and agreement with exp to the
order each class claims in ``retractions`` (measured as a log-log slope); exp itself is
checked to be a geodesic (acceleration normal to the manifold).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from manifold_cases import (
    BACKENDS,
    CASES,
    FLOAT64_BACKENDS,
    RETRACTION_CASES,
    add,
    assert_like,
    fro,
    gap,
    loglog_slope,
    scale,
    sub,
    to_numpy,
)

from riemann_dnn.manifolds import Grassmann, Oblique, Sphere, Stiefel

by_retraction = pytest.mark.parametrize(
    "case, retraction", RETRACTION_CASES, ids=[f"{c}-{r}" for c, r in RETRACTION_CASES]
)
by_backend = pytest.mark.parametrize("backend", BACKENDS, ids=str)
by_f64_backend = pytest.mark.parametrize("backend", FLOAT64_BACKENDS, ids=str)

# steps t = 10^-1 ... 10^-3: e(t) ~ t^2 (first order) or t^3 (second order) stays far above
# float64 rounding (~1e-16) over the whole range
STEPS = np.logspace(-1, -3, 9)
SLOPE_MARGIN = 0.3


def _mT(a):
    return np.swapaxes(a, -1, -2)


# -- basic properties ---------------------------------------------------------------------------


@by_retraction
@by_backend
def test_retraction_lands_on_manifold(case, retraction, backend):
    manifold = case.build(retraction)
    x = backend.random_point(manifold, 0)
    for length in (0.1, 1.0, 3.0):
        u = scale(length, manifold.random_tangent_vector(x, generator=1))
        y = manifold.retraction(x, u)
        assert_like(y, x, f"retraction {retraction}")
        violation = manifold.constraint_violation(y)
        assert violation < backend.tol * 10, (
            f"|u| = {length}: R(x, u) off the manifold by {violation:.3g}"
        )


@by_retraction
@by_backend
def test_retraction_of_zero_is_the_point(case, retraction, backend):
    manifold = case.build(retraction)
    x = backend.random_point(manifold, 0)
    y = manifold.retraction(x, manifold.zero_vector(x))
    assert gap(y, x) < backend.tol, f"R(x, 0) - x = {gap(y, x):.3g}"


@by_retraction
@by_f64_backend
def test_retraction_velocity_at_zero_is_the_tangent_vector(case, retraction, backend):
    """dR(x, tv)/dt at t = 0 equals v (central differences, error O(t^2))."""
    manifold = case.build(retraction)
    x = backend.random_point(manifold, 0)
    v = manifold.random_tangent_vector(x, generator=1)
    t = 1e-5
    velocity = scale(
        1 / (2 * t),
        sub(
            to_numpy(manifold.retraction(x, scale(t, v))),
            to_numpy(manifold.retraction(x, scale(-t, v))),
        ),
    )
    assert gap(velocity, v) < 1e-8, f"R'(x, 0)[v] - v = {gap(velocity, v):.3g}"


def test_retraction_names_and_orders_are_exposed():
    for manifold_class in (Sphere, Oblique, Stiefel, Grassmann):
        assert manifold_class.default_retraction in manifold_class.retractions
        assert manifold_class.retractions["exp"] == float("inf")
    stiefel = Stiefel(5, 2, retraction="cayley")
    assert stiefel.retraction_name == "cayley" and stiefel.retraction_order == 1
    assert Stiefel(5, 2).retraction_name == "qr"  # pymanopt's default
    assert Grassmann(5, 2).retraction_name == "polar"  # pymanopt's (only) retraction
    assert Sphere(3).retraction_name == "normalize"
    assert Oblique(3, 4, unit="rows").retraction_name == "normalize"


# -- agreement with exp -------------------------------------------------------------------------


def _exp_gap_slope(case, manifold, x, v, steps=STEPS):
    errors = np.array(
        [
            case.distance(
                manifold, manifold.retraction(x, scale(t, v)), manifold.exp(x, scale(t, v))
            )
            for t in steps
        ]
    )
    assert np.all(errors > 0), f"retraction equals exp exactly at some step: {errors}"
    return loglog_slope(steps, errors), errors


@pytest.mark.parametrize(
    "case, retraction",
    [(c, r) for c, r in RETRACTION_CASES if np.isfinite(c.retractions[r])],
    ids=[f"{c}-{r}" for c, r in RETRACTION_CASES if np.isfinite(c.retractions[r])],
)
@by_f64_backend
def test_retraction_agrees_with_exp_to_its_claimed_order(case, retraction, backend):
    """e(t) = d(R(x, tv), exp(x, tv)) ~ t^(order + 1): the log-log slope of e against t is the
    claimed order + 1 (Grassmann: geodesic distance between subspaces; else Frobenius).
    Random tangent vectors have a non-trivial X^T U on Stiefel (the generic case)."""
    manifold = case.build(retraction)
    order = case.retractions[retraction]
    x = backend.random_point(manifold, 0)
    v = manifold.random_tangent_vector(x, generator=1)
    if case.family == "stiefel":
        skew_part = fro(_mT(to_numpy(x)) @ to_numpy(v))
        assert skew_part > 0.1, f"|X^T U| = {skew_part}: the test needs a generic U"
    slope, errors = _exp_gap_slope(case, manifold, x, v)
    print(f"slope {case} {retraction}: {slope:.3f} (claimed order {order})")
    assert abs(slope - (order + 1)) < SLOPE_MARGIN, (
        f"{case} {retraction}: log-log slope {slope:.3f}, claimed order {order} wants "
        f"{order + 1}; errors {errors}"
    )


@by_f64_backend
@pytest.mark.parametrize("k", [1, 2])
def test_exp_retraction_is_exp(k, backend):
    for manifold_class, name in ((Stiefel, "exp"), (Grassmann, "exp")):
        manifold = manifold_class(5, 2, k=k, retraction=name)
        x = backend.random_point(manifold, 0)
        v = scale(0.7, manifold.random_tangent_vector(x, generator=1))
        assert gap(manifold.retraction(x, v), manifold.exp(x, v)) == 0.0


def _horizontal(manifold, x, seed):
    """A unit tangent vector with X^T U = 0 (the normal-space part of St(n, p))."""
    z = to_numpy(manifold.random_tangent_vector(x, generator=seed))
    xn = to_numpy(x)
    u = z - xn @ (_mT(xn) @ z)
    u = u / np.linalg.norm(u)
    return torch.from_numpy(u) if isinstance(x, torch.Tensor) else u


STIEFEL_CASES = [c for c in CASES if c.family == "stiefel"]


@pytest.mark.parametrize("case", STIEFEL_CASES, ids=str)
@by_f64_backend
def test_cayley_is_second_order_when_xtu_is_zero(case, backend):
    """Derivation: R(t) = (I - t/2 W)^{-1}(I + t/2 W)X has R'(0) = WX = U and R''(0) = W^2 X.
    With Ω = X^T U skew and PU = U - XΩ/2, W^2 X = WU = UΩ - XΩ² - XU^TU, while the geodesic
    has c''(0) = -XU^TU. The tangent part UΩ - XΩ² of the difference vanishes iff Ω = 0:
    Cayley is first order in general and second order for X^T U = 0 (always when p = 1)."""
    manifold = case.build("cayley")
    x = backend.random_point(manifold, 0)
    u = _horizontal(manifold, x, 1)
    assert float(np.max(np.abs(_mT(to_numpy(x)) @ to_numpy(u)))) < 1e-12
    slope, errors = _exp_gap_slope(case, manifold, x, u)
    print(f"slope {case} cayley X^TU=0: {slope:.3f}")
    assert abs(slope - 3) < SLOPE_MARGIN, f"cayley with X^T U = 0: slope {slope:.3f} ({errors})"


@pytest.mark.parametrize("case", STIEFEL_CASES, ids=str)
def test_qr_stays_first_order_when_xtu_is_zero(case):
    """qf(X + tU) with X^T U = 0: (X + tU)^T(X + tU) = I + t^2 U^TU = R^T R, so
    R = I + t^2 T (T upper triangular, T + T^T = U^TU) and qf = X + tU - t^2 XT + O(t^3),
    against the geodesic's X + tU - t^2/2 XU^TU: they differ by t^2 X skew(T) != 0 for p > 1."""
    manifold = case.build("qr")
    x = manifold.random_point(generator=0)
    u = _horizontal(manifold, x, 1)
    slope, errors = _exp_gap_slope(case, manifold, x, u)
    print(f"slope {case} qr X^TU=0: {slope:.3f}")
    assert abs(slope - 2) < SLOPE_MARGIN, f"qr with X^T U = 0: slope {slope:.3f} ({errors})"


@pytest.mark.parametrize("retraction", ["qr", "cayley", "polar"])
def test_stiefel_retractions_are_second_order_for_single_columns(retraction):
    """For p = 1, X^T U = 0 always and qf/polar/Cayley all reduce to (x + u)/|x + u| (the
    sphere's second-order retraction) -- why the order claims are tested with p = 3."""
    manifold = Stiefel(6, 1, retraction=retraction)
    x = manifold.random_point(generator=0)
    v = manifold.random_tangent_vector(x, generator=1)
    normalized = (x + v) / np.linalg.norm(x + v)
    if retraction != "cayley":
        assert gap(manifold.retraction(x, v), normalized) < 1e-12
    errors = np.array([fro(manifold.retraction(x, t * v) - manifold.exp(x, t * v)) for t in STEPS])
    slope = loglog_slope(STEPS, errors)
    assert abs(slope - 3) < SLOPE_MARGIN, f"St(6,1) {retraction}: slope {slope:.3f}"


# -- exp is a geodesic --------------------------------------------------------------------------


def _normal_part_free(case, point, vector) -> np.ndarray:
    """Tangential part (numpy, independent formulas) of ``vector`` at ``point``."""
    x, a = to_numpy(point), to_numpy(vector)
    if case.family == "euclidean":
        return a
    if case.family == "sphere":
        return a - np.sum(x * a) * x
    if case.family == "oblique":
        axis = 0 if case.name.startswith("oblique-columns") else 1
        return a - np.sum(x * a, axis=axis, keepdims=True) * x
    if case.family in ("stiefel", "grassmann"):  # Stiefel's tangent space holds both
        xta = _mT(x) @ a
        return a - x @ ((xta + _mT(xta)) / 2)
    # product: oblique rows x Euclidean
    return np.concatenate(
        [(a[0] - np.sum(x[0] * a[0], axis=1, keepdims=True) * x[0]).ravel(), a[1].ravel()]
    )


@pytest.mark.parametrize("case", CASES, ids=str)
@by_f64_backend
def test_exp_is_a_geodesic(case, backend):
    """c(t) = exp(x, t v): c(0) = x, c'(0) = v, |c'| constant and c''(t) normal to the manifold
    (the geodesic equation of a Riemannian submanifold), by central differences at t = 0.8."""
    manifold = case.build()
    x = backend.random_point(manifold, 0)
    v = manifold.random_tangent_vector(x, generator=1)
    h, t = 1e-4, 0.8

    def c(s):
        return to_numpy(manifold.exp(x, scale(s, v)))

    velocity0 = scale(1 / (2 * h), sub(c(h), c(-h)))
    assert gap(velocity0, v) < 1e-7, f"c'(0) - v = {gap(velocity0, v):.3g}"
    ct = c(t)
    accel = scale(1 / h**2, add(sub(c(t + h), scale(2.0, ct)), c(t - h)))
    tangential = _normal_part_free(case, ct, accel)
    size = float(
        np.max(
            np.abs(
                np.concatenate([np.ravel(p) for p in tangential])
                if isinstance(tangential, list)
                else tangential
            )
        )
    )
    assert size < 1e-5, f"tangential part of c''({t}) = {size:.3g} (geodesics have none)"
    speed = fro(scale(1 / (2 * h), sub(c(t + h), c(t - h))))
    assert abs(speed - 1) < 1e-7, f"|c'({t})| = {speed}, |v| = 1"


# -- property-based -----------------------------------------------------------------------------


@st.composite
def retraction_setups(draw):
    family = draw(st.sampled_from(["sphere", "oblique", "stiefel", "grassmann"]))
    n = draw(st.integers(2, 6))
    if family == "sphere":
        manifold_class, args, kwargs = Sphere, (n,), {}
    elif family == "oblique":
        unit = draw(st.sampled_from(["columns", "rows"]))
        manifold_class, args, kwargs = Oblique, (n, draw(st.integers(2, 5))), {"unit": unit}
    else:
        manifold_class = Stiefel if family == "stiefel" else Grassmann
        p = draw(st.integers(1, n if family == "stiefel" else n - 1))  # keep dim > 0
        args, kwargs = (n, p), {"k": draw(st.integers(1, 2))}
    retraction = draw(st.sampled_from(sorted(manifold_class.retractions)))
    return manifold_class(*args, retraction=retraction, **kwargs)


@settings(max_examples=40, deadline=None)
@given(
    manifold=retraction_setups(),
    seed=st.integers(0, 2**16),
    length=st.floats(1e-3, 5.0),
    use_torch=st.booleans(),
)
def test_retraction_identities_hold_for_random_shapes(manifold, seed, length, use_torch):
    x = manifold.random_point(generator=seed, dtype=torch.float64 if use_torch else None)
    v = manifold.random_tangent_vector(x, generator=seed + 1) * length
    y = manifold.retraction(x, v)
    assert_like(y, x, manifold.retraction_name)
    assert manifold.constraint_violation(y) < 1e-10, (
        f"{manifold!r}: violation {manifold.constraint_violation(y):.3g}"
    )
    assert gap(manifold.retraction(x, manifold.zero_vector(x)), x) < 1e-12
