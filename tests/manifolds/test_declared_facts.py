"""The facts each manifold declares for the optimizers (``unit_norm_axis``,
``broadcasts_over_copies``, ``transports``, ``transport_name``) are true of its formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from manifold_cases import CASES, gap, is_list

from riemann_dnn.manifolds import (
    TRANSPORTS,
    Euclidean,
    Grassmann,
    Oblique,
    Product,
    Sphere,
    Stiefel,
)

COPIES = 3


def _gaussian(shape, seed):
    return torch.as_tensor(np.random.default_rng(seed).standard_normal(shape))


def _point(manifold, seed):
    return manifold.random_point(dtype=torch.float64, generator=seed)


def _tangent(manifold, point, seed):
    return manifold.random_tangent_vector(point, generator=seed)


def _stack(items):
    """Stack per-copy points (lists on a Product: factor by factor)."""
    if is_list(items[0]):
        return [torch.stack([item[k] for item in items]) for k in range(len(items[0]))]
    return torch.stack(items)


def _plain(a):
    return list(a) if is_list(a) else a


# -- unit_norm_axis ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_unit_norm_axis_holds_the_sphere_formulas(case):
    manifold = case.build()
    axis = manifold.unit_norm_axis
    if axis is None:
        return  # no claim
    ambient = _gaussian(manifold.point_shape, 0)
    x = manifold.project_point(ambient)
    norms = torch.linalg.vector_norm(x, dim=axis)
    assert (norms - 1).abs().max() < 1e-12
    # the sphere's formulas along that axis, as the fused step assumes
    v = _gaussian(manifold.point_shape, 1)
    dot = (x * v).sum(axis, keepdim=True)
    assert gap(manifold.projection(x, v), v - dot * x) < 1e-12
    u = manifold.projection(x, 0.3 * v)
    step = x + u
    expected = step / torch.linalg.vector_norm(step, dim=axis, keepdim=True)
    assert gap(manifold._retraction_normalize(x, u), expected) < 1e-12


def test_unit_norm_axes_declared():
    assert Oblique(3, 4, unit="rows").unit_norm_axis == -1
    assert Oblique(3, 4).unit_norm_axis == -2
    assert Sphere(3, 4).unit_norm_axis == (-2, -1)
    assert Sphere(5).unit_norm_axis == (-1,)
    for manifold in (Euclidean(3), Stiefel(4, 2), Grassmann(4, 2)):
        assert manifold.unit_norm_axis is None
    assert Product([Oblique(3, 4, unit="rows"), Euclidean(2)]).unit_norm_axis is None


# -- broadcasts_over_copies -------------------------------------------------------------------


def _per_copy_and_stacked(manifold, method, *inputs_per_copy):
    per_copy = [_plain(getattr(manifold, method)(*inputs)) for inputs in inputs_per_copy]
    stacked_inputs = [_stack(list(column)) for column in zip(*inputs_per_copy)]
    return _stack(per_copy), _plain(getattr(manifold, method)(*stacked_inputs))


def _formulas(manifold, xs, ys, us, gs):
    """Each point-valued formula on per-copy inputs: (name, inputs per copy)."""
    out = [
        ("projection", list(zip(xs, gs))),
        ("euclidean_to_riemannian_gradient", list(zip(xs, gs))),
        ("retraction", list(zip(xs, us))),
        ("exp", list(zip(xs, us))),
        ("transport", list(zip(xs, ys, us))),
    ]
    for name in getattr(manifold, "retractions", {}):
        if name != "exp":
            out.append((f"_retraction_{name}", list(zip(xs, us))))
    return out


@pytest.mark.parametrize("case", CASES, ids=str)
def test_broadcasts_over_copies_is_true_of_the_formulas(case):
    for transport in case.build().transports:
        manifold = case.build().with_transport(transport)
        xs = [_point(manifold, seed) for seed in range(COPIES)]
        ys = [_point(manifold, 10 + seed) for seed in range(COPIES)]
        us = [_tangent(manifold, x, 20 + k) for k, x in enumerate(xs)]
        gs = [
            _plain(manifold.random_tangent_vector(x, generator=30 + k)) for k, x in enumerate(xs)
        ]
        gs = [
            [g + 0.5 * x for g, x in zip(gk, xk)] if is_list(xk) else gk + 0.5 * xk
            for gk, xk in zip(gs, xs)
        ]  # not tangent: the projection has work to do
        gaps = {
            method: gap(*_per_copy_and_stacked(manifold, method, *inputs))
            for method, inputs in _formulas(manifold, xs, ys, us, gs)
        }
        if manifold.broadcasts_over_copies:
            assert max(gaps.values()) < 1e-12, (transport, gaps)
        else:  # the claim is not merely cautious: some formula mixes the copies
            assert max(gaps.values()) > 1e-6, (transport, gaps)


def test_broadcasting_declared():
    for manifold in (Euclidean(3), Oblique(3, 4), Stiefel(4, 2), Grassmann(4, 2)):
        assert manifold.broadcasts_over_copies is True
    assert Sphere(3, 4).broadcasts_over_copies is False
    assert Product([Oblique(3, 4), Euclidean(2)]).broadcasts_over_copies is True
    assert Product([Oblique(3, 4), Sphere(2)]).broadcasts_over_copies is False


# -- transports -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_each_declared_transport_is_built_and_carries_tangent_vectors(case):
    manifold = case.build()
    assert manifold.transport_name == "projection"
    assert set(manifold.transports) <= set(TRANSPORTS) and "projection" in manifold.transports
    x, y = _point(manifold, 0), _point(manifold, 1)
    v = _tangent(manifold, x, 2)
    for transport in manifold.transports:
        built = manifold.with_transport(transport)
        assert built.transport_name == transport
        moved = built.transport(x, y, v)
        assert case.tangent_error(y, moved) < 1e-10
        if transport == "projection":
            assert gap(moved, built.projection(y, v)) < 1e-12
        elif transport == "parallel":  # parallel transport is an isometry
            norm = float(np.sqrt(built.inner_product(y, moved, moved)))
            assert abs(norm - 1) < 1e-10
    for transport in set(TRANSPORTS) - set(manifold.transports):
        with pytest.raises(ValueError, match=transport):
            manifold.with_transport(transport)
    with pytest.raises(ValueError, match="unknown transport"):
        manifold.with_transport("teleport")


def test_transports_declared():
    for manifold in (Sphere(3), Oblique(3, 4), Grassmann(4, 1), Grassmann(4, 2, k=3)):
        assert manifold.transports == ("projection", "parallel", "differentiated")
    for manifold in (
        Sphere(3, retraction="exp"),
        Oblique(3, 4, retraction="exp"),
        Grassmann(4, 2, retraction="exp"),
    ):
        assert manifold.transports == ("projection", "parallel")
    for manifold in (Euclidean(3), Stiefel(4, 2)):
        assert manifold.transports == ("projection",)
    mixed = Product([Oblique(3, 4).with_transport("parallel"), Euclidean(2)])
    assert mixed.transports == ("projection",)
    assert mixed.transport_name == "mixed"
    spheres = Product([Oblique(3, 4), Sphere(2)]).with_transport("parallel")
    assert spheres.transport_name == "parallel"
    assert [m.transport_name for m in spheres.manifolds] == ["parallel", "parallel"]
    with pytest.raises(ValueError, match="every factor"):
        Product([Oblique(3, 4), Stiefel(4, 2)]).with_transport("parallel")


# -- is_flat, orthonormal_columns -------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_is_flat_and_orthonormal_columns_are_true_of_the_points(case):
    manifold = case.build()
    if is_list(_point(manifold, 0)):
        pytest.skip("a product declares no such fact")
    point = _point(manifold, 0)
    vector = _gaussian(tuple(point.shape), 1)
    if getattr(manifold, "is_flat", False):
        assert gap(manifold.projection(point, vector), vector) == 0
    if getattr(manifold, "orthonormal_columns", False):
        gram = point.transpose(-1, -2) @ point
        assert float((gram - torch.eye(gram.shape[-1], dtype=gram.dtype)).abs().max()) < 1e-12


def test_flat_and_orthonormal_columns_declared():
    assert Euclidean(3, 2).is_flat and not Oblique(3, 2).is_flat
    assert Stiefel(4, 2).orthonormal_columns and Grassmann(4, 2).orthonormal_columns
    assert not any(m.orthonormal_columns for m in (Oblique(3, 2), Sphere(3), Euclidean(3)))


def test_with_retraction_keeps_the_transport_or_names_the_fix():
    grassmann = Grassmann(6, 2).with_transport("differentiated")
    qr = grassmann.with_retraction("qr")
    assert (qr.retraction_name, qr.transport_name) == ("qr", "differentiated")
    assert grassmann.retraction_name == "polar"  # a copy
    with pytest.raises(ValueError, match=r"retraction 'exp' has no transport 'differentiated'"):
        grassmann.with_retraction("exp")
    with pytest.raises(ValueError, match="unknown retraction 'cayley'"):
        grassmann.with_retraction("cayley")


@pytest.mark.parametrize(
    "manifold",
    [
        Sphere(5),
        Oblique(4, 6, unit="rows"),
        Oblique(4, 6),
        Grassmann(9, 3, retraction="polar"),
        Grassmann(9, 3, retraction="qr"),
        Grassmann(9, 1, k=3, retraction="qr"),
    ],
    ids=repr,
)
def test_differentiated_transport_is_the_derivative_of_the_retraction(manifold):
    """T_{x->y}(v) = D R_x(u)[v] at y = R_x(u): central differences of the retraction (their
    horizontal part, the lift at the basis y, on Grassmann)."""
    manifold = manifold.with_transport("differentiated")
    x = _point(manifold, 0)
    u = 0.7 * _tangent(manifold, x, 1)
    v = _tangent(manifold, x, 2)
    y, h = manifold.retraction(x, u), 1e-6
    difference = (manifold.retraction(x, u + h * v) - manifold.retraction(x, u - h * v)) / (2 * h)
    assert gap(manifold.transport(x, y, v), manifold.projection(y, difference)) < 1e-8


@pytest.mark.parametrize("p, k", [(1, 1), (3, 1), (3, 2)])
def test_grassmann_parallel_transport_solves_the_transport_equation(p, k):
    """Parallel transport along the geodesic equals the limit of projecting the vector onto
    each tangent space of a fine path (first order: error ~ 1/steps), then moved to the basis
    the retraction returned; it is an isometry onto the horizontal space at y."""
    manifold = Grassmann(9, p, k=k, retraction="qr", transport="parallel")
    x = _point(manifold, 0)
    u = 0.7 * _tangent(manifold, x, 1)
    v, w = _tangent(manifold, x, 2), _tangent(manifold, x, 3)
    y = manifold.retraction(x, u)
    moved = manifold.transport(x, y, v)
    errors = []
    for steps in (250, 500):
        path, vector = x, v
        log = manifold.log(x, y)
        for index in range(1, steps + 1):
            path = manifold.exp(x, log * (index / steps))
            vector = manifold.projection(path, vector)
        errors.append(gap(vector @ (path.transpose(-1, -2) @ y), moved))
    assert errors[1] < 0.6 * errors[0] and errors[1] < 2e-4, errors
    assert (
        abs(
            manifold.inner_product(y, moved, manifold.transport(x, y, w))
            - manifold.inner_product(x, v, w)
        )
        < 1e-12
    )
    assert gap(manifold.projection(y, moved), moved) < 1e-12
