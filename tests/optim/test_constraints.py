"""Training with other constraints than the oblique one: Stiefel filters (any retraction)
and the Grassmann/sphere view with the exponential map and parallel transport of momentum
(Cho & Lee 2017's SGD-G), through RiemannianSGD, the shared step and the Ensemble trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from riemann_dnn.experiments.ensemble import Ensemble
from riemann_dnn.manifolds import Grassmann, Oblique, Sphere, Stiefel
from riemann_dnn.models import ArchBN
from riemann_dnn.optim import RiemannianSGD
from riemann_dnn.params import param_groups, resolve_geometry
from riemann_dnn.step import SGDHyperparameters, riemannian_sgd_step


def _bn_mlp(seed: int) -> nn.Sequential:
    """Two BN-fed layers: 20 -> 16 (out <= in: orthonormal rows) and 16 -> 24 (out > in:
    orthonormal columns), then a Euclidean classifier."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(20, 16, bias=False),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 24, bias=False),
        nn.BatchNorm1d(24),
        nn.ReLU(),
        nn.Linear(24, 4),
    )


def _data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 20, generator=gen)
    y = (x[:, 0] * x[:, 1] > 0).long() + 2 * (x[:, 2] > 0).long()
    return x, y


def _orthonormality(model) -> tuple[float, float]:
    w1, w2 = model[0].weight.detach(), model[3].weight.detach()
    rows = float((w1 @ w1.T - torch.eye(16)).abs().max())
    columns = float((w2.T @ w2 - torch.eye(16)).abs().max())
    return rows, columns


# -- Stiefel --------------------------------------------------------------------------------------


def test_stiefel_geometry_uses_rows_when_out_le_in_else_columns():
    wide, tall = torch.zeros(16, 20), torch.zeros(24, 16)
    rows = resolve_geometry("stiefel", "polar", wide)
    assert isinstance(rows.manifold, Stiefel) and rows.manifold.point_shape == (20, 16)
    assert rows.view(wide).shape == (20, 16)  # W^T in St(20, 16): W W^T = I
    columns = resolve_geometry("stiefel", "cayley", tall)
    assert columns.manifold.point_shape == (24, 16) and columns.view(tall).shape == (24, 16)
    conv = resolve_geometry("stiefel", None, torch.zeros(8, 3, 3, 3))  # 8 filters of 27
    assert conv.manifold.point_shape == (27, 8) and conv.manifold.retraction_name == "qr"
    # a Stiefel object for W^T is accepted as such
    assert resolve_geometry(Stiefel(20, 16), None, wide).view(wide).shape == (20, 16)


