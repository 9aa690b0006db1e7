"""The Riemannian Adam step (riemann_dnn.step.adam): geoopt's RiemannianAdam on spheres,
oblique rows and Stiefel, torch's Adam/AdamW on Euclidean space, and its in-place kernel."""

import math

import geoopt
import numpy as np
import pytest
import torch

from riemann_dnn.manifolds import Euclidean, Grassmann, Oblique, Sphere, Stiefel
from riemann_dnn.step.adam import (
    AdamHyperparameters,
    AdamState,
    check_adam_hyperparameters,
    riemannian_adam_step,
    second_moment_axes,
    sphere_adam_step_,
)

GRID = [
    dict(lr=1e-2),
    dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-2, weight_decay=0.1, amsgrad=True),
    dict(lr=0.2, betas=(0.5, 0.9), amsgrad=True),
]
# (name, ours, geoopt's, point shape): geoopt's Sphere normalises the last axis, so on a
# matrix it is our Oblique with unit rows; its Euclidean-metric Stiefel with the QR
# retraction and projection transport is ours.
CASES = [
    ("sphere", Sphere(9), geoopt.Sphere(), (9,)),
    ("oblique", Oblique(5, 12, unit="rows"), geoopt.Sphere(), (5, 12)),
    ("stiefel", Stiefel(8, 3), geoopt.EuclideanStiefel(), (8, 3)),
]


def _hp(kw) -> AdamHyperparameters:
    return AdamHyperparameters(
        kw["lr"],
        kw.get("betas", (0.9, 0.999)),
        kw.get("eps", 1e-8),
        kw.get("weight_decay", 0.0),
        kw.get("amsgrad", False),
    )


def _problem(manifold, shape, steps, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x0 = manifold.random_point(dtype=dtype, generator=gen)
    # a fixed quadratic pull plus noise, so that moments build up along a direction
    target = torch.randn(shape, generator=gen, dtype=dtype)
    noise = [0.3 * torch.randn(shape, generator=gen, dtype=dtype) for _ in range(steps)]
    return x0, target, noise


def _geoopt(manifold, x0, target, noise, kw):
    p = geoopt.ManifoldParameter(x0.clone(), manifold=manifold)
    opt = geoopt.optim.RiemannianAdam([p], **kw)
    for n in noise:
        p.grad = (p.detach() - target) + n  # geoopt adds weight decay into .grad in place
        opt.step()
    return p.detach()


def _ours(manifold, x0, target, noise, hp, maximize=False):
    x, state = x0.clone(), None
    for t, n in enumerate(noise, 1):
        g = (x - target) + n
        x, state = riemannian_adam_step(
            manifold, x, -g if maximize else g, state, t, hp, maximize=maximize
        )
    return x, state


@pytest.mark.parametrize("kw", GRID, ids=str)
@pytest.mark.parametrize("name, manifold, theirs, shape", CASES, ids=[c[0] for c in CASES])
def test_matches_geoopt_riemannian_adam_over_100_steps(name, manifold, theirs, shape, kw):
    x0, target, noise = _problem(manifold, shape, 100)
    expected = _geoopt(theirs, x0, target, noise, kw)
    got, _ = _ours(manifold, x0, target, noise, _hp(kw))
    rel = ((got - expected).norm() / expected.norm()).item()
    assert rel <= 1e-6, f"{name} {kw}: relative difference {rel:.3g} from geoopt"
    assert manifold.constraint_violation(got) < 1e-12


@pytest.mark.parametrize("kw", GRID, ids=str)
@pytest.mark.parametrize("name, manifold, theirs, shape", CASES[:2], ids=["sphere", "oblique"])
def test_in_place_sphere_kernel_matches_geoopt(name, manifold, theirs, shape, kw):
    x0, target, noise = _problem(manifold, shape, 100, seed=1)
    expected = _geoopt(theirs, x0, target, noise, kw)
    axis = manifold.unit_norm_axis
    x, m = x0.clone(), torch.zeros(shape, dtype=torch.float64)
    v = torch.zeros(shape[:-1] + (1,), dtype=torch.float64)
    vmax = torch.zeros_like(v) if kw.get("amsgrad") else None
    for t, n in enumerate(noise, 1):
        sphere_adam_step_(x, (x - target) + n, m, v, vmax, axis, t, _hp(kw))
    rel = ((x - expected).norm() / expected.norm()).item()
    assert rel <= 1e-6, f"{name} {kw}: relative difference {rel:.3g} from geoopt"


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("kw", GRID, ids=str)
def test_euclidean_step_is_torch_adam(kw, decoupled):
    gen = torch.Generator().manual_seed(2)
    shape = (4, 6)
    x0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(50)]
    p = x0.clone().requires_grad_()
    opt = torch.optim.Adam([p], decoupled_weight_decay=decoupled, **{"weight_decay": 0.05, **kw})
    hp = _hp({"weight_decay": 0.05, **kw})._replace(decoupled_weight_decay=decoupled)
    x, state = x0.clone(), None
    for t, g in enumerate(grads, 1):
        p.grad = g.clone()
        opt.step()
        x, state = riemannian_adam_step(Euclidean(*shape), x, g, state, t, hp)
    err = (x - p.detach()).abs().max().item()
    assert err <= 1e-13, f"{kw} decoupled={decoupled}: differs from torch.optim.Adam by {err:.3g}"
    assert torch.allclose(state.exp_avg_sq, opt.state[p]["exp_avg_sq"], rtol=1e-12, atol=0)


