"""The fused in-place sphere step equals the shared step it specialises."""

import pytest
import torch

from riemann_dnn.manifolds import Euclidean, Oblique, Sphere, Stiefel
from riemann_dnn.step import (
    SGDHyperparameters,
    riemannian_sgd_step,
    sphere_sgd_step_,
    unit_norm_axis,
)

CASES = [
    ("oblique rows", Oblique(6, 9, unit="rows")),
    ("oblique columns", Oblique(6, 9, unit="columns")),
    ("sphere", Sphere(4, 5)),
]
HYPER = [
    SGDHyperparameters(0.1),
    SGDHyperparameters(0.1, weight_decay=0.01),
    SGDHyperparameters(0.1, momentum=0.9),
    SGDHyperparameters(0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
    SGDHyperparameters(0.1, momentum=0.9, nesterov=True),
]


@pytest.mark.parametrize("name, manifold", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize(
    "hp",
    HYPER,
    ids=lambda hp: f"mu{hp.momentum}-wd{hp.weight_decay}-nest{hp.nesterov}-damp{hp.dampening}",
)
def test_fused_step_equals_shared_step_over_several_steps(name, manifold, hp):
    gen = torch.Generator().manual_seed(0)
    x_ref = manifold.random_point(dtype=torch.float64, generator=gen)
    x = x_ref.clone()
    axis = unit_norm_axis(manifold)
    buf_ref = buf = None
    for _ in range(4):
        g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        x_ref, buf_ref = riemannian_sgd_step(manifold, x_ref, g, buf_ref, hp)
        buf = sphere_sgd_step_(x, g, buf, axis, hp)
        assert torch.allclose(x, x_ref, atol=1e-13), (x - x_ref).abs().max()
        if hp.momentum:
            assert torch.allclose(buf, buf_ref, atol=1e-13), (buf - buf_ref).abs().max()
        else:
            assert buf is None


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fused_step_takes_one_rate_per_stacked_copy(momentum):
    manifold = Oblique(5, 7, unit="rows")
    gen = torch.Generator().manual_seed(1)
    xs = torch.stack([manifold.random_point(dtype=torch.float64, generator=gen) for _ in range(3)])
    gs = torch.randn(xs.shape, generator=gen, dtype=torch.float64)
    rates = torch.tensor([0.3, 0.0, 0.01], dtype=torch.float64)
    stacked = xs.clone()
    sphere_sgd_step_(
        stacked, gs, None, -1, SGDHyperparameters(rates.view(3, 1, 1), momentum=momentum)
    )
    for i, rate in enumerate(rates.tolist()):
        single, _ = riemannian_sgd_step(
            manifold, xs[i], gs[i], None, SGDHyperparameters(rate, momentum=momentum)
        )
        assert torch.allclose(stacked[i], single, atol=1e-13)


def test_only_unit_norm_manifolds_with_normalize_and_projection_qualify():
    assert unit_norm_axis(Oblique(3, 4, unit="rows")) == -1
    assert unit_norm_axis(Oblique(3, 4)) == -2
    assert unit_norm_axis(Sphere(3, 4)) == (-2, -1)
    assert unit_norm_axis(Oblique(3, 4, retraction="exp")) is None
    assert unit_norm_axis(Oblique(3, 4).with_transport("parallel")) is None
    assert unit_norm_axis(Stiefel(4, 3)) is None
    assert unit_norm_axis(Euclidean(3)) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("axis", [-1, (-1,), (-2, -1)])
def test_nonfinite_points_marks_exactly_the_points_holding_inf_or_nan(dtype, axis):
    """Max and min of a point are finite iff every entry is: the same marks as the largest
    magnitude's (NaN, +inf and -inf alone or together, and huge finite entries whose sum
    would overflow), without its full-size temporary."""
    from riemann_dnn.step.fused import nonfinite_points

    gen = torch.Generator().manual_seed(0)
    t = torch.randn(3, 6, 5, generator=gen).to(dtype)
    t[0, 1, 2] = float("nan")
    t[1, 4, 0] = float("inf")
    t[1, 4, 1] = -float("inf")
    t[2, 0, 3] = -float("inf")
    t[2, 5] = torch.finfo(dtype).max  # finite, though its sum is not
    expected = ~torch.isfinite(t.abs().amax(dim=axis, keepdim=True))
    got = nonfinite_points(t, axis)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
    assert int(got.sum()) == 3  # rows (or points) 0, 1 and 2 each hold one