@pytest.mark.parametrize("retraction", ["qr", "polar", "cayley", "exp"])
def test_stiefel_training_keeps_filters_orthonormal_in_float32(retraction):
    """2,000 float32 steps with momentum: W W^T = I (first layer) and W^T W = I (second)
    within 1e-5, and the loss falls well below its start."""
    x, y = _data()
    model = _bn_mlp(0)
    groups = param_groups(model, manifold="stiefel", retraction=retraction, example_input=x)
    opt = RiemannianSGD(groups, lr=0.1, momentum=0.9)
    assert max(_orthonormality(model)) < 1e-5, "project_initial maps onto Stiefel"
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(2000):
        batch = torch.randint(0, 512, (64,), generator=gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    rows, columns = _orthonormality(model)
    assert rows < 1e-5 and columns < 1e-5, (
        f"{retraction}: |W W^T - I| = {rows:.2e}, |W^T W - I| = {columns:.2e} after 2000 steps"
    )
    start, end = np.mean(losses[:50]), np.mean(losses[-200:])
    assert end < 0.6 * start, f"{retraction}: loss {start:.3f} -> {end:.3f}"


# -- parallel transport (Grassmann / sphere view) -----------------------------------------------


def _closed_form_transport(x, y, v):
    """Independent formula: rotation in the plane of x and y (per column),
    v - <y, v> / (1 + <x, y>) (x + y)."""
    return v - (y * v).sum(-2, keepdims=True) / (1 + (x * y).sum(-2, keepdims=True)) * (x + y)


def test_grassmann_line_transport_is_parallel_transport_with_preserved_norms():
    manifold = Grassmann(9, 1, k=4, retraction="exp", transport="parallel")
    x = manifold.random_point(generator=0)
    u = manifold.random_tangent_vector(x, generator=1) * 1.3
    v = manifold.random_tangent_vector(x, generator=2)
    y = manifold.exp(x, u)
    moved = manifold.transport(x, y, v)
    np.testing.assert_allclose(moved, _closed_form_transport(x, y, v), atol=1e-13)
    tangency = np.abs((moved * y).sum(-2)).max()
    norms = np.linalg.norm(moved, axis=-2) - np.linalg.norm(v, axis=-2)
    assert tangency < 1e-14 and np.abs(norms).max() < 1e-14, (tangency, norms)
    shrunk = np.linalg.norm(Grassmann(9, 1, k=4).transport(x, y, v), axis=-2)
    lost = np.linalg.norm(v, axis=-2) - shrunk
    assert np.all(lost > 0) and lost.max() > 1e-2, f"projection loses norm, not {lost}"
    # the line of -y is the same point: the result is the lift at the given representative
    flip = np.array([1.0, -1.0, -1.0, 1.0])[:, None, None]
    np.testing.assert_allclose(manifold.transport(x, flip * y, v), flip * moved, atol=1e-13)


def test_grassmann_lines_agree_with_the_sphere_modulo_sign():
    """Gr(n, 1)^k vs Oblique(n, k) (unit columns): exp equal; log, dist and transport equal
    to the sphere's towards the representative s*y nearer x (s = sign <x, y>)."""
    grassmann = Grassmann(7, 1, k=5, transport="parallel")
    sphere = Oblique(7, 5, unit="columns").with_transport("parallel")
    x, y = grassmann.random_point(generator=3), grassmann.random_point(generator=4)
    u = grassmann.random_tangent_vector(x, generator=5) * 0.9
    v = grassmann.random_tangent_vector(x, generator=6)
    cols = lambda a: a[..., 0].T  # noqa: E731 - (k, n, 1) -> (n, k)
    sign = np.sign((x * y).sum(-2, keepdims=True))
    assert (sign < 0).any() and (sign > 0).any(), "test needs both signs"
    gaps = {
        "exp": np.abs(cols(grassmann.exp(x, u)) - sphere.exp(cols(x), cols(u))).max(),
        "log": np.abs(cols(grassmann.log(x, y)) - sphere.log(cols(x), cols(sign * y))).max(),
        "dist": abs(grassmann.dist(x, y) - sphere.dist(cols(x), cols(sign * y))),
        "transport": np.abs(
            cols(grassmann.transport(x, y, v))
            - cols(sign) * sphere.transport(cols(x), cols(sign * y), cols(v))
        ).max(),
        "parallel_transport": np.abs(
            cols(grassmann.transport(x, grassmann.exp(x, u), v))
            - sphere.parallel_transport(cols(x), cols(u), cols(v))
        ).max(),
    }
    assert max(gaps.values()) < 1e-12, gaps
    assert grassmann.dist(x, -y) == pytest.approx(grassmann.dist(x, y), abs=1e-14)


def test_shared_step_carries_momentum_by_parallel_transport():
    """riemannian_sgd_step with transport='parallel': the new buffer is tangent at the new
    point and has the norm (per filter) of mu m + r, the buffer before transport."""
    hp = SGDHyperparameters(lr=0.3, momentum=0.9)
    for manifold in (
        Oblique(6, 11, unit="rows", retraction="exp").with_transport("parallel"),
        Grassmann(11, 1, k=6, retraction="exp", transport="parallel"),
        Sphere(4, 5, retraction="normalize", transport="parallel"),
    ):
        x = manifold.random_point(dtype=torch.float64, generator=0)
        axis = (
            -2
            if isinstance(manifold, Grassmann)
            else (-1 if isinstance(manifold, Oblique) else (-2, -1))
        )
        m = manifold.random_tangent_vector(x, generator=1)
        g = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        new_x, new_m = riemannian_sgd_step(manifold, x, g, m, hp)
        before = hp.momentum * m + manifold.projection(x, g)
        tangency = float((new_m * new_x).sum(axis).abs().max())
        norm_gap = float(
            (
                torch.linalg.vector_norm(new_m, dim=axis)
                - torch.linalg.vector_norm(before, dim=axis)
            )
            .abs()
            .max()
        )
        assert tangency < 1e-13 and norm_gap < 1e-13, (manifold, tangency, norm_gap)


def test_sgd_g_training_keeps_unit_filters_and_tangent_isometric_momentum():
    """ArchBN with 'grassmann' + 'exp+parallel' (SGD-G) in float32, foreach and single-tensor
    paths: unit-norm filters, momentum tangent; both paths agree."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(128, 784, generator=gen), torch.randint(0, 10, (128,), generator=gen)
    finals = []
    for foreach in (True, False):
        model = ArchBN(2, generator=torch.Generator().manual_seed(1))
        groups = param_groups(
            model, manifold="grassmann", retraction="exp+parallel", example_input=x
        )
        opt = RiemannianSGD(groups, lr=0.05, momentum=0.9, foreach=foreach)
        geometry = opt.geometry(groups[0]["params"][0], opt.param_groups[0])
        assert isinstance(geometry.manifold, Grassmann)
        assert geometry.manifold.transport_name == "parallel"
        assert geometry.manifold.retraction_name == "exp"
        for _ in range(200):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        for weight in (linear.weight for linear in model.linears):
            norms = weight.detach().norm(dim=1)
            buf = opt.state[weight]["momentum_buffer"]
            tangency = float((buf * weight.detach()).sum(1).abs().max() / buf.norm(dim=1).max())
            assert float((norms - 1).abs().max()) < 2e-6, (
                f"filter norms {norms.min()}..{norms.max()}"
            )
            assert tangency < 1e-5, f"momentum off the tangent space: {tangency:.2e}"
        finals.append(torch.cat([w.detach().flatten() for w in model.parameters()]))
    gap = float((finals[0] - finals[1]).abs().max())
    assert gap < 1e-4, f"foreach and single-tensor paths differ by {gap:.2e}"


def test_ensemble_trains_every_constraint_with_the_named_transport():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 64, 784, generator=gen), torch.randint(0, 10, (2, 64), generator=gen)
    for constraint, retraction in (
        ("grassmann", "exp+parallel"),
        ("oblique", "exp+parallel"),
        ("stiefel", "cayley"),
        ("grassmann", "qr"),
    ):
        models = [ArchBN(2, generator=torch.Generator().manual_seed(s)) for s in range(2)]
        ens = Ensemble(
            models,
            dict.fromkeys(ArchBN.scale_invariant_names(2), constraint),
            retraction=retraction,
            momentum=0.9,
        )
        ens.set_lr(torch.tensor([0.05, 0.05]))
        first = None
        for _ in range(20):
            losses, _ = ens.train_step(x, y)
            first = losses if first is None else first
        assert bool((losses < first).all()), f"{constraint} {retraction}: {first} -> {losses}"
        for name in ArchBN.scale_invariant_names(2):
            param = ens.params[name]
            group = next(
                g for g in ens.optimizer.param_groups if any(p is param for p in g["params"])
            )
            geometry = ens.optimizer.geometry(param, group)
            want = "parallel" if retraction.endswith("+parallel") else "projection"
            assert getattr(geometry.manifold, "transport_name", "projection") == want
            violation = geometry.manifold.constraint_violation(geometry.view(param.detach())[0])
            assert violation < 1e-5, f"{constraint} {retraction} {name}: {violation:.2e}"


@pytest.mark.parametrize(
    "manifold,retraction,pattern",
    [
        ("stiefel", "exp+parallel", r"transport 'parallel' is available on 'sphere'"),
        ("grassmann", "exp+sideways", r"unknown vector transport 'sideways'.*'exp\+parallel'"),
        ("oblique", "cayley", r"unknown retraction 'cayley'"),
    ],
)
def test_bad_constraint_specs_name_the_problem(manifold, retraction, pattern):
    with pytest.raises(ValueError, match=pattern):
        resolve_geometry(manifold, retraction, torch.zeros(4, 9))


def test_transport_option_errors_and_copies():
    with pytest.raises(ValueError, match="'differentiated' is not available.*'parallel'"):
        Grassmann(6, 2, retraction="exp", transport="differentiated")
    with pytest.raises(ValueError, match="unknown transport 'geodesic'"):
        Sphere(3, transport="geodesic")
    oblique = Oblique(3, 5, unit="rows")
    parallel = oblique.with_transport("parallel")
    assert (oblique.transport_name, parallel.transport_name) == ("projection", "parallel")
    assert "transport='parallel'" in repr(parallel) and "transport" not in repr(oblique)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("manifold_class", [Stiefel, Grassmann])
def test_polar_retraction_stays_orthonormal_in_float32_on_cuda(manifold_class):
    """cuSOLVER's default (Jacobi) SVD left the polar factor 1e-5..6e-4 off the manifold in
    float32; the polar retraction must stay within 1e-5 (one step of 0.1 per column)."""
    for n, p in ((784, 64), (1024, 512)):
        manifold = manifold_class(n, p, retraction="polar")
        x = manifold.random_point(device="cuda", dtype=torch.float32, generator=0)
        u = manifold.random_tangent_vector(x, generator=1) * (0.1 * p**0.5)
        violation = manifold.constraint_violation(manifold.retraction(x, u))
        assert violation < 1e-5, f"{manifold!r}: {violation:.2e} after one polar step"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stiefel_and_sgd_g_training_on_cuda():
    x, y = _data()
    x, y = x.cuda(), y.cuda()
    for manifold, retraction in (
        ("stiefel", "polar"),
        ("stiefel", "cayley"),
        ("grassmann", "exp+parallel"),
    ):
        model = _bn_mlp(0).cuda()
        opt = RiemannianSGD(
            param_groups(model, manifold=manifold, retraction=retraction, example_input=x),
            lr=0.1,
            momentum=0.9,
        )
        for _ in range(300):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[:64]), y[:64]).backward()
            opt.step()
        w1 = model[0].weight.detach()
        if manifold == "stiefel":
            error = float((w1 @ w1.T - torch.eye(16, device="cuda")).abs().max())
        else:
            error = float((w1.norm(dim=1) - 1).abs().max())
        assert error < 1e-5, f"{manifold} {retraction} on CUDA: {error:.2e}"
