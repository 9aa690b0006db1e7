"""``nonfinite="unchecked"``: no check before the step; Euclidean weights take non-finite
values as torch.optim writes them, manifold rows with a non-finite gradient keep their value
and state, alike on every code path (riemann_dnn/optim/_nonfinite.py)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from riemann_dnn.optim import RiemannianAdam, RiemannianSGD

OPTIMIZERS = {
    "sgd": (RiemannianSGD, torch.optim.SGD, {}),
    "sgd-momentum": (RiemannianSGD, torch.optim.SGD, {"momentum": 0.9}),
    "adam": (RiemannianAdam, torch.optim.Adam, {}),
}
PATHS = [{}, {"foreach": False}, {"fused": False}, {"foreach": True, "fused": False}]
PATH_IDS = ["default", "single_tensor", "eager", "foreach_eager"]


def _points(manifold, copies, dtype):
    gen = torch.Generator().manual_seed(1)
    shape = (4, 6) if copies is None else (copies, 4, 6)
    w = torch.randn(shape, generator=gen, dtype=torch.float64)
    w = torch.linalg.qr(w.mT)[0].mT if manifold == "stiefel" else w / w.norm(dim=-1, keepdim=True)
    if manifold == "sphere":
        w = w / w.flatten(-2).norm(dim=-1)[..., None, None]
    e = torch.randn(5 if copies is None else (copies, 5), generator=gen, dtype=torch.float64)
    grads = [
        (
            torch.randn(shape, generator=gen).to(dtype),
            torch.randn(e.shape, generator=gen).to(dtype),
        )
        for _ in range(3)
    ]
    for gw, ge in grads[:2]:  # two steps with a NaN row and an inf entry, then a finite one
        gw[..., 1, 2] = float("nan")
        ge[..., 3] = float("inf")
    return w.to(dtype).contiguous(), e.to(dtype), grads


def _run(name, path, manifold, copies, dtype, nonfinite="unchecked"):
    cls, torch_cls, hyper = OPTIMIZERS[name]
    w0, e0, grads = _points(manifold, copies, dtype)
    w, e = w0.clone().requires_grad_(), e0.clone().requires_grad_()
    extra = {} if copies is None else {"copies": copies}
    groups = [{"params": [w], "manifold": manifold}, {"params": [e]}]
    opt = cls(groups, lr=0.1, nonfinite=nonfinite, **hyper, **path, **extra)
    ref = e0.clone().requires_grad_()
    torch_flags = {k: v for k, v in path.items() if k != "fused" or cls is RiemannianAdam}
    torch_opt = torch_cls([ref], lr=0.1, **hyper, **torch_flags)
    start = w.detach().clone()  # as projected at construction
    history = []
    for step, (gw, ge) in enumerate(grads):
        w.grad, e.grad, ref.grad = gw.clone(), ge.clone(), ge.clone()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt.step()
        torch_opt.step()
        history.append((w.detach().clone(), e.detach().clone(), ref.detach().clone(), caught))
    return start, history, opt


@pytest.mark.parametrize("copies", [None, 2])
@pytest.mark.parametrize("manifold", ["oblique", "sphere", "stiefel"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_unchecked_keeps_bad_rows_and_steps_the_rest_alike_on_every_path(name, manifold, copies):
    runs = []
    for path in PATHS:
        start, history, _ = _run(name, path, manifold, copies, torch.float64)
        for w, e, ref, caught in history[:2]:
            torch.testing.assert_close(
                e.nan_to_num(7, 8, 9), ref.nan_to_num(7, 8, 9), rtol=0, atol=0
            )
            assert any("kept their value" in str(c.message) for c in caught), (path, caught)
            kept = w[..., 1, :] if manifold == "oblique" else w
            assert torch.equal(kept, start[..., 1, :] if manifold == "oblique" else start), path
            if manifold == "oblique":  # the other rows stepped
                assert not torch.equal(w[..., 0, :], start[..., 0, :]), path
        w, *_ = history[2]  # a finite gradient: every row moves, from its kept state
        assert bool(w.isfinite().all()) and not torch.equal(w, start), path
        runs.append([h[0] for h in history])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_unchecked_keeps_bad_oblique_rows_in_low_precision(name, dtype):
    for path in PATHS:
        start, history, _ = _run(name, path, "oblique", None, dtype)
        for w, *_ in history[:2]:
            assert torch.equal(w[1], start[1]), path
        assert all(bool(h[0].isfinite().all()) for h in history), path


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_unchecked_with_finite_gradients_is_the_checked_step_bit_for_bit(name, path):
    cls, _, hyper = OPTIMIZERS[name]
    results = []
    for nonfinite in ("raise", "unchecked"):
        w0, e0, grads = _points("oblique", 3, torch.float32)
        w, e = w0.clone().requires_grad_(), e0.clone().requires_grad_()
        groups = [{"params": [w], "manifold": "oblique"}, {"params": [e]}]
        opt = cls(groups, lr=0.1, nonfinite=nonfinite, copies=3, **hyper, **path)
        for gw, ge in grads:
            w.grad, e.grad = gw.nan_to_num(0.5), ge.nan_to_num(0.5, 0.5, 0.5)
            opt.step()
        results.append((w.detach(), e.detach()))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_an_unknown_mode_is_refused_naming_the_modes():
    with pytest.raises(ValueError, match="'raise', 'skip', 'unchecked'"):
        RiemannianSGD([torch.zeros(2, requires_grad=True)], lr=0.1, nonfinite="ignore")


def test_gradscaler_skips_an_overflowing_step_of_an_unchecked_optimizer():
    """The use ``"unchecked"`` is for: torch.amp.GradScaler already finds inf/NaN in the
    unscaled gradients and skips ``step()``, so the optimizer's own read is redundant."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 4, bias=False), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)
    )
    groups = [
        {"params": [net[0].weight], "manifold": "oblique"},
        {"params": [*net[1].parameters(), *net[2].parameters()]},
    ]
    opt = RiemannianSGD(groups, lr=0.1, momentum=0.9, nonfinite="unchecked")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    x = torch.randn(8, 6)
    for overflow in (False, True, False):
        opt.zero_grad()
        loss = net(x).pow(2).sum() * (math.inf if overflow else 1.0)
        before = [p.detach().clone() for p in net.parameters()]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        unchanged = all(torch.equal(a, p) for a, p in zip(before, net.parameters()))
        assert unchanged == overflow
        assert all(bool(p.isfinite().all()) for p in net.parameters())
    assert scaler.get_scale() == 2.0**15
    torch.testing.assert_close(net[0].weight.norm(dim=1), torch.ones(4))


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_unchecked_leaves_the_gradient_as_given_and_names_it_in_the_warning(path):
    w = torch.nn.functional.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    opt = RiemannianSGD(
        [{"params": [w], "manifold": "oblique"}], lr=0.1, nonfinite="unchecked", **path
    )
    grad = torch.randn(4, 3)
    grad[1, 1] = float("nan")
    given = grad.clone()
    w.grad = grad
    with pytest.warns(RuntimeWarning, match=r"non-finite gradient in group 0 parameter 0"):
        opt.step()
    assert w.grad is grad
    torch.testing.assert_close(grad, given, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("nonfinite", ["raise", "unchecked"])
@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_a_kept_row_beside_a_0d_euclidean_parameter_warns(path, nonfinite):
    """A zero filter row (kept in every mode) and a 0-d Euclidean parameter (a learnable
    temperature): the warning passes over the Euclidean group (it had built a geometry
    for the 0-d tensor and raised)."""
    w = torch.nn.functional.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    t = torch.tensor(1.0, requires_grad=True)
    groups = [{"params": [w], "manifold": "oblique"}, {"params": [t]}]
    opt = RiemannianSGD(groups, lr=0.1, nonfinite=nonfinite, **path)
    with torch.no_grad():
        w[0] = 0
    w.grad, t.grad = torch.zeros(4, 3), torch.tensor(0.5)
    w.grad[1:] = torch.randn(3, 3)
    with pytest.warns(RuntimeWarning, match="kept their value"):
        opt.step()
    assert torch.equal(w[0].detach(), torch.zeros(3)) and float(t) == pytest.approx(0.95)
