"""The native Riemannian Adam row kernel (riemann_dnn::oblique_adam_) equals the shared
step and its eager fallback, keeps rows unit-norm, and leaves non-finite rows untouched."""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from riemann_dnn.manifolds import Oblique
from riemann_dnn.step.adam import (
    AdamHyperparameters,
    AdamState,
    oblique_adam_eager_,
    riemannian_adam_step,
)
from riemann_dnn.step.native import (
    adam_native_available,
    adam_native_unavailable_reason,
    oblique_adam_,
)

REPO = Path(__file__).resolve().parents[2]
needs_native = pytest.mark.skipif(
    not adam_native_available(),
    reason=f"native kernel unavailable: {adam_native_unavailable_reason()}",
)

OPTIONS = [
    dict(),
    dict(weight_decay=0.01, maximize=True),
    dict(amsgrad=True, betas=(0.8, 0.99)),
    dict(amsgrad=True, weight_decay=0.1, eps=1e-3),
    dict(decoupled_weight_decay=True, weight_decay=0.1, maximize=True),
]
SHAPES = [(7, 13), (5, 100), (3, 4608 + 3)]
TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _ids(opts):
    return "-".join(f"{k}{v}" for k, v in opts.items()) or "default"


def _work(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


class _State:
    """Zero Adam state for unit-row points (per-row second moments)."""

    def __init__(self, points, amsgrad):
        work = _work(points[0].dtype)
        self.m = [torch.zeros(p.shape, dtype=work) for p in points]
        self.v = [torch.zeros(*p.shape[:-1], 1, dtype=work) for p in points]
        self.vmax = [torch.zeros_like(v) for v in self.v] if amsgrad else []
        self.steps = [torch.tensor(0.0) for _ in points]

    def tick(self):
        for s in self.steps:
            s += 1
        return self


def _native(points, grads, state, lr, **opts):
    oblique_adam_(points, grads, state.m, state.v, state.vmax, state.steps, lr=lr, **opts)


def _eager(points, grads, state, lr, found=None, **opts):
    beta1, beta2 = opts.get("betas", (0.9, 0.999))
    oblique_adam_eager_(
        points,
        grads,
        state.m,
        state.v,
        state.vmax,
        [float(s) for s in state.steps],
        torch.as_tensor(lr, dtype=torch.float64).reshape(-1),
        beta1,
        beta2,
        opts.get("eps", 1e-8),
        opts.get("weight_decay", 0.0),
        opts.get("amsgrad", False),
        opts.get("decoupled_weight_decay", False),
        opts.get("maximize", False),
        torch.zeros(1) if found is None else found,
    )


def _hp(lr, opts):
    return AdamHyperparameters(
        lr,
        opts.get("betas", (0.9, 0.999)),
        opts.get("eps", 1e-8),
        opts.get("weight_decay", 0.0),
        opts.get("amsgrad", False),
        opts.get("decoupled_weight_decay", False),
    )


@needs_native
@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("opts", OPTIONS, ids=_ids)
def test_native_step_equals_shared_step(dtype, shape, opts):
    gen = torch.Generator().manual_seed(0)
    manifold, work = Oblique(*shape, unit="rows"), _work(dtype)
    x = manifold.random_point(dtype=work, generator=gen).to(dtype)
    ref, ref_state = x.to(work, copy=True), None
    state = _State([x], opts.get("amsgrad", False))
    for t in range(1, 4):
        g = torch.randn(shape, generator=gen, dtype=work).to(dtype)
        _native([x], [g], state.tick(), 0.05, **opts)
        ref, ref_state = riemannian_adam_step(
            manifold, ref, g.to(work), ref_state, t, _hp(0.05, opts), maximize=opts.get("maximize")
        )
        ref = ref.to(dtype).to(work)  # the optimizer stores the point in its dtype
        err = (x.to(work) - ref).abs().max().item()
        assert err <= TOL[dtype], f"{dtype} {shape} {opts}: point differs by {err:.3g}"
        verr = ((state.v[0] - ref_state.exp_avg_sq).abs() / ref_state.exp_avg_sq).max().item()
        assert verr <= 10 * TOL[dtype], f"second moment differs by {verr:.3g} (relative)"
        merr = (state.m[0] - ref_state.exp_avg).abs().max().item()
        assert merr <= 10 * TOL[dtype], f"first moment differs by {merr:.3g}"


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("opts", OPTIONS, ids=_ids)
def test_native_equals_eager_fallback(dtype, opts):
    gen = torch.Generator().manual_seed(3)
    shapes, work = [(6, 10), (4, 33), (2, 3, 17)], _work(dtype)
    xs = [
        torch.nn.functional.normalize(torch.randn(s, generator=gen, dtype=work), dim=-1).to(dtype)
        for s in shapes
    ]
    ys = [x.clone() for x in xs]
    native, eager = _State(xs, opts.get("amsgrad")), _State(ys, opts.get("amsgrad"))
    for _ in range(4):
        gs = [torch.randn(s, generator=gen, dtype=work).to(dtype) for s in shapes]
        _native(xs, gs, native.tick(), 0.05, **opts)
        _eager(ys, gs, eager.tick(), 0.05, **opts)
        for x, y in zip(xs, ys):
            err = (x.to(work) - y.to(work)).abs().max().item()
            assert err <= TOL[dtype], f"native and eager differ by {err:.3g}"
        for a, b in zip(native.m + native.v, eager.m + eager.v):
            assert torch.allclose(a, b, rtol=20 * TOL[dtype], atol=TOL[dtype])


@needs_native
def test_one_rate_per_stacked_copy():
    gen = torch.Generator().manual_seed(1)
    manifold = Oblique(5, 7, unit="rows")
    xs = torch.stack([manifold.random_point(dtype=torch.float64, generator=gen) for _ in range(3)])
    rates = torch.tensor([0.3, 0.0, 0.01], dtype=torch.float64)
    stacked = xs.clone()
    state = _State([stacked], amsgrad=True)
    grads = [torch.randn(xs.shape, generator=gen, dtype=torch.float64) for _ in range(3)]
    for g in grads:
        _native([stacked], [g], state.tick(), rates, amsgrad=True)
    for k, rate in enumerate(rates.tolist()):
        single, s = xs[k], None
        for t, g in enumerate(grads, 1):
            single, s = riemannian_adam_step(
                manifold, single, g[k], s, t, AdamHyperparameters(rate, amsgrad=True)
            )
        err = (stacked[k] - single).abs().max().item()
        assert err <= 1e-12, f"copy {k} (rate {rate}) differs by {err:.3g}"
    assert torch.allclose(stacked[1], xs[1], rtol=0, atol=1e-15), "the copy with rate 0 moved"


@pytest.mark.parametrize("path", ["native", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_nonfinite_rows_are_left_untouched_and_flagged(path, dtype):
    if path == "native" and not adam_native_available():
        pytest.skip(adam_native_unavailable_reason())
    step = _native if path == "native" else _eager
    gen = torch.Generator().manual_seed(2)
    work = _work(dtype)
    x = torch.nn.functional.normalize(torch.randn(6, 40, generator=gen, dtype=work), dim=1)
    x = x.to(dtype)
    state = _State([x], amsgrad=True)
    step([x], [torch.randn(6, 40, generator=gen, dtype=work).to(dtype)], state.tick(), 0.1,
         amsgrad=True)  # fmt: skip
    g = torch.randn(6, 40, generator=gen, dtype=work).to(dtype)
    g[1, 3], g[4, 0] = float("nan"), float("inf")
    before = [t.clone() for t in (x, state.m[0], state.v[0], state.vmax[0])]
    found = torch.zeros(1)
    kwargs = dict(found=found) if path == "eager" else dict(found_nonfinite=found)
    step([x], [g], state.tick(), 0.1, amsgrad=True, **kwargs)
    assert found.item() == 1
    after = (x, state.m[0], state.v[0], state.vmax[0])
    for name, old, new in zip(("point", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"), before, after):
        assert torch.equal(new[[1, 4]], old[[1, 4]]), f"bad rows' {name} changed"
        assert torch.isfinite(new).all(), f"{name} holds NaN/inf"
    good = [0, 2, 3, 5]
    assert not torch.equal(x[good], before[0][good]), "good rows were not stepped"


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("lr", [1e30, 3e38, 1e300])
def test_huge_rates_keep_rows_unit_norm(dtype, lr):
    lr = min(lr, 3.4e38) if dtype == torch.float32 else lr
    gen = torch.Generator().manual_seed(4)
    x = torch.nn.functional.normalize(torch.randn(8, 50, generator=gen, dtype=dtype), dim=1)
    state, found = _State([x], amsgrad=False), torch.zeros(1)
    for _ in range(3):
        g = torch.randn(8, 50, generator=gen, dtype=dtype) * 10
        _native([x], [g], state.tick(), lr, found_nonfinite=found)
    norms = torch.linalg.vector_norm(x, dim=1)
    assert torch.isfinite(x).all() and (norms - 1).abs().max() < 1e-5, f"norms {norms}"
    assert found.item() == 0


@pytest.mark.parametrize("path", ["native", "eager"])
def test_float32_rows_stay_unit_norm_over_many_steps(path):
    if path == "native" and not adam_native_available():
        pytest.skip(adam_native_unavailable_reason())
    step = _native if path == "native" else _eager
    gen = torch.Generator().manual_seed(7)
    x = torch.nn.functional.normalize(torch.randn(64, 288, generator=gen), dim=1)
    state = _State([x], amsgrad=False)
    target = torch.randn(64, 288, generator=gen)
    for _ in range(300):
        step([x], [x - target + 0.1 * torch.randn(64, 288, generator=gen)], state.tick(), 0.05)
    err = (torch.linalg.vector_norm(x.double(), dim=1) - 1).abs().max().item()
    assert err <= 1e-6, f"row norms off 1 by {err:.3g} after 300 float32 steps"
    tangent = (x.double() * state.m[0].double()).sum(1).abs().max().item()
    assert tangent <= 1e-6, f"first moment not tangent: <x, m> = {tangent:.3g}"


def test_bad_arguments_are_named():
    x = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    m, v, t = torch.zeros(4, 8), torch.zeros(4, 1), torch.tensor(1.0)
    with pytest.raises(ValueError, match=r"exp_avg_sqs\[0\] is torch.float32 \(4, 8\)"):
        oblique_adam_([x], [x], [m], [m], [], [t], lr=0.1)
    with pytest.raises(ValueError, match=r"got 1 points but 0 state_steps"):
        oblique_adam_([x], [x], [m], [v], [], [], lr=0.1)
    with pytest.raises(ValueError, match=r"max_exp_avg_sqs"):
        oblique_adam_([x], [x], [m], [v], [], [t], lr=0.1, amsgrad=True)
    with pytest.raises(ValueError, match=r"lr has 3 rates but points\[0\] has shape \(4, 8\)"):
        oblique_adam_([x], [x], [m], [v], [], [t], lr=torch.ones(3))


@needs_native
def test_version_counters_see_the_update():
    x = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    m, v, t = torch.zeros(4, 8), torch.zeros(4, 1), torch.tensor(1.0)
    before = (x._version, m._version, v._version)
    oblique_adam_([x], [torch.randn(4, 8)], [m], [v], [], [t], lr=0.1)
    assert all(a > b for a, b in zip((x._version, m._version, v._version), before))


def test_torch_compile_of_a_function_calling_the_op():
    torch._dynamo.reset()

    def step(x, g, m, v, t):
        oblique_adam_([x], [g], [m], [v], [], [t], lr=0.1)
        return x.sum()

    gen = torch.Generator().manual_seed(5)
    x = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=1)
    g = torch.randn(4, 8, generator=gen)
    y = x.clone()
    args = (torch.zeros(4, 8), torch.zeros(4, 1), torch.tensor(1.0))
    try:
        torch.compile(step, backend="aot_eager", fullgraph=False)(x, g, *args)
    except Exception as err:  # pragma: no cover - a torch without a working compile
        pytest.skip(f"torch.compile unavailable here: {err}")
    oblique_adam_([y], [g], [torch.zeros(4, 8)], [torch.zeros(4, 1)], [], [args[2]], lr=0.1)
    assert torch.allclose(x, y, atol=1e-6), (x - y).abs().max()


_FALLBACK = """
    import torch
    from riemann_dnn.step.native import oblique_adam_, adam_native_available
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(6, 20, generator=gen, dtype=torch.float64), dim=1)
    m, v, t = torch.zeros_like(x), torch.zeros(6, 1, dtype=torch.float64), torch.tensor(0.0)
    for _ in range(3):
        t += 1
        g = torch.randn(6, 20, generator=gen, dtype=torch.float64)
        oblique_adam_([x], [g], [m], [v], [], [t], lr=0.1)
    print("AVAILABLE", adam_native_available())
    print("RESULT", repr(x.flatten().tolist()))
"""


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("how", ["env", "no-compiler"])
def test_fallback_gives_one_notice_and_same_numbers(how, tmp_path):
    env = dict(os.environ, RIEMANN_DNN_KERNEL_CACHE=str(tmp_path / "cache"))
    if how == "env":
        env["RIEMANN_DNN_NATIVE"] = "0"
    else:
        env.update(PATH=str(tmp_path / "empty"), CC=str(tmp_path / "nowhere" / "cc"))
    fallback = _run(_FALLBACK, env)
    assert fallback.returncode == 0, fallback.stderr
    notices = [
        line
        for line in fallback.stderr.splitlines()
        if "native oblique Adam kernel not used" in line
    ]
    assert len(notices) == 1, fallback.stderr
    assert "AVAILABLE False" in fallback.stdout
    if adam_native_available():
        native = _run(_FALLBACK, dict(os.environ))
        assert "AVAILABLE True" in native.stdout, native.stderr
        a = eval(fallback.stdout.split("RESULT ")[1])
        b = eval(native.stdout.split("RESULT ")[1])
        assert max(abs(u - v) for u, v in zip(a, b)) < 1e-12


@needs_native
def test_zero_rate_leaves_rows_bit_for_bit():
    x = torch.nn.functional.normalize(torch.randn(5, 9, dtype=torch.float64), dim=1)
    before = x.clone()
    state = _State([x], amsgrad=False)
    _native([x], [torch.randn(5, 9, dtype=torch.float64)], state.tick(), 0.0)
    # (w - 0 m) / |w| rounds, but stays within an ulp or two of the old row
    assert (x - before).abs().max().item() <= 4 * math.ulp(1.0)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", ["gradient-along-rows", "momentum-reversal", "plain"])
def test_rows_whose_sums_cancel_take_the_explicit_path_and_agree(case, dtype):
    """The kernel's two-pass path derives <r, r>, <m', m'> and |u|^2 from sums; where they
    cancel it forms the rows instead. Either way it equals the shared step."""
    gen = torch.Generator().manual_seed(8)
    manifold, shape = Oblique(6, 300, unit="rows"), (6, 300)
    x = manifold.random_point(dtype=torch.float64, generator=gen)
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    m = 0.1 * manifold.projection(x, torch.randn(shape, generator=gen, dtype=torch.float64))
    v = torch.full((6, 1), 0.5, dtype=torch.float64)
    if case == "gradient-along-rows":  # r = P_x(g) is 1e-6 of g
        g = 3.0 * x + 1e-6 * g
    elif case == "momentum-reversal":  # m' = 0.9 m + 0.1 r is 1e-6 of its parts
        r = manifold.projection(x, g)
        m = -(0.1 / 0.9) * r + 1e-6 * m
    hp = AdamHyperparameters(0.05, (0.9, 0.999), 1e-8, 0.0)
    expected, state = riemannian_adam_step(
        manifold, x.clone(), g.clone(), AdamState(m.clone(), v.clone()), 3, hp
    )
    point = x.to(dtype)
    first, second = m.to(dtype), v.to(dtype)
    oblique_adam_([point], [g.to(dtype)], [first], [second], [], [torch.tensor(3.0)], lr=0.05)
    tol = 1e-10 if dtype == torch.float64 else 2e-6
    err = (point.double() - expected).abs().max().item()
    assert err <= tol, f"{case}: point differs from the shared step by {err:.3g}"
    verr = ((second.double() - state.exp_avg_sq) / state.exp_avg_sq).abs().max().item()
    assert verr <= (1e-9 if dtype == torch.float64 else 1e-3), f"second moment: {verr:.3g}"
    norms = torch.linalg.vector_norm(point.double(), dim=1)
    assert (norms - 1).abs().max() <= (1e-14 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("where", [None, "first", "last", "strided"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_all_finite_finds_every_non_finite_entry(dtype, where, bad):
    from riemann_dnn.step.native import all_finite

    tensors = [torch.ones(3, 5, dtype=dtype), torch.ones(7000, dtype=torch.float32)]
    tensors.append(torch.ones(4, 6, dtype=dtype).t())  # not contiguous: torch's check
    if where == "first":
        tensors[0][1, 2] = bad
    elif where == "last":
        tensors[1][-1] = bad
    elif where == "strided":
        tensors[2][5, 3] = bad
    assert all_finite(tensors) is (where is None)
