"""RiemannianSGD against what torch's conformance tests found (issue 19, A-J): each test
failed before its fix."""

import io
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from riemann_dnn.optim import NonFiniteGradientError, RiemannianSGD

PATHS = [{}, {"foreach": False}, {"fused": False}]
PATH_IDS = ["default", "single_tensor", "eager_kernel"]


def _sgd_pair(shapes, seed=0, dtype=torch.float32, **hyper):
    """The same Euclidean parameters under RiemannianSGD and torch.optim.SGD."""
    gen = torch.Generator().manual_seed(seed)
    ours = [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    return (
        ours,
        theirs,
        RiemannianSGD(ours, **hyper),
        torch.optim.SGD(theirs, **{k: v for k, v in hyper.items() if k != "foreach"}),
    )


def _grads(params_pairs, gen):
    for ours, theirs in params_pairs:
        g = torch.randn(ours.shape, generator=gen, dtype=ours.dtype)
        ours.grad, theirs.grad = g.clone(), g.clone()


def _equal(ours, theirs):
    for a, b in zip(ours, theirs):
        assert torch.equal(a.detach(), b.detach()), (a - b).abs().max()


# -- A: half-precision momentum buffers made by another path --------------------------------
def test_a_half_momentum_after_a_missing_gradient_is_float32_and_exact():
    """A step with a missing gradient, then steps with all: float16/bfloat16 Euclidean
    parameters equal the float32 step rounded back, their buffers are float32, and
    nothing is written past a buffer (in a subprocess: the bug crashed the process)."""
    script = textwrap.dedent(
        """
        import torch
        from riemann_dnn.optim import RiemannianSGD
        gen = torch.Generator().manual_seed(0)
        for dtype in (torch.float16, torch.bfloat16):
            shapes = [(64, 300), (64,), (10, 64)]
            params = [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in shapes]
            opt = RiemannianSGD(params, lr=0.01, momentum=0.9)
            ref = [p.detach().float() for p in params]
            bufs = [None] * len(params)
            for step in range(6):
                for k, p in enumerate(params):
                    missing = step == 0 and k == 1
                    p.grad = None if missing else torch.randn(p.shape, generator=gen).to(dtype)
                opt.step()
                for k, p in enumerate(params):  # the float32 step from the stored values
                    if p.grad is None:
                        continue
                    g = p.grad.float()
                    bufs[k] = g.clone() if bufs[k] is None else bufs[k].mul_(0.9).add_(g)
                    ref[k] = ref[k].add(bufs[k], alpha=-0.01).to(dtype).float()
            for k, p in enumerate(params):
                assert opt.state[p]["momentum_buffer"].dtype == torch.float32
                err = (p.detach().float() - ref[k]).abs().max().item()
                assert torch.equal(p.detach().float(), ref[k]), (dtype, k, err)
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, (
        f"exit {proc.returncode}: {proc.stderr[-1500:]}"
    )


# -- B: zero-element parameters ---------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0,)])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_b_zero_element_parameter_steps_like_sgd(shape, momentum):
    ours, theirs, opt, ref = _sgd_pair([shape, (4, 3)], lr=0.1, momentum=momentum)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        _grads(zip(ours, theirs), gen)
        opt.step()
        ref.step()
    _equal(ours, theirs)


# -- C: the state is the truth ----------------------------------------------------------------
@pytest.mark.parametrize("change", ["clear", "replace", "delete"])
def test_c_state_changes_take_effect_as_in_sgd(change):
    ours, theirs, opt, ref = _sgd_pair([(6, 5), (5,)], lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(2)
    for step in range(6):
        if step == 3:
            for optimizer, params in ((opt, ours), (ref, theirs)):
                if change == "clear":
                    optimizer.state.clear()
                elif change == "replace":
                    optimizer.state[params[0]]["momentum_buffer"] = torch.ones(6, 5)
                else:
                    del optimizer.state[params[1]]
        _grads(zip(ours, theirs), gen)
        opt.step()
        ref.step()
    _equal(ours, theirs)


# -- D: sparse gradients ------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_d_sparse_gradient_in_a_later_group_is_refused_before_any_step(path):
    dense = torch.randn(4, 3, requires_grad=True)
    sparse = torch.randn(5, 3, requires_grad=True)
    opt = RiemannianSGD(
        [{"params": [dense], "manifold": "oblique"}, {"params": [sparse]}], lr=0.1, **path
    )
    before = dense.detach().clone()
    dense.grad = torch.randn(4, 3)
    sparse.grad = torch.sparse_coo_tensor([[0, 2]], torch.ones(2, 3), (5, 3))
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert torch.equal(dense.detach(), before)


# -- E: one-element tensor rates ----------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1,), (1, 1)])
def test_e_one_element_tensor_lr_of_any_shape_is_a_rate(shape):
    lr = torch.full(shape, 0.1)
    ours, theirs, opt, ref = _sgd_pair([(6, 5), (5,)], lr=lr, momentum=0.9)
    ref.param_groups[0]["lr"] = 0.1
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        _grads(zip(ours, theirs), gen)
        opt.step()
        ref.step()
    _equal(ours, theirs)


# -- F: older state dicts --------------------------------------------------------------------
def test_f_state_dict_without_newer_keys_loads_with_the_defaults():
    ours, theirs, opt, ref = _sgd_pair([(6, 5)], lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(4)
    _grads(zip(ours, theirs), gen)
    opt.step()
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        for key in ("foreach", "fused", "maximize", "copies"):
            del group[key]
    other = RiemannianSGD(ours, lr=0.5, momentum=0.9, foreach=False)
    other.load_state_dict(saved)
    group = other.param_groups[0]
    assert group["foreach"] is False and group["maximize"] is False and group["copies"] is None
    assert group["lr"] == 0.1


# -- G: torch.compile with a tensor rate and momentum ------------------------------------------
@pytest.mark.parametrize("lr", [torch.tensor(0.1), 0.1], ids=["tensor-lr", "float-lr"])
def test_g_inductor_compiles_a_momentum_step_with_a_tensor_or_float_rate(lr):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(8, 10, generator=gen, requires_grad=True)
    b = torch.randn(8, generator=gen, requires_grad=True)
    copies = [(w, b), (w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_())]
    opts = [
        RiemannianSGD(
            [{"params": [w_], "manifold": "oblique"}, {"params": [b_]}],
            lr=lr,
            momentum=0.9,
            foreach=foreach,
        )
        for (w_, b_), foreach in zip(copies, (None, False))
    ]
    compiled = torch.compile(opts[0].step, backend="inductor")
    for _ in range(3):
        for w_, b_ in copies:
            w_.grad = torch.randn(8, 10, generator=gen)
            b_.grad = torch.randn(8, generator=gen)
        copies[1][0].grad.copy_(copies[0][0].grad)
        copies[1][1].grad.copy_(copies[0][1].grad)
        compiled()
        opts[1].step()
    for a, b in zip(copies[0], copies[1]):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)
    assert (w.detach().norm(dim=1) - 1).abs().max() < 1e-6


# -- H: non-finite gradients: nothing moves, on every path ----------------------------------
def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(10, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)
    )


def _train_one(net, opt, seed):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 10, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()


@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
@pytest.mark.parametrize("where", [0, 3])  # the oblique weight, the Euclidean classifier
@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_h_nonfinite_gradient_changes_nothing_on_every_path(path, where, nonfinite):
    net = _net(6)
    groups = [
        {"params": [net[0].weight], "manifold": "oblique"},
        {"params": [p for i, p in enumerate(net.parameters()) if i > 0]},
    ]
    opt = RiemannianSGD(groups, lr=0.1, momentum=0.9, nonfinite=nonfinite, **path)
    _train_one(net, opt, 0)
    opt.step()
    _train_one(net, opt, 1)
    net[where].weight.grad[2, 1] = math.nan
    params = [p.detach().clone() for p in net.parameters()]
    bufs = [opt.state[p]["momentum_buffer"].clone() for p in net.parameters()]
    if nonfinite == "raise":
        with pytest.raises(NonFiniteGradientError):
            opt.step()
    else:
        opt.step()
        assert opt.skipped_steps == 1
    for p, before, buf in zip(net.parameters(), params, bufs):
        assert torch.equal(p.detach(), before)
        assert torch.equal(opt.state[p]["momentum_buffer"], buf)


# -- I: a zero filter row --------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_i_zero_row_keeps_its_value_and_the_rest_steps_alike_on_every_path(momentum):
    results = []
    for path in PATHS:
        net = _net(7)
        groups = [
            {"params": [net[0].weight], "manifold": "oblique"},
            {"params": [p for i, p in enumerate(net.parameters()) if i > 0]},
        ]
        opt = RiemannianSGD(groups, lr=0.1, momentum=momentum, **path)
        with torch.no_grad():
            net[0].weight[0] = 0  # its output is constant: BN's gradient for it is zero
        for seed in range(2):
            _train_one(net, opt, seed)
            assert torch.equal(net[0].weight.grad[0], torch.zeros(10))
            with pytest.warns(RuntimeWarning, match="zero or non-finite rows"):
                opt.step()
        weight = net[0].weight.detach()
        assert torch.equal(weight[0], torch.zeros(10)), path
        torch.testing.assert_close(weight[1:].norm(dim=1), torch.ones(7))
        results.append([p.detach().clone() for p in net.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# -- J: the live retraction ------------------------------------------------------------------
def test_j_load_state_dict_refuses_another_retraction_and_keeps_the_live_one():
    w = torch.randn(6, 5, requires_grad=True)
    group = {"params": [w], "manifold": "oblique"}
    opt = RiemannianSGD([{**group, "retraction": "normalize"}], lr=0.1, momentum=0.9)
    w.grad = torch.randn(6, 5)
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    other = RiemannianSGD([{**group, "retraction": "exp"}], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="retraction 'normalize'.*'exp'"):
        other.load_state_dict(saved)
    assert other.param_groups[0]["retraction"] == "exp"
    same = RiemannianSGD([{**group, "retraction": "normalize"}], lr=0.5)
    same.load_state_dict(saved)
    assert same.param_groups[0]["retraction"] == "normalize"
    assert same.geometry(w, same.param_groups[0]).manifold.retraction_name == "normalize"
