"""The shared Riemannian SGD step (riemann_dnn.step.sgd) against hand-written formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from riemann_dnn.manifolds import Euclidean, Grassmann, Oblique, Sphere, Stiefel
from riemann_dnn.step import SGDHyperparameters, check_sgd_hyperparameters, riemannian_sgd_step


def _rownormalize(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _table1(w: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
    """Badrinarayanan et al. (2015), Table 1: G_r = G - diag(G W^T) W, W <- rownormalize(W - lr G_r)."""
    g_r = g - np.diag(np.diag(g @ w.T)) @ w
    return _rownormalize(w - lr * g_r)


def _tangent_rows(w: np.ndarray, v: np.ndarray) -> np.ndarray:
    return v - np.sum(w * v, axis=-1, keepdims=True) * w


CASES = [
    ("oblique_rows", lambda: Oblique(5, 7, unit="rows")),
    ("oblique_columns", lambda: Oblique(7, 5, unit="columns")),
    ("sphere", lambda: Sphere(4, 6)),
    ("sphere_exp", lambda: Sphere(9, retraction="exp")),
    ("stiefel_qr", lambda: Stiefel(8, 3, retraction="qr")),
    ("stiefel_polar", lambda: Stiefel(8, 3, retraction="polar")),
    ("stiefel_cayley", lambda: Stiefel(8, 3, retraction="cayley")),
    ("grassmann", lambda: Grassmann(8, 2)),
    ("euclidean", lambda: Euclidean(3, 4)),
]
HYPER = [
    SGDHyperparameters(lr=0.1),
    SGDHyperparameters(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2),
    SGDHyperparameters(lr=0.05, momentum=0.8, nesterov=True),
]


def test_momentum_zero_oblique_rows_is_table1():
    rng = np.random.default_rng(0)
    manifold = Oblique(6, 11, unit="rows")
    w = manifold.random_point(generator=1)
    g = rng.standard_normal((6, 11))
    new, buf = riemannian_sgd_step(manifold, w, g, None, SGDHyperparameters(lr=0.3))
    expected = _table1(w, g, 0.3)
    err = np.abs(new - expected).max()
    assert buf is None
    assert err < 1e-13, f"step differs from Table 1 by {err:.3g}"


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("hp", HYPER, ids=["plain", "momentum_damp_wd", "nesterov"])
def test_numpy_step_equals_torch_step(name, make, hp):
    manifold = make()
    rng = np.random.default_rng(3)
    x = manifold.random_point(generator=2)
    g1, g2 = (rng.standard_normal(manifold.point_shape) for _ in range(2))
    # two steps, so the momentum branch (existing buffer) runs as well
    xn, mn = riemannian_sgd_step(manifold, x, g1, None, hp)
    xn, mn = riemannian_sgd_step(manifold, xn, g2, mn, hp)
    t = torch.from_numpy
    xt, mt = riemannian_sgd_step(manifold, t(x), t(g1), None, hp)
    xt, mt = riemannian_sgd_step(manifold, xt, t(g2), mt, hp)
    assert isinstance(xn, np.ndarray) and isinstance(xt, torch.Tensor)
    err = np.abs(xn - xt.numpy()).max()
    assert err < 1e-12, f"{name}: numpy and torch points differ by {err:.3g}"
    if hp.momentum:
        err = np.abs(mn - mt.numpy()).max()
        assert err < 1e-12, f"{name}: numpy and torch buffers differ by {err:.3g}"
    else:
        assert mn is None and mt is None


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_step_stays_on_manifold_and_buffer_is_tangent(name, make):
    manifold = make()
    rng = np.random.default_rng(4)
    x, m = manifold.random_point(generator=5), None
    hp = SGDHyperparameters(lr=0.2, momentum=0.9)
    for _ in range(20):
        x, m = riemannian_sgd_step(manifold, x, rng.standard_normal(x.shape), m, hp)
    assert manifold.constraint_violation(x) < 1e-12, f"{name}: off the manifold"
    off_tangent = np.abs(manifold.projection(x, m) - m).max()
    assert off_tangent < 1e-12, f"{name}: buffer not tangent (|P(m) - m| = {off_tangent:.3g})"


def test_first_momentum_buffer_is_the_riemannian_gradient_transported():
    rng = np.random.default_rng(6)
    manifold = Oblique(4, 5, unit="rows")
    w0 = manifold.random_point(generator=7)
    g = rng.standard_normal((4, 5))
    w1, buf = riemannian_sgd_step(manifold, w0, g, None, SGDHyperparameters(0.1, momentum=0.9))
    riemannian_grad = _tangent_rows(w0, g)
    np.testing.assert_allclose(w1, _rownormalize(w0 - 0.1 * riemannian_grad), atol=1e-14)
    expected = _tangent_rows(w1, riemannian_grad)
    err = np.abs(buf - expected).max()
    assert err < 1e-14, f"buffer is not P_w1(P_w0(g)): error {err:.3g}"
    # the Euclidean gradient transported would be a different vector
    assert np.abs(buf - _tangent_rows(w1, g)).max() > 1e-3


def test_momentum_nesterov_dampening_weight_decay_by_hand():
    rng = np.random.default_rng(8)
    manifold = Oblique(3, 4, unit="rows")
    w = manifold.random_point(generator=9)
    mu, tau, lr, wd = 0.7, 0.2, 0.15, 0.03
    hp = SGDHyperparameters(lr, momentum=mu, dampening=tau, weight_decay=wd)
    g1, g2 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    # hand computation
    r1 = _tangent_rows(w, g1 + wd * w)
    m = r1
    w1 = _rownormalize(w - lr * m)
    m = _tangent_rows(w1, m)
    r2 = _tangent_rows(w1, g2 + wd * w1)
    m = mu * m + (1 - tau) * r2
    w2 = _rownormalize(w1 - lr * m)
    m = _tangent_rows(w2, m)
    x, buf = riemannian_sgd_step(manifold, w, g1, None, hp)
    x, buf = riemannian_sgd_step(manifold, x, g2, buf, hp)
    assert np.abs(x - w2).max() < 1e-14 and np.abs(buf - m).max() < 1e-14
    # Nesterov: direction r + mu * m
    hp = SGDHyperparameters(lr, momentum=mu, nesterov=True)
    r = _tangent_rows(w, g1)
    expected = _rownormalize(w - lr * (r + mu * r))
    x, buf = riemannian_sgd_step(manifold, w, g1, None, hp)
    assert np.abs(x - expected).max() < 1e-14
    assert np.abs(buf - _tangent_rows(expected, r)).max() < 1e-14


def test_euclidean_step_is_torch_sgd():
    torch.manual_seed(0)
    for hp in HYPER:
        x = torch.randn(3, 4, dtype=torch.float64)
        grads = [torch.randn(3, 4, dtype=torch.float64) for _ in range(3)]
        ref = x.clone().requires_grad_()
        opt = torch.optim.SGD(
            [ref],
            lr=hp.lr,
            momentum=hp.momentum,
            dampening=hp.dampening,
            nesterov=hp.nesterov,
            weight_decay=hp.weight_decay,
        )
        manifold, buf = Euclidean(3, 4), None
        for g in grads:
            x, buf = riemannian_sgd_step(manifold, x, g, buf, hp)
            ref.grad = g.clone()
            opt.step()
        err = (x - ref.detach()).abs().max().item()
        assert err < 1e-14, f"{hp}: Euclidean step differs from torch.optim.SGD by {err:.3g}"


STACKABLE = [c for c in CASES if c[0] not in ("sphere", "sphere_exp")]


@pytest.mark.parametrize("name,make", STACKABLE, ids=[c[0] for c in STACKABLE])
def test_stacked_step_equals_per_point_steps(name, make):
    """The optimizer's foreach path steps a stack of same-shaped points in one call."""
    manifold = make()
    rng = np.random.default_rng(10)
    hp = SGDHyperparameters(lr=0.1, momentum=0.9, nesterov=True)
    xs = np.stack([manifold.random_point(generator=s) for s in range(3)])
    gs = [rng.standard_normal(xs.shape) for _ in range(2)]
    x, m = riemannian_sgd_step(manifold, xs, gs[0], None, hp)
    x, m = riemannian_sgd_step(manifold, x, gs[1], m, hp)
    for i in range(3):
        xi, mi = riemannian_sgd_step(manifold, xs[i], gs[0][i], None, hp)
        xi, mi = riemannian_sgd_step(manifold, xi, gs[1][i], mi, hp)
        err = max(np.abs(x[i] - xi).max(), np.abs(m[i] - mi).max())
        assert err < 1e-12, f"{name}: stacked step differs from point {i}'s by {err:.3g}"


