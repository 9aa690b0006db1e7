"""The native row-oblique kernel equals the shared step, its eager fallback, and keeps
non-finite rows and huge rates from leaving the sphere."""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from riemann_dnn.manifolds import Oblique
from riemann_dnn.step import SGDHyperparameters, riemannian_sgd_step
from riemann_dnn.step.fused import oblique_sgd_eager_
from riemann_dnn.step.native import native_available, native_unavailable_reason, oblique_sgd_

REPO = Path(__file__).resolve().parents[2]
needs_native = pytest.mark.skipif(
    not native_available(), reason=f"native kernel unavailable: {native_unavailable_reason()}"
)

OPTIONS = [
    dict(momentum=0.0),
    dict(momentum=0.0, weight_decay=0.01, maximize=True),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(momentum=0.9, nesterov=True, maximize=True),
    dict(momentum=0.5, nesterov=True, weight_decay=0.02),
]
SHAPES = [(7, 13), (5, 100), (3, 4608 + 3)]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _reference(shape, dtype, opts, steps, seed, lr=0.1):
    """Points, buffers and gradients of ``steps`` shared steps (float32 work for halves)."""
    gen = torch.Generator().manual_seed(seed)
    manifold = Oblique(*shape, unit="rows")
    work = torch.float64 if dtype == torch.float64 else torch.float32
    x = manifold.random_point(dtype=work, generator=gen).to(dtype)
    hp = SGDHyperparameters(
        lr,
        opts.get("momentum", 0.0),
        opts.get("dampening", 0.0),
        opts.get("nesterov", False),
        opts.get("weight_decay", 0.0),
    )
    grads = [torch.randn(shape, generator=gen, dtype=work).to(dtype) for _ in range(steps)]
    ref, buf, points = x.to(work), None, []
    for g in grads:
        g_work = g.to(work)
        ref, buf = riemannian_sgd_step(
            manifold, ref, -g_work if opts.get("maximize") else g_work, buf, hp
        )
        ref = ref.to(dtype).to(work)  # the optimizer stores the point in its dtype
        points.append((ref, buf))
    return x, grads, points


@needs_native
@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
def test_native_step_equals_shared_step(dtype, shape, opts):
    x, grads, expected = _reference(shape, dtype, opts, steps=3, seed=0)
    buf = None
    for g, (ref, ref_buf) in zip(grads, expected):
        (buf,) = oblique_sgd_([x], [g], [buf], lr=0.1, **opts)
        err = (x.to(ref.dtype) - ref).abs().max().item()
        assert err <= TOL[dtype], f"{dtype} {shape} {opts}: point differs by {err:.3g}"
        if opts["momentum"]:
            assert buf.dtype == ref_buf.dtype
            berr = (buf - ref_buf).abs().max().item()
            assert berr <= 10 * TOL[dtype], f"buffer differs by {berr:.3g}"
        else:
            assert buf is None


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
def test_native_equals_eager_fallback(dtype, opts):
    gen = torch.Generator().manual_seed(3)
    shapes = [(6, 10), (4, 33)]
    work = torch.float64 if dtype == torch.float64 else torch.float32
    xs = [
        torch.nn.functional.normalize(torch.randn(s, generator=gen, dtype=work), dim=1).to(dtype)
        for s in shapes
    ]
    ys = [x.clone() for x in xs]
    bufs, eager_bufs = [None, None], None
    for _ in range(3):
        gs = [torch.randn(s, generator=gen, dtype=work).to(dtype) for s in shapes]
        bufs = oblique_sgd_(xs, gs, bufs, lr=0.05, **opts)
        if opts["momentum"]:
            first = eager_bufs is None
            if first:
                eager_bufs = [torch.empty_like(y, dtype=work) for y in ys]
        lr = torch.tensor([0.05], dtype=torch.float64)
        args = {
            k: opts.get(k, d)
            for k, d in (
                ("momentum", 0.0),
                ("dampening", 0.0),
                ("nesterov", False),
                ("weight_decay", 0.0),
                ("maximize", False),
            )
        }
        oblique_sgd_eager_(
            ys,
            gs,
            eager_bufs if opts["momentum"] else [],
            lr,
            args["momentum"],
            args["dampening"],
            args["nesterov"],
            args["weight_decay"],
            args["maximize"],
            opts["momentum"] != 0 and first,
            torch.zeros(1),
        )
        for x, y in zip(xs, ys):
            err = (x.to(work) - y.to(work)).abs().max().item()
            assert err <= TOL[dtype], f"native and eager differ by {err:.3g}"


