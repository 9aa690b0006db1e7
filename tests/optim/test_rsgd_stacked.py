"""RiemannianSGD: stacked copies, maximize, tensor lr and weights-only state dicts."""

from __future__ import annotations

import io

import pytest
import torch

from riemann_dnn.manifolds import Oblique, Sphere
from riemann_dnn.optim import RiemannianSGD


def _weights(copies=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(copies, 4, 5, generator=gen, dtype=torch.float64)
    return w / w.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize(
    "manifold, retraction",
    [
        ("oblique", None),
        ("oblique", "exp"),
        ("stiefel", "qr"),
        ("sphere", "exp"),
        ("euclidean", None),
    ],
)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_stacked_copies_step_like_one_optimizer_per_copy(manifold, retraction, momentum):
    rates = [0.1, 0.05, 0.2]
    stacked = _weights().requires_grad_()
    singles = [stacked[k].detach().clone().requires_grad_() for k in range(3)]
    opt = RiemannianSGD(
        [{"params": [stacked], "manifold": manifold, "retraction": retraction, "copies": 3}],
        lr=torch.tensor(rates, dtype=torch.float64),
        momentum=momentum,
    )
    opts = [
        RiemannianSGD(
            [{"params": [w], "manifold": manifold, "retraction": retraction}],
            lr=lr,
            momentum=momentum,
        )
        for w, lr in zip(singles, rates)
    ]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        g = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
        stacked.grad = g.clone()
        opt.step()
        for k, (w, o) in enumerate(zip(singles, opts)):
            w.grad = g[k].clone()
            o.step()
            assert torch.allclose(stacked[k], w, atol=1e-12, rtol=0), (manifold, k)


def test_maximize_steps_like_the_negated_gradient():
    for manifold in ("oblique", "euclidean"):
        a, b = _weights(1)[0].requires_grad_(), _weights(1)[0].requires_grad_()
        opt_a = RiemannianSGD(
            [{"params": [a], "manifold": manifold}], lr=0.1, momentum=0.9, maximize=True
        )
        opt_b = RiemannianSGD([{"params": [b], "manifold": manifold}], lr=0.1, momentum=0.9)
        for seed in range(3):
            g = torch.randn(
                4, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
            )
            a.grad, b.grad = g.clone(), -g
            opt_a.step()
            opt_b.step()
        assert torch.equal(a, b), manifold


def test_tensor_lr_works_with_torch_lr_schedulers():
    a, b = _weights(1)[0].requires_grad_(), _weights(1)[0].requires_grad_()
    opt_a = RiemannianSGD(
        [{"params": [a], "manifold": "oblique"}], lr=torch.tensor(0.1, dtype=torch.float64)
    )
    opt_b = RiemannianSGD([{"params": [b], "manifold": "oblique"}], lr=0.1)
    sched_a = torch.optim.lr_scheduler.StepLR(opt_a, step_size=1, gamma=0.5)
    sched_b = torch.optim.lr_scheduler.StepLR(opt_b, step_size=1, gamma=0.5)
    for seed in range(3):
        g = torch.randn(4, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
        sched_a.step()
        sched_b.step()
    assert isinstance(opt_a.param_groups[0]["lr"], torch.Tensor)
    assert float(opt_a.param_groups[0]["lr"]) == opt_b.param_groups[0]["lr"] == 0.1 / 8
    assert torch.allclose(a, b, atol=1e-15, rtol=0)


def test_state_dict_with_manifold_objects_loads_weights_only_and_checks_the_manifold():
    w = _weights(1)[0].requires_grad_()
    opt = RiemannianSGD(
        [{"params": [w], "manifold": Oblique(4, 5, unit="rows")}], lr=0.1, momentum=0.9
    )
    w.grad = torch.randn(4, 5, dtype=torch.float64)
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert "Oblique" in state["param_groups"][0]["manifold"]
    other = RiemannianSGD(
        [{"params": [w], "manifold": Oblique(4, 5, unit="rows")}], lr=0.5, momentum=0.9
    )
    other.load_state_dict(state)
    assert isinstance(other.param_groups[0]["manifold"], Oblique)
    assert other.param_groups[0]["lr"] == 0.1
    assert torch.equal(other.state[w]["momentum_buffer"], opt.state[w]["momentum_buffer"])
    wrong = RiemannianSGD(
        [{"params": [w.detach().reshape(20).requires_grad_()], "manifold": Sphere(20)}], lr=0.1
    )
    with pytest.raises(ValueError, match="saved on manifold"):
        wrong.load_state_dict(state)


@pytest.mark.parametrize(
    "group, pattern",
    [
        ({"copies": 2}, "leading axis of 2 copies"),
        ({"copies": 0}, "copies must be an int"),
        ({"copies": 3, "lr": torch.ones(2)}, r"shape \(3,\)"),
        ({"lr": torch.ones(3)}, "of one element"),
        ({"copies": 3, "lr": torch.tensor([0.1, -1.0, 0.1])}, "finite and >= 0"),
    ],
)
def test_bad_copies_and_tensor_rates_raise(group, pattern):
    w = _weights().requires_grad_()
    with pytest.raises(ValueError, match=pattern):
        RiemannianSGD([{"params": [w], "manifold": "oblique", **group}], lr=0.1)


def test_nonfinite_copy_raises_in_raise_mode_without_touching_weights():
    w = _weights().requires_grad_()
    before = w.detach().clone()
    opt = RiemannianSGD([{"params": [w], "manifold": "oblique", "copies": 3}], lr=0.1)
    grad = torch.randn(3, 4, 5, dtype=torch.float64)
    grad[2, 1, 1] = float("inf")
    w.grad = grad
    with pytest.raises(Exception, match=r"copies \[2\]"):
        opt.step()
    assert torch.equal(w.detach(), before)


def test_zero_filter_is_refused_naming_the_parameter_and_the_row():
    w = torch.randn(4, 5, dtype=torch.float64)
    w[2] = 0
    with pytest.raises(ValueError, match=r"param group 0, parameter 0 \(shape \(4, 5\)\).*row 2"):
        RiemannianSGD([{"params": [w.requires_grad_()], "manifold": "oblique"}], lr=0.1)