@pytest.mark.parametrize(
    "values, bounds, pattern",
    [
        ((-0.5, 0, 0, False), {}, r"^O: momentum must be a finite number >= 0, got -0\.5 here$"),
        ((0.9, float("nan"), 0, False), {}, r"dampening .* got nan"),
        ((0.9, 0, -1, False), {}, r"weight_decay .* got -1"),
        ((True, 0, 0, False), {}, r"momentum .* got True"),
        ((1.0, 0, 0, False), {"momentum_below": 1}, r"momentum must be .* >= 0 and < 1"),
        ((0.5, 2, 0, False), {"dampening_at_most": 1}, r"dampening must be .* and <= 1"),
        ((0, 0, 0, True), {}, r"nesterov=True needs momentum > 0 .* momentum=0,"),
        ((0.9, 0.1, 0, True), {}, r"nesterov=True .* dampening=0\.1 here"),
    ],
)
def test_bad_hyperparameters_are_named(values, bounds, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_sgd_hyperparameters("O", *values, where=" here", **bounds)


def test_good_hyperparameters_pass_both_owners_bounds():
    check_sgd_hyperparameters("O", 5.0, 3, 0.1, False)  # torch.optim.SGD's: no upper bounds
    check_sgd_hyperparameters("O", np.float32(0.9), 0, 0, True, momentum_below=1)
    with pytest.raises(ValueError, match="^O: option momentum"):
        check_sgd_hyperparameters("O", 5.0, 0, 0, False, option=True, momentum_below=1)
