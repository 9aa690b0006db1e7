"""RiemannianSGD on the networks of ``riemann-dnn byom`` (GroupNorm + weight-standardized
ResNet, a weight-standardized conv alone), checked against hand-written references on the
path the experiment takes: the groups ``param_groups`` finds, every path of the step
(prepared native call, eager in-place kernel, single-tensor reference), and the gradient
that weight standardization gives.

These tests were written to rule out a bug behind ``byom``'s result that RiemannianSGD
trains this ResNet worse than torch.optim.SGD (docs/symmetry.md)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from riemann_dnn.experiments.byom import ResNetGNWS, StdConv2d
from riemann_dnn.optim import RiemannianSGD, param_groups, verify_scale_invariance
from riemann_dnn.step.native import native_available

WS_CONVS = [
    "stem.weight",
    "stage1.conv1.weight",
    "stage1.conv2.weight",
    "stage2.conv1.weight",
    "stage2.conv2.weight",
    "stage2.shortcut.0.weight",
]
# the three paths of the step: the prepared native call (default), the eager in-place
# kernel, the single-tensor reference
PATHS = [{}, {"fused": False}, {"foreach": False}]


def _model(dtype=torch.float32, width=8, seed=0):
    torch.manual_seed(seed)
    return ResNetGNWS(width).to(dtype)


def _batches(dtype, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.rand(16, 1, 28, 28, generator=g, dtype=dtype),
            torch.randint(0, 10, (16,), generator=g),
        )
        for _ in range(steps)
    ]


def _grads(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _filters(t):
    return t.reshape(t.shape[0], -1)


def test_param_groups_put_every_ws_conv_on_per_filter_oblique_rows():
    model = _model()
    x = torch.rand(8, 1, 28, 28)
    groups = param_groups(model, example_input=x)
    constrained = [g for g in groups if g["manifold"] != "euclidean"]
    assert [g["manifold"] for g in constrained] == ["oblique"]  # per filter, not GN's groups
    assert constrained[0]["names"] == WS_CONVS
    euclidean = groups[-1]
    assert euclidean["manifold"] == "euclidean"
    assert not any(n.endswith("conv1.weight") or n == "stem.weight" for n in euclidean["names"])
    opt = RiemannianSGD(groups, lr=0.1)
    for param, name in zip(constrained[0]["params"], WS_CONVS):
        geometry = opt.geometry(param, opt.param_groups[0])
        rows = geometry.view(param)
        assert tuple(rows.shape) == (param.shape[0], param[0].numel()), name
        assert rows.data_ptr() == param.data_ptr()  # a view: the step writes the weight
        torch.testing.assert_close(rows.norm(dim=1), torch.ones(param.shape[0]), msg=name)
    # the claims are true (each filter rescaled by its own factor) ...
    changes = verify_scale_invariance(model, x, names=WS_CONVS)
    assert max(changes.values()) < 1e-4, changes
    # ... and the check can tell: the classifier's rows and GroupNorm's scale are not
    others = verify_scale_invariance(model, x, names=["fc.weight", "gn.weight"])
    assert min(others.values()) > 1e-2, others


@pytest.mark.parametrize("bias", [False, True])
def test_a_ws_conv_alone_is_per_filter_oblique(bias):
    conv = StdConv2d(3, 5, 3, bias=bias)
    groups = param_groups(conv, example_input=torch.rand(4, 3, 8, 8))
    assert [(g["manifold"], g["names"]) for g in groups] == [("oblique", ["weight"])] + (
        [("euclidean", ["bias"])] if bias else []
    )


def _table1_step(model, grads, lr):
    """Table 1 by hand: W <- rownormalize(W - lr (G - diag(G W^T) W)); the rest W - lr G."""
    out = {}
    for name, p in model.named_parameters():
        w, g = p.detach(), grads[name]
        if name in WS_CONVS:
            W, G = _filters(w), _filters(g)
            Gr = G - (G * W).sum(1, keepdim=True) * W
            new = W - lr * Gr
            out[name] = (new / new.norm(dim=1, keepdim=True)).reshape(w.shape)
        else:
            out[name] = w - lr * g
    return out


@pytest.mark.parametrize("path", PATHS, ids=["prepared", "eager", "single"])
@pytest.mark.parametrize("lr", [1e-3, 0.3, 3.0])
def test_momentum_zero_step_is_table1_on_the_resnet(path, lr):
    model = _model(torch.float64)
    opt = RiemannianSGD(param_groups(model), lr=lr, **path)  # projects the WS filters
    reference = copy.deepcopy(model)
    ((x, y),) = _batches(torch.float64, 1)
    grads = _grads(model, x, y)
    torch.testing.assert_close(grads, _grads(reference, x, y), rtol=0, atol=0)
    expected = _table1_step(reference, grads, lr)
    opt.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=1e-12, atol=1e-13, msg=name)
    # a tiny rate moves the filters by about lr * (Riemannian gradient): the step is not a no-op
    moved = max((p - reference.get_parameter(n)).abs().max() for n, p in model.named_parameters())
    assert moved > 0


def _reference_momentum_run(model, batches, lr, mu):
    """Momentum in the tangent space, transported by projection (the hand reference of
    RiemannianSGD's rule, riemann_dnn.step.sgd's docstring); torch.optim.SGD's rule for the
    rest."""
    bufs = {}
    for x, y in batches:
        grads = _grads(model, x, y)
        with torch.no_grad():
            for name, p in model.named_parameters():
                g = grads[name]
                if name in WS_CONVS:
                    W, G = _filters(p), _filters(g)
                    r = G - (G * W).sum(1, keepdim=True) * W
                    m = r if name not in bufs else mu * bufs[name] + r
                    new = W - lr * m
                    new = new / new.norm(dim=1, keepdim=True)
                    bufs[name] = m - (m * new).sum(1, keepdim=True) * new
                    p.copy_(new.reshape(p.shape))
                else:
                    m = g if name not in bufs else mu * bufs[name] + g
                    bufs[name] = m
                    p.sub_(lr * m)
    return model


@pytest.mark.parametrize("path", PATHS, ids=["prepared", "eager", "single"])
@pytest.mark.parametrize(
    "dtype, lr, tol",
    [(torch.float64, 0.1, 1e-11), (torch.float64, 3.0, 1e-9), (torch.float32, 0.1, 2e-5)],
)
def test_momentum_trajectory_matches_the_hand_reference(path, dtype, lr, tol):
    model = _model(dtype)
    opt = RiemannianSGD(param_groups(model), lr=lr, momentum=0.9, **path)
    reference = _reference_momentum_run(copy.deepcopy(model), [], lr, 0.9)
    batches = _batches(dtype, 6)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    if not path and native_available():  # the default path is the prepared native call
        assert opt._kernels
    _reference_momentum_run(reference, batches, lr, 0.9)
    for name, p in model.named_parameters():
        torch.testing.assert_close(
            p.detach(), reference.get_parameter(name).detach(), rtol=tol, atol=tol, msg=name
        )
    for name in WS_CONVS:  # still on the manifold, and the momentum is tangent
        w = _filters(model.get_parameter(name).detach())
        torch.testing.assert_close(w.norm(dim=1), torch.ones(w.shape[0], dtype=dtype))
        m = _filters(opt.state[model.get_parameter(name)]["momentum_buffer"])
        assert (m * w).sum(1).abs().max() < 10 * tol * max(1.0, float(m.abs().max()))


def _standardized(w, eps=1e-6):
    flat = _filters(w)
    mean = flat.mean(1, keepdim=True)
    sigma = (flat.var(1, unbiased=False, keepdim=True) + eps).sqrt()
    return ((flat - mean) / sigma).reshape(w.shape), sigma


def test_ws_gradient_is_orthogonal_to_the_filter_and_to_constants_with_the_bn_backward_size():
    torch.manual_seed(0)
    conv = StdConv2d(6, 4, 3, padding=1, bias=False).double()
    with torch.no_grad():  # unit-norm filters, as RiemannianSGD keeps them
        conv.weight.div_(_filters(conv.weight).norm(dim=1).view(-1, 1, 1, 1))
    x = torch.randn(5, 6, 9, 9, dtype=torch.float64)
    target = torch.randn(5, 4, 9, 9, dtype=torch.float64)
    loss = ((conv(x) - target) ** 2).mean()
    (g,) = torch.autograd.grad(loss, conv.weight)
    W, G = _filters(conv.weight.detach()), _filters(g)
    assert float(G.norm()) > 1e-3  # a real gradient
    # invariance to each filter's shift (exact) and scale (up to WS's eps = 1e-6 against a
    # variance of 1/54 at unit norm): g _|_ 1 and g _|_ w, per filter
    assert G.sum(1).abs().max() < 1e-12 * G.norm()
    assert (G * W).sum(1).abs().max() < 1e-3 * G.norm()
    # size: the gradient wrt the standardized filter h, mapped back by BN's backward
    # g = (h - mean(h) - w_hat <w_hat, h>/n) / sigma, with sigma ~ 1/sqrt(n) at unit norm
    w_hat, sigma = _standardized(conv.weight.detach())
    w_hat = w_hat.requires_grad_(True)
    (h,) = torch.autograd.grad(((F.conv2d(x, w_hat, padding=1) - target) ** 2).mean(), w_hat)
    H, Wh = _filters(h), _filters(w_hat.detach())
    n = H.shape[1]
    expected = (H - H.mean(1, keepdim=True) - Wh * (Wh * H).sum(1, keepdim=True) / n) / sigma
    torch.testing.assert_close(G, expected, rtol=1e-9, atol=1e-12)
    # and the scale law of an invariant weight: the gradient at a w is g / a
    scales = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64).view(-1, 1, 1, 1)
    with torch.no_grad():
        conv.weight.mul_(scales)
    (g2,) = torch.autograd.grad(((conv(x) - target) ** 2).mean(), conv.weight)
    torch.testing.assert_close(
        _filters(g2 * scales), G, rtol=1e-3, atol=1e-3 * float(G.abs().max())
    )