@needs_native
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_one_rate_per_stacked_copy(momentum):
    gen = torch.Generator().manual_seed(1)
    manifold = Oblique(5, 7, unit="rows")
    xs = torch.stack([manifold.random_point(dtype=torch.float64, generator=gen) for _ in range(3)])
    gs = torch.randn(xs.shape, generator=gen, dtype=torch.float64)
    rates = torch.tensor([0.3, 0.0, 0.01], dtype=torch.float64)
    stacked = xs.clone()
    oblique_sgd_([stacked], [gs], [None], lr=rates, momentum=momentum)
    for i, rate in enumerate(rates.tolist()):
        single, _ = riemannian_sgd_step(
            manifold, xs[i], gs[i], None, SGDHyperparameters(rate, momentum=momentum)
        )
        err = (stacked[i] - single).abs().max().item()
        assert err <= 1e-12, f"copy {i} (rate {rate}) differs by {err:.3g}"


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_nonfinite_rows_are_left_untouched_and_flagged(dtype, momentum):
    gen = torch.Generator().manual_seed(2)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    x = torch.nn.functional.normalize(torch.randn(6, 40, generator=gen, dtype=work), dim=1).to(
        dtype
    )
    g = torch.randn(6, 40, generator=gen, dtype=work).to(dtype)
    g[1, 3], g[4, 0] = float("nan"), float("inf")
    before = x.clone()
    found = torch.zeros(1)
    (buf,) = oblique_sgd_([x], [g], [None], lr=0.1, momentum=momentum, found_nonfinite=found)
    assert found.item() == 1
    assert torch.equal(x[[1, 4]], before[[1, 4]]), "bad rows changed"
    good = [0, 2, 3, 5]
    assert not torch.equal(x[good], before[good]), "good rows were not stepped"
    assert torch.isfinite(x).all()
    if momentum:
        assert torch.isfinite(buf).all() and (buf[[1, 4]] == 0).all()
        old_buf = buf.clone()
        oblique_sgd_([x], [g], [buf], lr=0.1, momentum=momentum)
        assert torch.equal(buf[[1, 4]], old_buf[[1, 4]]), "bad rows' buffer changed"
    clean = torch.zeros(1)
    oblique_sgd_([x], [torch.ones_like(g)], [None], lr=0.1, found_nonfinite=clean)
    assert clean.item() == 0


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("lr", [1e30, 3e38, 1e300])
def test_huge_rates_keep_rows_unit_norm(dtype, momentum, lr):
    if dtype == torch.float32 and lr > 3.4e38:
        lr = 3.4e38
    gen = torch.Generator().manual_seed(4)
    x = torch.nn.functional.normalize(torch.randn(8, 50, generator=gen, dtype=dtype), dim=1)
    g = torch.randn(8, 50, generator=gen, dtype=dtype) * 10
    found = torch.zeros(1)
    buf = None
    for _ in range(2):
        (buf,) = oblique_sgd_([x], [g], [buf], lr=lr, momentum=momentum, found_nonfinite=found)
    norms = torch.linalg.vector_norm(x, dim=1)
    assert torch.isfinite(x).all(), "a row became non-finite"
    assert (norms - 1).abs().max() < 1e-5, f"norms {norms}"
    assert found.item() == 0


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


_FALLBACK = """
    import torch
    from riemann_dnn.step.native import oblique_sgd_, native_available
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(6, 20, generator=gen, dtype=torch.float64), dim=1)
    buf = None
    for _ in range(3):
        g = torch.randn(6, 20, generator=gen, dtype=torch.float64)
        (buf,) = oblique_sgd_([x], [g], [buf], lr=0.1, momentum=0.9)
    print("AVAILABLE", native_available())
    print("RESULT", repr(x.flatten().tolist()))
"""


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
        if "native oblique SGD kernel not used" in line
    ]
    assert len(notices) == 1, fallback.stderr
    assert "AVAILABLE False" in fallback.stdout
    if native_available():
        native = _run(_FALLBACK, dict(os.environ))
        assert "AVAILABLE True" in native.stdout, native.stderr
        a = eval(fallback.stdout.split("RESULT ")[1])
        b = eval(native.stdout.split("RESULT ")[1])
        assert max(abs(u - v) for u, v in zip(a, b)) < 1e-12


