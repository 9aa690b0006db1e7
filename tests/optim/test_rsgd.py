"""RiemannianSGD (riemann_dnn.optim.rsgd): Table 1, constraints, paths, state, errors."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from riemann_dnn.manifolds import Oblique, Sphere, Stiefel
from riemann_dnn.optim import NonFiniteGradientError, RiemannianSGD, rsgd


class Net(nn.Module):
    """Conv -> BN -> Linear -> BN -> classifier: two scale-invariant weights, the rest free."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 6, bias=False)
        self.bn2 = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv(x))).flatten(1)
        return self.head(torch.relu(self.bn2(self.fc(x))))


def make_net(seed: int = 0, dtype=torch.float32) -> Net:
    torch.manual_seed(seed)
    return Net().to(dtype)


def groups_of(net: Net, **constrained) -> list[dict]:
    invariant = [net.conv.weight, net.fc.weight]
    rest = [p for p in net.parameters() if all(p is not q for q in invariant)]
    return [{"params": invariant, "manifold": "oblique", **constrained}, {"params": rest}]


def batch(seed: int, dtype=torch.float32, n: int = 8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 6, 6, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=gen)
    return x, y


def train_step(net, opt, seed, dtype=torch.float32):
    x, y = batch(seed, dtype)
    opt.zero_grad()
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    return loss.detach()


def row_norm_error(weight: torch.Tensor) -> float:
    rows = weight.detach().reshape(weight.shape[0], -1).double()
    return (torch.linalg.vector_norm(rows, dim=1) - 1).abs().max().item()


def table1(w: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
    """G_r = G - diag(G W^T) W, W <- rownormalize(W - lr G_r), rows of W.view(out, -1)."""
    W, G = w.reshape(w.shape[0], -1), g.reshape(g.shape[0], -1)
    G_r = G - torch.diag(torch.diag(G @ W.T)) @ W
    Y = W - lr * G_r
    return (Y / torch.linalg.vector_norm(Y, dim=1, keepdim=True)).reshape(w.shape)


# -- Table 1 --------------------------------------------------------------------------------
@pytest.mark.parametrize("foreach", [True, False])
def test_momentum_zero_is_table1_on_linear_and_conv_weights(foreach):
    net = make_net(dtype=torch.float64)
    lr = 0.2
    opt = RiemannianSGD(groups_of(net), lr=lr, foreach=foreach)
    for seed in range(3):
        x, y = batch(seed, torch.float64)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        before = {n: (p.detach().clone(), p.grad.clone()) for n, p in net.named_parameters()}
        opt.step()
        for name, p in net.named_parameters():
            w, g = before[name]
            if name in ("conv.weight", "fc.weight"):
                expected = table1(w, g, lr)
            else:
                expected = w - lr * g  # theta <- theta - lr grad
            err = (p.detach() - expected).abs().max().item()
            assert err < 1e-10, f"step {seed}, {name}: differs from Table 1 by {err:.3g}"


def test_construction_puts_constrained_weights_on_the_manifold():
    net = make_net(dtype=torch.float64)
    free_before = net.head.weight.detach().clone()
    conv_before = net.conv.weight.detach().clone()
    RiemannianSGD(groups_of(net), lr=0.1)
    assert row_norm_error(net.conv.weight) < 1e-14 and row_norm_error(net.fc.weight) < 1e-14
    # rows are only rescaled (same direction), free parameters untouched
    rows = conv_before.reshape(4, -1)
    expected = rows / rows.norm(dim=1, keepdim=True)
    assert (net.conv.weight.detach().reshape(4, -1) - expected).abs().max() < 1e-15
    assert torch.equal(net.head.weight.detach(), free_before)


# -- long runs, determinism -----------------------------------------------------------------
def test_ten_thousand_float32_momentum_steps_keep_filters_unit_norm():
    torch.manual_seed(1)
    linear = nn.Parameter(torch.randn(16, 20))
    conv = nn.Parameter(torch.randn(8, 4, 3, 3))
    opt = RiemannianSGD([linear, conv], lr=0.05, momentum=0.9, manifold="oblique")
    gen = torch.Generator().manual_seed(2)
    worst = 0.0
    for k in range(10_000):
        linear.grad = torch.randn(16, 20, generator=gen)
        conv.grad = torch.randn(8, 4, 3, 3, generator=gen)
        opt.step()
        if k % 500 == 499:
            worst = max(worst, row_norm_error(linear), row_norm_error(conv))
    assert worst <= 1e-5, f"a filter norm drifted from 1 by {worst:.3g} within 10,000 steps"


@pytest.mark.parametrize("foreach", [True, False])
def test_same_seed_gives_bit_identical_runs(foreach):
    def run():
        net = make_net(seed=3)
        opt = RiemannianSGD(groups_of(net), lr=0.1, momentum=0.9, nesterov=True, foreach=foreach)
        losses = [train_step(net, opt, seed) for seed in range(5)]
        return losses, [p.detach().clone() for p in net.parameters()]

    (losses_a, params_a), (losses_b, params_b) = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(losses_a, losses_b))
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))


