"""RiemannianSGD's per-filter rate ``"filter_rate": "norm2"`` (the study's bsgd-elr)."""

import pytest
import torch

from riemann_dnn.optim import RiemannianSGD
from riemann_dnn.optim.rsgd import filter_rates


def test_single_step_matches_the_hand_formula():
    gen = torch.Generator().manual_seed(0)
    w = (2 * torch.randn(4, 3, 2, generator=gen, dtype=torch.float64)).requires_grad_()
    g = torch.randn(4, 3, 2, generator=gen, dtype=torch.float64)
    w0 = w.detach().clone()
    opt = RiemannianSGD([{"params": [w], "filter_rate": "norm2"}], lr=0.1)
    w.grad = g.clone()
    opt.step()
    norms2 = (w0.reshape(4, -1) ** 2).sum(1).view(4, 1, 1)  # before the step
    expected = w0 - 0.1 * norms2 * g
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-15)


def test_stacked_copies_use_each_copy_rate_and_norms():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3, 5, 4, generator=gen).requires_grad_()
    g = torch.randn(3, 5, 4, generator=gen)
    w0 = w.detach().clone()
    lr = torch.tensor([0.1, 0.0, 0.01], dtype=torch.float64)
    opt = RiemannianSGD([{"params": [w], "filter_rate": "norm2", "copies": 3}], lr=lr, copies=3)
    w.grad = g.clone()
    opt.step()
    expected = w0 - lr.float().view(3, 1, 1) * (w0**2).sum(2, keepdim=True) * g
    torch.testing.assert_close(w.detach(), expected)
    assert torch.equal(w.detach()[1], w0[1])  # rate 0: untouched


def test_momentum_and_weight_decay_follow_torch_sgd_with_the_filter_rate():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(3, 4, generator=gen, dtype=torch.float64).requires_grad_()
    x = w.detach().clone()
    buf = None
    opt = RiemannianSGD(
        [{"params": [w], "filter_rate": "norm2"}], lr=0.05, momentum=0.9, weight_decay=1e-2
    )
    for _ in range(3):
        g = torch.randn(3, 4, generator=gen, dtype=torch.float64)
        w.grad = g.clone()
        opt.step()
        d = g + 1e-2 * x
        buf = d if buf is None else 0.9 * buf + d
        x = x - 0.05 * (x**2).sum(1, keepdim=True) * buf
    torch.testing.assert_close(w.detach(), x)


def test_filter_rate_is_validated():
    w = torch.randn(3, 4, requires_grad=True)
    with pytest.raises(ValueError, match="filter_rate must be None or one of"):
        RiemannianSGD([{"params": [w], "filter_rate": "norm"}], lr=0.1)
    with pytest.raises(ValueError, match="is for Euclidean groups"):
        RiemannianSGD([{"params": [w], "filter_rate": "norm2", "manifold": "oblique"}], lr=0.1)
    with pytest.raises(ValueError, match="needs weights with filters"):
        RiemannianSGD(
            [{"params": [torch.randn(4, requires_grad=True)], "filter_rate": "norm2"}], lr=0.1
        )


def test_filter_rates_shape_broadcasts_over_the_weight():
    w = torch.ones(2, 3, 4, 5)
    assert filter_rates(0.5, w).shape == (2, 1, 1, 1)
    assert float(filter_rates(0.5, w)[0]) == pytest.approx(0.5 * 60)  # ||row||^2 = 3*4*5
    assert filter_rates(torch.tensor([1.0, 2.0]), w, copies=2).shape == (2, 3, 1, 1)