@needs_native
def test_second_process_reuses_the_cached_kernel(tmp_path):
    env = dict(os.environ, RIEMANN_DNN_KERNEL_CACHE=str(tmp_path))
    code = """
        from riemann_dnn.step.native.build import load
        lib, _ = load()
        print("COMPILED", lib.compiled, lib.path)
    """
    first, second = _run(code, env), _run(code, env)
    assert "COMPILED True" in first.stdout, first.stderr
    assert "COMPILED False" in second.stdout, second.stderr
    path = Path(second.stdout.split()[-1])
    assert path.parent.parent == tmp_path and path.exists()


@needs_native
def test_version_counters_see_the_update():
    x = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    before = x._version
    oblique_sgd_([x], [torch.randn(4, 8)], [None], lr=0.1)
    assert x._version > before


def test_torch_compile_of_a_function_calling_the_op():
    torch._dynamo.reset()

    def step(x, g):
        oblique_sgd_([x], [g], [None], lr=0.1)
        return x.sum()

    gen = torch.Generator().manual_seed(5)
    x = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=1)
    g = torch.randn(4, 8, generator=gen)
    y = x.clone()
    try:
        compiled = torch.compile(step, backend="aot_eager", fullgraph=False)
        compiled(x, g)
    except Exception as err:  # pragma: no cover - a torch without a working compile
        pytest.skip(f"torch.compile unavailable here: {err}")
    oblique_sgd_([y], [g], [None], lr=0.1)
    assert torch.allclose(x, y, atol=1e-6), (x - y).abs().max()


@pytest.mark.skipif(not native_available(), reason="no C compiler: the native kernel is absent")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("where", [None, 0, 4095, 4096, 9999])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_prepared_all_finite_finds_every_non_finite_entry(dtype, where, bad):
    from riemann_dnn.step.native import PreparedStep

    points = [torch.zeros(1, 7, dtype=dtype), torch.zeros(2, 5000, dtype=dtype)]
    grads = [torch.full((1, 7), 3.0, dtype=dtype), torch.full((2, 5000), 1e4, dtype=dtype)]
    if where is not None:
        grads[1].view(-1)[where] = bad
    step = PreparedStep(points, [False, False], None)
    assert step.all_finite(step._ptr(*[g.data_ptr() for g in grads])) is (where is None)


@pytest.mark.skipif(not native_available(), reason="no C compiler: the native kernel is absent")
def test_prepared_plain_rows_equal_torch_sgd_bit_for_bit():
    from riemann_dnn.step.native import PreparedStep

    gen = torch.Generator().manual_seed(0)
    for hyper in (
        dict(momentum=0.9, weight_decay=1e-2),
        dict(momentum=0.9, nesterov=True),
        dict(momentum=0.5, dampening=0.3),
        dict(),
    ):
        ours = torch.randn(3, 37, generator=gen)
        theirs = ours.clone().requires_grad_()
        buf = torch.empty_like(ours) if hyper.get("momentum") else None
        step = PreparedStep([ours], [False], None if buf is None else [buf])
        sgd = torch.optim.SGD([theirs], lr=0.1, **hyper)
        for k in range(3):
            g = torch.randn(3, 37, generator=gen)
            theirs.grad = g.clone()
            sgd.step()
            step([g], lr=0.1, first_step=k == 0, **hyper)
            assert torch.equal(ours, theirs.detach()), (hyper, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("n", [1, 255, 1024, 1031, 4 * 256 * 16 + 7, 70001])
def test_all_finite_finds_an_entry_in_every_part_of_its_walk(dtype, n):
    """The check walks an array as four equal parts in lockstep, then the tail: one inf or
    NaN anywhere -- the first and last entry of each part, either side of a part's edge,
    the tail -- is found, in an array of any length; a finite array passes."""
    from riemann_dnn.step.native import all_finite, native_available

    if not native_available():
        pytest.skip("no C compiler")
    part = n // 4 // 256 * 256
    places = {0, n - 1, 4 * part, max(4 * part - 1, 0)}
    for s in range(4):
        places |= {s * part, s * part + part - 1, s * part + part // 2}
    g = torch.randn(n, dtype=dtype, generator=torch.Generator().manual_seed(n))
    assert all_finite([g])
    for place in sorted(p for p in places if 0 <= p < n):
        for bad in (math.nan, math.inf, -math.inf):
            h = g.clone()
            h[place] = bad
            assert not all_finite([h]), f"{bad} at {place} of {n} not found"