# -- foreach vs single-tensor -----------------------------------------------------------------
SHAPES = {
    "oblique": [(6, 5), (6, 5), (6, 5), (4, 3, 2, 2), (4, 3, 2, 2), (7, 9)],
    "sphere": [(3, 4), (3, 4), (5,)],
    "stiefel": [(3, 7), (3, 7), (2, 2, 2, 2), (8, 3)],
    "grassmann": [(3, 7), (3, 7), (1, 6)],
    "euclidean": [(5,), (5,), (3, 4)],
}
HYPER = [
    dict(momentum=0.9, weight_decay=1e-2),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.5, dampening=0.3, weight_decay=1e-3),
    dict(momentum=0.0, weight_decay=1e-2),
]


def _make_params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        name: [nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
        for name, shapes in SHAPES.items()
    }


@pytest.mark.parametrize("stack", [False, True], ids=["per_tensor", "stacked"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("hyper", HYPER, ids=["momentum_wd", "nesterov", "dampening", "plain"])
def test_foreach_and_single_tensor_paths_agree(dtype, tol, hyper, stack, monkeypatch):
    # the fused sphere kernel stacks same-shaped tensors on accelerators; force it here too
    monkeypatch.setattr(rsgd, "_stack_spheres", lambda device: stack)
    runs = {}
    for foreach in (True, False):
        params = _make_params(dtype)
        groups = [{"params": ps, "manifold": name} for name, ps in params.items()]
        opt = RiemannianSGD(groups, lr=0.05, foreach=foreach, **hyper)
        gen = torch.Generator().manual_seed(1)
        for _ in range(6):
            for ps in params.values():
                for p in ps:
                    p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
            opt.step()
        runs[foreach] = (params, opt)
    (fe_params, fe_opt), (st_params, st_opt) = runs[True], runs[False]
    for name in SHAPES:
        for i, (a, b) in enumerate(zip(fe_params[name], st_params[name])):
            err = (a - b).abs().max().item()
            assert err < tol, f"{name}[{i}] shape {tuple(a.shape)}: paths differ by {err:.3g}"
            if hyper["momentum"]:
                ba = fe_opt.state[a]["momentum_buffer"]
                bb = st_opt.state[b]["momentum_buffer"]
                err = (ba - bb).abs().max().item()
                assert err < tol * 10, f"{name}[{i}]: momentum buffers differ by {err:.3g}"


def test_every_named_manifold_keeps_its_constraint_on_both_paths():
    for foreach in (True, False):
        params = _make_params(torch.float64, seed=4)
        groups = [{"params": ps, "manifold": name} for name, ps in params.items()]
        opt = RiemannianSGD(groups, lr=0.3, momentum=0.9, foreach=foreach)
        for _ in range(5):
            for ps in params.values():
                for p in ps:
                    p.grad = torch.randn_like(p)
            opt.step()
        for p in params["oblique"] + params["grassmann"]:  # 'grassmann': each filter a line
            assert row_norm_error(p) < 1e-12
        for p in params["sphere"]:
            assert abs(p.detach().norm().item() - 1) < 1e-12, f"foreach={foreach}: sphere norm"
        for p in params["stiefel"]:
            w = p.detach().reshape(p.shape[0], -1)
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            err = (gram - torch.eye(gram.shape[0], dtype=w.dtype)).abs().max().item()
            assert err < 1e-12, (
                f"foreach={foreach}, shape {tuple(p.shape)}: orthonormality {err:.3g}"
            )


# -- torch.compile ----------------------------------------------------------------------------
def _compiled_vs_eager(backend: str, steps: int, tol: float):
    torch._dynamo.reset()
    nets = [make_net(seed=5), make_net(seed=5)]
    # under torch.compile the step takes the single-tensor path; compare with it eagerly
    opts = [
        RiemannianSGD(groups_of(n), lr=0.1, momentum=0.9, foreach=fe)
        for n, fe in zip(nets, (None, False))
    ]

    @torch.compile(backend=backend)
    def compiled_step():
        opts[0].step()

    for seed in range(steps):
        x, y = batch(seed)
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
        compiled_step()
        opts[1].step()
        for (name, a), b in zip(nets[0].named_parameters(), nets[1].parameters()):
            err = (a - b).abs().max().item()
            assert err <= tol, f"step {seed}, {name}: compiled and eager differ by {err:.3g}"
    assert row_norm_error(nets[0].conv.weight) < 1e-5  # the compiled step is Riemannian


def test_compiled_step_equals_eager_step():
    # float32 tolerance: AOTAutograd may decompose add_(alpha=...) differently (1 ulp)
    _compiled_vs_eager("aot_eager", steps=3, tol=1e-6)


@pytest.mark.slow
def test_inductor_compiled_step_equals_eager_step():
    _compiled_vs_eager("inductor", steps=3, tol=1e-6)


# -- momentum lives in the tangent space -----------------------------------------------------
@pytest.mark.parametrize("foreach", [True, False])
def test_first_momentum_step_uses_the_riemannian_gradient(foreach):
    torch.manual_seed(6)
    w = nn.Parameter(torch.randn(5, 3, 2, dtype=torch.float64))
    opt = RiemannianSGD([w], lr=0.1, momentum=0.9, manifold="oblique", foreach=foreach)
    w0 = w.detach().clone().reshape(5, -1)
    g = torch.randn(5, 6, dtype=torch.float64)
    w.grad = g.reshape(5, 3, 2).clone()
    opt.step()
    w1 = w.detach().reshape(5, -1)
    buf = opt.state[w]["momentum_buffer"].reshape(5, -1)
    inner = (w1 * buf).sum(dim=1).abs().max().item()
    assert inner < 1e-14, f"buffer not tangent at the new point: max |<w, m>| = {inner:.3g}"

    def proj(x, v):
        return v - (x * v).sum(dim=1, keepdim=True) * x

    riemannian = proj(w0, g)
    err = (buf - proj(w1, riemannian)).abs().max().item()
    assert err < 1e-14, f"buffer is not the transported Riemannian gradient: error {err:.3g}"
    err = (w1 - table1(w0, g, 0.1)).abs().max().item()
    assert err < 1e-14, f"first step is not a Riemannian gradient step: error {err:.3g}"


# -- state, closure ---------------------------------------------------------------------------
@pytest.mark.parametrize("foreach", [True, False])
def test_state_dict_round_trip_continues_identically(foreach):
    def fresh():
        net = make_net(seed=7)
        opt = RiemannianSGD(
            groups_of(net), lr=0.1, momentum=0.9, weight_decay=1e-3, foreach=foreach
        )
        return net, opt

    net, opt = fresh()
    for seed in range(6):
        train_step(net, opt, seed)
    uninterrupted = [p.detach().clone() for p in net.parameters()]

    net, opt = fresh()
    for seed in range(3):
        train_step(net, opt, seed)
    blob = io.BytesIO()
    torch.save({"model": net.state_dict(), "opt": opt.state_dict()}, blob)
    blob.seek(0)
    saved = torch.load(blob)
    net, opt = make_net(seed=99), None
    net.load_state_dict(saved["model"])
    opt = RiemannianSGD(groups_of(net), lr=0.5, foreach=foreach)  # hyper-parameters restored
    opt.load_state_dict(saved["opt"])
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["lr"] == 0.1
    for seed in range(3, 6):
        train_step(net, opt, seed)
    for (name, p), q in zip(net.named_parameters(), uninterrupted):
        assert torch.equal(p.detach(), q), f"{name}: resumed run differs from uninterrupted"


def test_closure_is_evaluated_and_its_loss_returned():
    net_a, net_b = make_net(seed=8), make_net(seed=8)
    opt_a = RiemannianSGD(groups_of(net_a), lr=0.1, momentum=0.9)
    opt_b = RiemannianSGD(groups_of(net_b), lr=0.1, momentum=0.9)
    calls = []
    for seed in range(3):
        x, y = batch(seed)

        def closure():
            calls.append(seed)
            opt_a.zero_grad()
            loss = nn.functional.cross_entropy(net_a(x), y)
            loss.backward()
            return loss

        loss_a = opt_a.step(closure)
        loss_b = train_step(net_b, opt_b, seed)
        assert torch.equal(loss_a.detach(), loss_b)
    assert calls == [0, 1, 2]
    for a, b in zip(net_a.parameters(), net_b.parameters()):
        assert torch.equal(a, b)


# -- non-finite gradients ---------------------------------------------------------------------
def _nan_setup(nonfinite="raise", foreach=None):
    net = make_net(seed=9)
    opt = RiemannianSGD(groups_of(net), lr=0.1, momentum=0.9, nonfinite=nonfinite, foreach=foreach)
    train_step(net, opt, 0)
    x, y = batch(1)
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    params = [p.detach().clone() for p in net.parameters()]
    bufs = [opt.state[p]["momentum_buffer"].clone() for p in net.parameters()]
    return net, opt, params, bufs


def _unchanged(net, opt, params, bufs):
    for (name, p), q, b in zip(net.named_parameters(), params, bufs):
        assert torch.equal(p.detach(), q), f"{name} changed by a rejected step"
        assert torch.equal(opt.state[p]["momentum_buffer"], b), f"{name}'s buffer changed"


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize(
    "where,value", [("fc", math.nan), ("head", math.inf), ("conv", -math.inf)]
)
def test_nonfinite_gradient_raises_and_writes_no_bad_value(foreach, where, value):
    """Default mode: a bad gradient anywhere is found before any weight or buffer moves,
    on every path (the native kernel's included)."""
    net, opt, params, bufs = _nan_setup(foreach=foreach)
    getattr(net, where).weight.grad[0, 0] = value
    with pytest.raises(NonFiniteGradientError, match=r"non-finite gradient in"):
        opt.step()
    _unchanged(net, opt, params, bufs)


def test_nonfinite_skip_skips_and_counts():
    net, opt, params, bufs = _nan_setup(nonfinite="skip")
    net.fc.weight.grad[1, 2] = math.nan
    net.head.bias.grad[0] = math.inf
    assert opt.step() is None
    assert opt.step() is None
    assert opt.skipped_steps == 2
    _unchanged(net, opt, params, bufs)
    train_step(net, opt, 2)  # finite gradients step again
    assert not torch.equal(net.fc.weight.detach(), params[2])
    assert opt.skipped_steps == 2


def test_large_finite_half_precision_gradient_is_not_flagged():
    w = nn.Parameter(torch.randn(64, 784).half())
    w.grad = torch.full((64, 784), 3000.0, dtype=torch.half)  # its 2-norm overflows float16
    opt = RiemannianSGD([w], lr=1e-4, manifold="oblique")
    opt.step()
    assert row_norm_error(w) < 1e-3


# -- low precision ----------------------------------------------------------------------------
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_step_renormalises_in_float32(dtype, foreach):
    eps = torch.finfo(dtype).eps
    gen = torch.Generator().manual_seed(10)
    weights = [
        nn.Parameter(torch.randn(s, generator=gen).to(dtype))
        for s in [(8, 50), (8, 50), (6, 3, 3, 3)]
    ]
    opt = RiemannianSGD(weights, lr=0.05, manifold="oblique", foreach=foreach)
    for p in weights:
        assert row_norm_error(p) <= eps, f"{dtype}: initial rows not unit norm"
    for _ in range(20):
        for p in weights:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        before = [(p.detach().float(), p.grad.float()) for p in weights]
        opt.step()
        for p, (w, g) in zip(weights, before):
            reference = table1(w, g, 0.05)  # the float32 step from the stored half weights
            err = (p.detach().float() - reference).abs().max().item()
            assert err <= eps, f"{dtype}: step differs from the float32 step by {err:.3g}"
            assert row_norm_error(p) <= eps, f"{dtype}: row norms {row_norm_error(p):.3g} > eps"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_momentum_buffers_are_float32_and_survive_state_dict(dtype):
    gen = torch.Generator().manual_seed(11)
    w = nn.Parameter(torch.randn(8, 20, generator=gen).to(dtype))
    opt = RiemannianSGD([w], lr=0.05, momentum=0.9, manifold="oblique")
    w.grad = torch.randn(8, 20, generator=gen).to(dtype)
    opt.step()
    buf = opt.state[w]["momentum_buffer"]
    assert buf.dtype == torch.float32 and buf.shape == w.shape
    other = RiemannianSGD([w], lr=0.05, momentum=0.9, manifold="oblique")
    other.load_state_dict(opt.state_dict())
    loaded = other.state[w]["momentum_buffer"]
    assert loaded.dtype == torch.float32 and torch.equal(loaded, buf)


# -- Stiefel ---------------------------------------------------------------------------------
@pytest.mark.parametrize("retraction", ["qr", "polar", "cayley"])
def test_stiefel_groups_keep_orthonormal_filters(retraction):
    gen = torch.Generator().manual_seed(12)
    wide = nn.Parameter(torch.randn(4, 10, generator=gen))  # out <= in: W W^T = I
    conv = nn.Parameter(torch.randn(4, 2, 2, 2, generator=gen))
    tall = nn.Parameter(torch.randn(9, 3, generator=gen))  # out > in: W^T W = I
    opt = RiemannianSGD(
        [{"params": [wide, conv, tall], "manifold": "stiefel", "retraction": retraction}],
        lr=0.05,
        momentum=0.9,
    )
    for _ in range(1000):
        for p in (wide, conv, tall):
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    for p in (wide, conv, tall):
        w = p.detach().reshape(p.shape[0], -1).double()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        err = (gram - torch.eye(gram.shape[0], dtype=w.dtype)).abs().max().item()
        assert err <= 1e-5, f"{retraction}, shape {tuple(p.shape)}: |W W^T - I| = {err:.3g}"


# -- Euclidean groups ------------------------------------------------------------------------
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("hyper", HYPER, ids=["momentum_wd", "nesterov", "dampening", "plain"])
def test_euclidean_groups_match_torch_sgd_exactly(foreach, hyper):
    net_a, net_b = make_net(seed=13), make_net(seed=13)
    opt_a = RiemannianSGD(net_a.parameters(), lr=0.1, foreach=foreach, **hyper)
    opt_b = torch.optim.SGD(net_b.parameters(), lr=0.1, foreach=foreach, **hyper)
    for seed in range(4):
        train_step(net_a, opt_a, seed)
        train_step(net_b, opt_b, seed)
    for (name, a), b in zip(net_a.named_parameters(), net_b.parameters()):
        assert torch.equal(a, b), f"{name}: differs from torch.optim.SGD"


def test_scalar_parameters_in_euclidean_groups_step_like_torch_sgd():
    scale_a, scale_b = nn.Parameter(torch.tensor(2.0)), nn.Parameter(torch.tensor(2.0))
    w = nn.Parameter(torch.randn(3, 4))
    opt_a = RiemannianSGD(
        [{"params": [w], "manifold": "oblique"}, {"params": [scale_a]}], lr=0.1, momentum=0.9
    )
    opt_b = torch.optim.SGD([scale_b], lr=0.1, momentum=0.9)
    for value in (0.5, -1.0, 0.25):
        scale_a.grad, scale_b.grad = torch.tensor(value), torch.tensor(value)
        w.grad = torch.randn(3, 4)
        opt_a.step()
        opt_b.step()
    assert torch.equal(scale_a, scale_b)


@pytest.mark.parametrize("foreach", [True, False])
def test_oblique_columns_object_steps_columns(foreach):
    w = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    opt = RiemannianSGD(
        [w],
        lr=0.2,
        momentum=0.9,
        nesterov=True,
        manifold=Oblique(5, 4, unit="columns"),
        foreach=foreach,
    )
    for _ in range(3):
        w.grad = torch.randn_like(w)
        opt.step()
    err = (torch.linalg.vector_norm(w.detach(), dim=0) - 1).abs().max().item()
    assert err < 1e-14, f"columns not unit norm: {err:.3g}"
    buf = opt.state[w]["momentum_buffer"]
    assert (w.detach() * buf).sum(dim=0).abs().max() < 1e-14  # tangent: <w_j, m_j> = 0


# -- errors ----------------------------------------------------------------------------------
def _param(*shape, data=None):
    return nn.Parameter(torch.randn(*shape) if data is None else data)


@pytest.mark.parametrize(
    "build,error,pattern",
    [
        (lambda: RiemannianSGD([_param(3, 4)], lr=-0.1), ValueError, r"lr.*-0\.1"),
        (lambda: RiemannianSGD([_param(3, 4)], lr=math.nan), ValueError, r"lr.*nan"),
        (
            lambda: RiemannianSGD([{"params": [_param(3, 4)], "lr": -1.0}], lr=0.1),
            ValueError,
            r"lr.*-1\.0.*group 0",
        ),
        (
            lambda: RiemannianSGD([_param(3, 4)], lr=0.1, momentum=-0.5),
            ValueError,
            r"momentum.*-0\.5",
        ),
        (
            lambda: RiemannianSGD([_param(3, 4)], lr=0.1, weight_decay=-1),
            ValueError,
            r"weight_decay.*-1",
        ),
        (
            lambda: RiemannianSGD([_param(3, 4)], lr=0.1, nesterov=True),
            ValueError,
            r"(?i)nesterov.*momentum=0",
        ),
        (
            lambda: RiemannianSGD(
                [_param(3, 4)], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True
            ),
            ValueError,
            r"(?i)nesterov.*dampening=0\.1",
        ),
        (
            lambda: RiemannianSGD([_param(3, 4)], lr=0.1, nonfinite="ignore"),
            ValueError,
            r"nonfinite.*'ignore'",
        ),
        (
            lambda: RiemannianSGD([_param(3, 4)], lr=0.1, manifold="hyperbolic"),
            ValueError,
            r"unknown manifold 'hyperbolic'",
        ),
        (
            lambda: RiemannianSGD([_param(3, 4)], lr=0.1, manifold=Oblique(4, 3, unit="rows")),
            ValueError,
            r"shape \(4, 3\).*parameter shape \(3, 4\)",
        ),
        (
            lambda: RiemannianSGD([_param(3, 4)], lr=0.1, manifold=42),
            TypeError,
            r"'manifold'.*int",
        ),
        (
            lambda: RiemannianSGD([_param(5)], lr=0.1, manifold="oblique"),
            ValueError,
            r"'oblique'.*shape \(5,\).*Euclidean group",
        ),
        (
            lambda: RiemannianSGD(
                [_param(3, 4)], lr=0.1, manifold="oblique", project_initial=False
            ),
            ValueError,
            r"parameter 0.*off the manifold.*project_initial=True",
        ),
        (
            lambda: RiemannianSGD([_param(3, 4)], lr=0.1, manifold=Sphere(3, 4), retraction="qr"),
            ValueError,
            r"retraction 'qr'",
        ),
        (
            lambda: RiemannianSGD(
                [_param(3, 4)], lr=0.1, manifold="stiefel", retraction="normalize"
            ),
            ValueError,
            r"retraction 'normalize'",
        ),
    ],
    ids=[
        "negative_lr",
        "nan_lr",
        "group_lr",
        "momentum",
        "weight_decay",
        "nesterov",
        "nesterov_dampening",
        "nonfinite",
        "unknown_manifold",
        "wrong_shape",
        "not_a_manifold",
        "oblique_1d",
        "off_manifold",
        "retraction_conflict",
        "unknown_retraction",
    ],
)
def test_bad_input_raises_naming_the_problem(build, error, pattern):
    with pytest.raises(error, match=pattern):
        build()


def test_on_manifold_initial_weight_is_accepted_without_projection():
    point = Stiefel(6, 3).random_point(dtype=torch.float32, generator=1).T.contiguous()
    w = nn.Parameter(point.clone())
    RiemannianSGD([w], lr=0.1, manifold="stiefel", project_initial=False)
    assert torch.equal(w.detach(), point)


def test_manifold_object_for_a_conv_weight_uses_its_filter_matrix():
    w = nn.Parameter(torch.randn(4, 2, 3, 3, dtype=torch.float64))
    opt = RiemannianSGD([w], lr=0.1, manifold=Oblique(4, 18, unit="rows"))
    w.grad = torch.randn_like(w)
    before = (w.detach().clone(), w.grad.clone())
    opt.step()
    assert (w.detach() - table1(*before, 0.1)).abs().max() < 1e-12


def test_param_group_added_later_is_placed_on_its_manifold():
    opt = RiemannianSGD([_param(3, 4)], lr=0.1)
    w = _param(5, 6)
    opt.add_param_group({"params": [w], "manifold": "oblique"})
    assert row_norm_error(w) < 1e-6
    with pytest.raises(ValueError, match=r"lr.*-2"):
        opt.add_param_group({"params": [_param(2, 2)], "lr": -2.0})


def test_sparse_gradients_are_rejected():
    w = _param(4, 3)
    w.grad = torch.eye(4, 3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        RiemannianSGD([w], lr=0.1).step()


# -- GPU -------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("foreach", [True, False])
def test_cuda_step_equals_cpu_step(foreach):
    nets = [make_net(seed=14, dtype=torch.float64), make_net(seed=14, dtype=torch.float64)]
    nets[1].cuda()
    opts = [RiemannianSGD(groups_of(n), lr=0.1, momentum=0.9, foreach=foreach) for n in nets]
    for seed in range(3):
        x, y = batch(seed, torch.float64)
        for net, opt, device in zip(nets, opts, ("cpu", "cuda")):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x.to(device)), y.to(device)).backward()
            opt.step()
    for (name, a), b in zip(nets[0].named_parameters(), nets[1].parameters()):
        err = (a - b.cpu()).abs().max().item()
        assert err < 1e-10, f"{name}: CUDA and CPU differ by {err:.3g}"
    assert all(opts[1].state[p]["momentum_buffer"].is_cuda for p in nets[1].parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_nonfinite_gradient_is_caught():
    w = nn.Parameter(torch.randn(8, 5, device="cuda"))
    opt = RiemannianSGD([w], lr=0.1, manifold="oblique")
    w.grad = torch.randn_like(w)
    w.grad[3, 1] = math.nan
    before = w.detach().clone()
    with pytest.raises(NonFiniteGradientError):
        opt.step()
    assert torch.equal(w.detach(), before)