def test_maximize_is_the_step_of_the_negated_gradient():
    manifold = Oblique(4, 7, unit="rows")
    x0, target, noise = _problem(manifold, (4, 7), 20, seed=3)
    hp = _hp(dict(lr=0.05, weight_decay=0.01))
    up, _ = _ours(manifold, x0, target, noise, hp, maximize=True)
    down, _ = _ours(manifold, x0, target, noise, hp)
    assert torch.allclose(up, down, rtol=0, atol=1e-14), (up - down).abs().max()


@pytest.mark.parametrize("manifold", [Sphere(3, 4), Oblique(3, 4, unit="rows"), Stiefel(5, 2)])
def test_decoupled_weight_decay_does_nothing_on_fixed_norm_manifolds(manifold):
    """P_x(x) = 0 where the norm is fixed: AdamW's decay leaves the step unchanged."""
    shape = manifold.point_shape
    x0, target, noise = _problem(manifold, shape, 10, seed=4)
    plain, _ = _ours(manifold, x0, target, noise, _hp(dict(lr=0.05)))
    hp = _hp(dict(lr=0.05, weight_decay=0.5))._replace(decoupled_weight_decay=True)
    decayed, _ = _ours(manifold, x0, target, noise, hp)
    assert torch.allclose(plain, decayed, rtol=0, atol=1e-12), (plain - decayed).abs().max()


def test_second_moment_is_one_value_per_component():
    assert second_moment_axes(Euclidean(3, 4)) == "elementwise"
    assert second_moment_axes(Oblique(3, 4, unit="rows")) == -1
    assert second_moment_axes(Oblique(3, 4)) == -2
    assert second_moment_axes(Sphere(3, 4)) == (-2, -1)
    assert second_moment_axes(Stiefel(5, 2, k=3)) == (-2, -1)
    assert second_moment_axes(Grassmann(5, 2)) == (-2, -1)
    manifold = Oblique(3, 4, unit="rows")
    x = manifold.random_point(generator=0)
    _, state = riemannian_adam_step(
        manifold, x, np.ones((3, 4)), None, 1, AdamHyperparameters(0.1)
    )
    assert state.exp_avg_sq.shape == (3, 1)
    r = manifold.euclidean_to_riemannian_gradient(x, np.ones((3, 4)))
    np.testing.assert_allclose(state.exp_avg_sq[:, 0], 0.001 * (r**2).sum(1), rtol=1e-12)


def test_numpy_and_torch_give_the_same_step():
    manifold = Stiefel(6, 2)
    x0, target, noise = _problem(manifold, (6, 2), 5, seed=5)
    hp = _hp(dict(lr=0.05, amsgrad=True))
    x_t, x_n, s_t, s_n = x0.clone(), x0.numpy().copy(), None, None
    for t, n in enumerate(noise, 1):
        x_t, s_t = riemannian_adam_step(manifold, x_t, (x_t - target) + n, s_t, t, hp)
        g = (x_n - target.numpy()) + n.numpy()
        x_n, s_n = riemannian_adam_step(manifold, x_n, g, s_n, t, hp)
    assert isinstance(x_n, np.ndarray) and isinstance(s_n, AdamState)
    np.testing.assert_allclose(x_t.numpy(), x_n, rtol=0, atol=1e-13)


def test_a_rate_per_stacked_copy_equals_separate_steps():
    manifold = Oblique(3, 5, unit="rows")
    gen = torch.Generator().manual_seed(6)
    xs = torch.stack([manifold.random_point(dtype=torch.float64, generator=gen) for _ in range(3)])
    rates = torch.tensor([0.1, 0.0, 0.02], dtype=torch.float64)
    grads = [torch.randn(xs.shape, generator=gen, dtype=torch.float64) for _ in range(4)]
    stacked, state = xs.clone(), None
    hp = AdamHyperparameters(rates.view(3, 1, 1), amsgrad=True)
    for t, g in enumerate(grads, 1):
        stacked, state = riemannian_adam_step(manifold, stacked, g, state, t, hp)
    for k in range(3):
        x, s = xs[k], None
        for t, g in enumerate(grads, 1):
            x, s = riemannian_adam_step(manifold, x, g[k], s, t, hp._replace(lr=float(rates[k])))
        assert torch.allclose(stacked[k], x, rtol=0, atol=1e-14), k
    assert torch.allclose(stacked[1], xs[1], rtol=0, atol=1e-15), "a copy with rate 0 moved"


@pytest.mark.parametrize(
    "betas, eps, weight_decay, message",
    [
        ((1.0, 0.9), 1e-8, 0, r"Invalid beta parameter at index 0: 1.0; betas\[0\] must be a"),
        ((0.9, -0.1), 1e-8, 0, r"Invalid beta parameter at index 1: -0.1; .* in \[0, 1\)"),
        ((0.9,), 1e-8, 0, r"betas must be a pair"),
        ((0.9, 0.99), math.nan, 0, r"Invalid epsilon value: nan; eps must be a finite number"),
        ((0.9, 0.99), 1e-8, -1, r"Invalid weight_decay value: -1; weight_decay must be"),
    ],
)
def test_bad_hyperparameters_are_named(betas, eps, weight_decay, message):
    with pytest.raises(ValueError, match=message):
        check_adam_hyperparameters("RiemannianAdam", betas, eps, weight_decay)
