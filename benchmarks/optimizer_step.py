"""What one ``optimizer.step()`` of RiemannianSGD costs next to ``torch.optim.SGD``.

Parameter sets (random gradients, fixed across steps):

- ``archbn-d2``: the paper's depth-2 network -- W1 64x784, W2 64x32 (BN-fed), BN scale and
  shift 2x64 per layer, classifier theta 10x32;
- ``archbn-d4``: depth 4 -- two more 64x32 layers and their BN vectors;
- ``conv4``: four conv layers 64x64x7x7 (BN-fed) with their BN vectors (0.8M weights);
- ``segnet-vgg16``: the 26 BN-fed convs of a VGG16-BN SegNet encoder+decoder
  (``riemann_dnn.models.SegNet(11, width=64)``, 29.5M weights), its BN vectors and classifier.
- ``rows-576``, ``rows-1152``, ``rows-2304``, ``rows-4608`` (opt-in, headline table): one
  BN-fed conv weight of 14.7M entries whose rows are that long (:data:`ROW_SETS`).

Methods, each with ``foreach`` on and off, momentum 0 and 0.9:

- ``SGD``: ``torch.optim.SGD`` (the baseline);
- ``RSGD-euclid``: ``RiemannianSGD`` with every parameter Euclidean (its overhead alone);
- ``UN``: ``RiemannianSGD`` with the BN-fed weights on the oblique manifold (Table 1), the
  rest Euclidean. With ``foreach`` the oblique weights take the fused in-place kernel;
  without, the readable per-tensor path through the shared step;
- ``UN(unchecked)`` (headline table): ``UN`` with ``nonfinite="unchecked"``, which skips the
  read of every gradient before the step (what torch's SGD, which checks nothing, is);
- ``geoopt`` (when geoopt is installed; ``pip install riemann-dnn[benchmarks]``): geoopt's
  ``RiemannianSGD`` with each BN-fed weight a ``ManifoldParameter`` on ``geoopt.Sphere`` of
  shape ``(out, in*k*k)`` (geoopt's sphere is the last axis: one unit-norm row per filter).

A table for each kind of symmetry ``param_groups`` finds: ``RiemannianSGD.step`` on the
groups it builds for four 64x64x7x7 convs followed by BatchNorm (per filter), GroupNorm(32)
(per group: ``"oblique:groups=32"``), a channels-last LayerNorm (whole tensor:
``"oblique:groups=1"``) or weight standardization (per filter), per constrained element and
against the BatchNorm row: every kind takes the same row-fused kernel.

The headline table (first; ``--headline-only`` for it alone) times, on ``archbn-d4`` and
``segnet-vgg16`` with 1 and 2 threads (``--headline-threads``), the methods of
:data:`HEADLINE` -- ``RiemannianSGD``'s default path (on the CPU: the native row-fused
kernel, :mod:`riemann_dnn.step.native`, one C call per set of param groups) as ``UN``,
``RSGD-euclid``, ``SGD(foreach=True)`` and geoopt -- against ``SGD(fused=True)``, torch's
fastest CPU path, and the kernel's first-call time (compile into a fresh cache, then load
from it). Target (issue 19), one thread: UN <= 1.15x SGD(fused) at momentum 0 and 0.9 on
both sets. A new optimizer adds its rows to :data:`HEADLINE` with its own baseline.

Each round takes one sample (``--inner`` consecutive steps) of every method, in a rotating
order, so that a busy spell slows every method of the round; reported: the median per step
and, per method, the median and interquartile range of its per-round ratio to its baseline.
``--clock thread`` times this thread's CPU time instead of the wall clock: on a machine
shared with other work it moves far less (with one thread it is the step's own cost). The
machine (CPU model, cores, load average at the start and end, torch, clock) is printed and
written with the results. A second table times a full training iteration (zero_grad,
forward, backward, step; batch 100) of an ArchBN (riemann_dnn.models.ArchBN), UN against
SGD: the paper says UN costs about what SGD does; the project's target is a UN epoch <= 1.05x
a B-SGD one::

    python benchmarks/optimizer_step.py --device cpu --repeats 200
    python benchmarks/optimizer_step.py --headline-only --headline-threads 1 --clock thread

The Adam table (``--adam``; ``--adam-only`` for it alone) times, on ``archbn-d4`` and
``segnet-vgg16``, one thread, ``RiemannianAdam`` with the BN-fed weights oblique (its
default path, and ``fused=True``: torch's fused Adam for the Euclidean weights) against
``torch.optim.Adam(fused=True)`` (torch's fastest CPU path; target <= 1.2x),
``torch.optim.Adam()`` and geoopt's ``RiemannianAdam`` (target: >= 5x faster), with the
interquartile range of each method's samples::

    python benchmarks/optimizer_step.py --adam-only --repeats 200

``--kernel-rows`` adds a table of the native kernel alone
(:class:`~riemann_dnn.step.native.PreparedStep`, plain and oblique rows, no gradient check)
against ``SGD(fused=True)``, all three stepping the same weight of each ``rows-N`` shape, so
that where each tensor lies in memory cancels out::

    python benchmarks/optimizer_step.py --headline-only --headline-threads --adam-only \
        --kernel-rows --big-repeats 31 --clock thread

``--threads`` (default 1) sizes torch's thread pool: with two, the pool's threads spin
against whatever else runs on the machine and per-step times scatter widely.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import riemann_dnn
from riemann_dnn.models import ArchBN
from riemann_dnn.optim import RiemannianAdam, RiemannianSGD
from riemann_dnn.params import param_groups

# (name, shape, BN-fed?)
PARAMETER_SETS: dict[str, list[tuple[str, tuple[int, ...], bool]]] = {
    "archbn-d2": [("W1", (64, 784), True), ("W2", (64, 32), True)]
    + [(f"bn{k}.{v}", (64,), False) for k in (1, 2) for v in ("weight", "bias")]
    + [("theta", (10, 32), False)],
    "archbn-d4": [("W1", (64, 784), True)]
    + [(f"W{k}", (64, 32), True) for k in (2, 3, 4)]
    + [(f"bn{k}.{v}", (64,), False) for k in (1, 2, 3, 4) for v in ("weight", "bias")]
    + [("theta", (10, 32), False)],
    "conv4": [(f"conv{k}", (64, 64, 7, 7), True) for k in (1, 2, 3, 4)]
    + [(f"bn{k}.{v}", (64,), False) for k in (1, 2, 3, 4) for v in ("weight", "bias")],
}


#: Opt-in sets (``--sets rows-576 ... rows-4608``): one BN-fed conv weight of 14,745,600
#: entries (the VGG set's largest layer, 512x512x3x3, is 2.4M), its rows 64, 128, 256 or 512
#: input channels times 3x3 long -- where the row-fused kernel's cost moves with the row
#: length alone (a row of 4608 floats and its gradient no longer fit a 32 KiB L1 cache).
ROW_SETS: dict[str, list[tuple[str, tuple[int, ...], bool]]] = {
    f"rows-{c * 9}": [("conv", (14_745_600 // (c * 9), c, 3, 3), True)]
    for c in (64, 128, 256, 512)
}
BIG_SETS = ("segnet-vgg16", *ROW_SETS)  # timed with --big-repeats samples of one step


def _spec(set_name: str) -> list[tuple[str, tuple[int, ...], bool]]:
    if set_name == "segnet-vgg16":
        return _segnet_spec()
    return ROW_SETS[set_name] if set_name in ROW_SETS else PARAMETER_SETS[set_name]


def _segnet_spec() -> list[tuple[str, tuple[int, ...], bool]]:
    from riemann_dnn.models import SegNet
    from riemann_dnn.params import scale_invariant_weights

    model = SegNet(11, width=64)
    fed = set(scale_invariant_weights(model))
    return [(n, tuple(p.shape), n in fed) for n, p in model.named_parameters()]


try:
    import geoopt
except ImportError:  # optional
    geoopt = None

METHODS = ("SGD", "RSGD-euclid", "UN") + (("geoopt",) if geoopt is not None else ())
LR = 1e-4  # small: the oblique weights stay far from aligning with the fixed gradients


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _optimizer(
    method: str,
    spec,
    momentum: float,
    foreach: bool,
    device: torch.device,
    seed: int = 0,
    nonfinite: str = "raise",
) -> torch.optim.Optimizer:
    gen = torch.Generator().manual_seed(seed)
    params, invariant = [], []
    for _, shape, fed in spec:
        p = nn.Parameter(torch.randn(shape, generator=gen).to(device))
        p.grad = torch.randn(shape, generator=gen).to(device)
        params.append(p)
        invariant.append(fed)
    if method == "SGD":
        return torch.optim.SGD(params, lr=LR, momentum=momentum, foreach=foreach)
    if method == "RSGD-euclid":
        return RiemannianSGD(params, lr=LR, momentum=momentum, foreach=foreach)
    if method == "geoopt":
        sphere = geoopt.Sphere()
        wrapped = []
        for p, fed in zip(params, invariant):
            if fed:
                q = geoopt.ManifoldParameter(
                    sphere.projx(p.detach().reshape(p.shape[0], -1)), manifold=sphere
                )
                q.grad = p.grad.reshape(q.shape)
                wrapped.append(q)
            else:
                wrapped.append(p)
        return geoopt.optim.RiemannianSGD(wrapped, lr=LR, momentum=momentum)
    groups = [
        {"params": [p for p, f in zip(params, invariant) if f], "manifold": "oblique"},
        {"params": [p for p, f in zip(params, invariant) if not f]},
    ]
    return RiemannianSGD(groups, lr=LR, momentum=momentum, foreach=foreach, nonfinite=nonfinite)


#: The clock of every sample: ``"wall"`` (time.perf_counter) or ``"thread"``
#: (time.thread_time: this thread's CPU time, which a loaded machine inflates far less).
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}
_clock = time.perf_counter


def _interleaved(
    samplers: dict[str, callable], repeats: int, inner: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each sampler, ``repeats`` rounds of one sample (``inner``
    calls) per sampler, rotating the order of the samplers every round; sample ``r`` of
    each sampler comes from round ``r`` (for per-round ratios)."""
    names = list(samplers)
    for name in names:  # warm-up (allocations, first momentum step, caches)
        for _ in range(max(3, inner)):
            samplers[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = _clock()
            for _ in range(inner):
                samplers[name]()
            _sync(device)
            times[name].append((_clock() - start) / inner)
    return times


def ratio_summary(times: dict[str, list[float]], name: str, baseline: str) -> dict:
    """The median and interquartile range of the per-round ratios ``name / baseline``
    (rounds interleave the methods, so a busy spell slows both sides of a ratio)."""
    ratios = sorted(a / b for a, b in zip(times[name], times[baseline]))
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"median": statistics.median(ratios), "q1": q1, "q3": q3}


def machine() -> dict:
    """What ran the benchmark: CPU model, logical cores, load averages, torch and threads."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "load_average": load,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": next(k for k, v in CLOCKS.items() if v is _clock),
    }


def measure_steps(
    sets, repeats: int, inner: int, device: torch.device, big_repeats: int | None = None
) -> list[dict]:
    rows = []
    for set_name in sets:
        if set_name in BIG_SETS and big_repeats is not None:
            rows += measure_steps([set_name], big_repeats, 1, device)
            continue
        spec = _spec(set_name)
        for momentum in (0.0, 0.9):
            samplers = {}
            for foreach in (True, False):
                for method in METHODS:
                    if method == "geoopt" and not foreach:
                        continue  # geoopt has one path
                    opt = _optimizer(method, spec, momentum, foreach, device)
                    samplers[(method, foreach)] = opt.step
            times = _interleaved(samplers, repeats, inner, device)
            medians = {key: statistics.median(ts) for key, ts in times.items()}
            for (method, foreach), median in medians.items():
                rows.append(
                    {
                        "set": set_name,
                        "momentum": momentum,
                        "foreach": foreach,
                        "method": method,
                        "us_per_step": 1e6 * median,
                        "ratio_to_sgd_same_foreach": median / medians[("SGD", foreach)],
                        "ratio_to_sgd_foreach": median / medians[("SGD", True)],
                        "parameters": sum(int(torch.Size(s).numel()) for _, s, _ in spec),
                    }
                )
    return rows


# -- full training iterations ------------------------------------------------------------------
def _training_iteration(
    method: str, depth: int, momentum: float, device: torch.device, batch: int
):
    torch.manual_seed(0)
    model = ArchBN(depth, generator=torch.Generator().manual_seed(0)).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 784, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    if method == "SGD":
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=momentum, foreach=True)
    else:
        opt = RiemannianSGD(param_groups(model), lr=LR, momentum=momentum)

    def iteration():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return iteration


def measure_iterations(
    depths, repeats: int, inner: int, device: torch.device, batch: int = 100
) -> list[dict]:
    rows = []
    for depth in depths:
        for momentum in (0.0, 0.9):
            samplers = {
                m: _training_iteration(m, depth, momentum, device, batch) for m in ("SGD", "UN")
            }
            times = _interleaved(samplers, repeats, inner, device)
            medians = {m: statistics.median(ts) for m, ts in times.items()}
            for method, median in medians.items():
                rows.append(
                    {
                        "depth": depth,
                        "momentum": momentum,
                        "method": method,
                        "batch": batch,
                        "us_per_iteration": 1e6 * median,
                        "ratio_to_sgd": median / medians["SGD"],
                    }
                )
    return rows


# -- the headline table: RiemannianSGD (its native fast path) vs torch and geoopt ----------
def _first_call_seconds() -> dict:
    """Seconds to compile the kernel into a fresh cache (a subprocess), and to load it
    from that cache in a second one."""
    import os
    import subprocess
    import sys
    import tempfile

    code = (
        "import time; t = time.perf_counter(); from riemann_dnn.step.native.build import "
        "load; lib, why = load(); print(time.perf_counter() - t, lib is not None and "
        "lib.compiled, why)"
    )
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, RIEMANN_DNN_KERNEL_CACHE=cache)
        for label in ("compile", "cached"):
            proc = subprocess.run(
                [sys.executable, "-c", code],
                env=env,
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parents[1],
            )
            out[f"{label}_s"] = float(proc.stdout.split()[0]) if proc.returncode == 0 else None
    return out


def _un(spec, momentum, device, nonfinite="raise"):
    return _optimizer("UN", spec, momentum, True, device, nonfinite=nonfinite)


#: The headline's methods: (name, builder(spec, momentum, device), baseline name or None).
#: Ratios are of each method to its baseline, per round. A new optimizer adds its rows
#: (e.g. RiemannianAdam against Adam(fused=True)).
HEADLINE: list[tuple[str, callable, str | None]] = [
    ("SGD(fused)", lambda spec, m, d: _fused_sgd(spec, m, d), None),
    ("SGD(foreach)", lambda spec, m, d: _optimizer("SGD", spec, m, True, d), "SGD(fused)"),
    ("UN", _un, "SGD(fused)"),
    ("UN(unchecked)", lambda spec, m, d: _un(spec, m, d, "unchecked"), "SGD(fused)"),
    ("RSGD-euclid", lambda spec, m, d: _optimizer("RSGD-euclid", spec, m, True, d), "SGD(fused)"),
]
if geoopt is not None:
    HEADLINE.append(("geoopt", lambda s, m, d: _optimizer("geoopt", s, m, True, d), "SGD(fused)"))


def measure_headline(
    sets,
    repeats: int,
    inner: int,
    device: torch.device,
    big_repeats: int | None,
    threads: list[int],
) -> list[dict]:
    """Every :data:`HEADLINE` method, interleaved: the median time per step and the
    median and interquartile range of its per-round ratio to its baseline."""
    rows = []
    for set_name in sets:
        spec = _spec(set_name)
        reps, inn = (big_repeats or repeats, 1) if set_name in BIG_SETS else (repeats, inner)
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for momentum in (0.0, 0.9):
                samplers = {
                    name: build(spec, momentum, device).step for name, build, _ in HEADLINE
                }
                times = _interleaved(samplers, reps, inn, device)
                for name, _, baseline in HEADLINE:
                    ratio = ratio_summary(times, name, baseline) if baseline else None
                    rows.append(
                        {
                            "set": set_name,
                            "threads": n_threads,
                            "momentum": momentum,
                            "method": name,
                            "baseline": baseline,
                            "us_per_step": 1e6 * statistics.median(times[name]),
                            "ratio": ratio,
                            "samples": reps,
                        }
                    )
                print(
                    f"{set_name} threads={n_threads} momentum={momentum:g}: "
                    + ", ".join(
                        f"{r['method']} {r['us_per_step']:.0f}us"
                        + (
                            f" ({r['ratio']['median']:.2f} [{r['ratio']['q1']:.2f}, "
                            f"{r['ratio']['q3']:.2f}])"
                            if r["ratio"]
                            else ""
                        )
                        for r in rows[-len(HEADLINE) :]
                    ),
                    flush=True,
                )
    return rows


def measure_kernel_rows(repeats: int) -> list[dict]:
    """The native kernel's plain and oblique rows (:class:`~riemann_dnn.step.native.
    PreparedStep`, no gradient check) against ``SGD(fused=True)``, all three stepping the
    same weight and gradient (one :data:`ROW_SETS` weight, viewed as ``(rows, n)``), so
    that where each tensor lies in memory cancels out of the ratios: what the row length
    alone costs. One thread, interleaved rounds of one step."""
    from riemann_dnn.step.native import PreparedStep

    rows = []
    for set_name, [(_, shape, _)] in ROW_SETS.items():
        gen = torch.Generator().manual_seed(0)
        flat = torch.nn.functional.normalize(torch.randn(shape, generator=gen).flatten(1))
        weight = nn.Parameter(flat.view(shape))
        weight.grad = torch.randn(shape, generator=gen)
        point, grads = weight.detach().view(flat.shape), [weight.grad.view(flat.shape)]
        for momentum in (0.0, 0.9):
            sgd = torch.optim.SGD([weight], lr=LR, momentum=momentum, fused=True)
            samplers = {"SGD(fused)": sgd.step}
            for name, normalize in (("plain rows", False), ("oblique rows", True)):
                buffers = [torch.zeros_like(point)] if momentum else None
                step = PreparedStep([point], [normalize], buffers, params=[weight])
                samplers[name] = functools.partial(step, grads, lr=LR, momentum=momentum)
            times = _interleaved(samplers, repeats, 1, torch.device("cpu"))
            for name in samplers:
                rows.append(
                    {
                        "set": set_name,
                        "row_length": flat.shape[1],
                        "momentum": momentum,
                        "method": name,
                        "us_per_step": 1e6 * statistics.median(times[name]),
                        "ratio": None
                        if name == "SGD(fused)"
                        else ratio_summary(times, name, "SGD(fused)"),
                        "samples": repeats,
                    }
                )
            print(
                f"{set_name} momentum={momentum:g}: "
                + ", ".join(
                    f"{r['method']} {r['us_per_step']:.0f}us"
                    + (f" ({r['ratio']['median']:.2f})" if r["ratio"] else "")
                    for r in rows[-3:]
                ),
                flush=True,
            )
    return rows


def _kernel_rows_markdown(rows) -> str:
    lines = [
        "## The kernel's rows against SGD(fused=True) on the same tensors",
        "",
        "One weight of 14.7M float32 entries viewed as (rows, n); the native kernel's plain "
        "(Euclidean) and oblique rows, no gradient check, and torch's fused SGD, all stepping "
        "that weight with that gradient; one thread; per-round ratio, median [IQR].",
        "",
        "| row length | momentum | SGD(fused) us | plain rows / SGD(fused) | oblique rows / "
        "SGD(fused) |",
        "|---:|---:|---:|---|---|",
    ]
    for i in range(0, len(rows), 3):
        base, plain, oblique = rows[i : i + 3]
        cells = [
            f"{r['ratio']['median']:.2f} [{r['ratio']['q1']:.2f}, {r['ratio']['q3']:.2f}]"
            for r in (plain, oblique)
        ]
        lines.append(
            f"| {base['row_length']} | {base['momentum']:g} | {base['us_per_step']:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _fused_sgd(spec, momentum, device):
    opt = _optimizer("SGD", spec, momentum, True, device)
    for group in opt.param_groups:
        group["foreach"], group["fused"] = False, True
    return opt


def _headline_markdown(rows, first_call, meta) -> str:
    lines = [
        "## RiemannianSGD (default: the native fast path) against torch.optim.SGD and geoopt",
        "",
        f"{meta['machine']['cpu']}, {meta['machine']['logical_cores']} logical cores, load "
        f"average {meta['machine']['load_average']} at the start; torch "
        f"{meta['machine']['torch']}; clock: {meta['machine']['clock']}. First call: compile "
        f"{first_call.get('compile_s')} s, load from cache {first_call.get('cached_s')} s "
        "(fresh processes, including the Python start). UN = RiemannianSGD with the BN-fed "
        "weights oblique (default nonfinite='raise': every gradient checked before any weight "
        "moves). Ratio: median over interleaved rounds of the per-round ratio to the "
        "baseline, with its interquartile range.",
        "",
        "| set | threads | momentum | method | us / step (median) | / baseline | IQR |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        ratio = r["ratio"]
        lines.append(
            f"| {r['set']} | {r['threads']} | {r['momentum']:g} | {r['method']} | "
            f"{r['us_per_step']:.1f} | "
            + (
                f"{ratio['median']:.2f} x {r['baseline']} | [{ratio['q1']:.2f}, {ratio['q3']:.2f}] |"
                if ratio
                else "baseline | |"
            )
        )
    return "\n".join(lines) + "\n"


# -- the Adam table: RiemannianAdam against torch.optim.Adam and geoopt ----------------------
ADAM_LR = 1e-3


def _adam_optimizer(method: str, spec, device: torch.device) -> torch.optim.Optimizer:
    """One of the Adam table's methods over fresh parameters of ``spec`` (random gradients,
    fixed across steps; the same seed for every method)."""
    gen = torch.Generator().manual_seed(0)
    params, invariant = [], []
    for _, shape, fed in spec:
        p = nn.Parameter(torch.randn(shape, generator=gen).to(device))
        p.grad = torch.randn(shape, generator=gen).to(device)
        params.append(p)
        invariant.append(fed)
    if method == "Adam(fused)":
        return torch.optim.Adam(params, lr=ADAM_LR, fused=True)
    if method == "Adam":
        return torch.optim.Adam(params, lr=ADAM_LR)
    if method == "geoopt":
        sphere, wrapped = geoopt.Sphere(), []
        for p, fed in zip(params, invariant):
            if fed:  # geoopt's sphere is the last axis: one unit-norm row per filter
                q = geoopt.ManifoldParameter(
                    sphere.projx(p.detach().reshape(p.shape[0], -1)), manifold=sphere
                )
                q.grad = p.grad.reshape(q.shape)
                p = q
            wrapped.append(p)
        return geoopt.optim.RiemannianAdam(wrapped, lr=ADAM_LR)
    groups = [
        {"params": [p for p, f in zip(params, invariant) if f], "manifold": "oblique"},
        {"params": [p for p, f in zip(params, invariant) if not f]},
    ]
    fused = True if method.startswith("RAdam(fused") else None
    nonfinite = "unchecked" if method.endswith("unchecked)") else "raise"
    return RiemannianAdam(groups, lr=ADAM_LR, fused=fused, nonfinite=nonfinite)


ADAM_METHODS = ("Adam(fused)", "Adam", "RAdam(fused)", "RAdam(fused, unchecked)", "RAdam") + (
    ("geoopt",) if geoopt is not None else ()
)


def measure_adam(sets, repeats: int, inner: int, device, big_repeats: int | None) -> list[dict]:
    """RiemannianAdam (UN's weights oblique) against torch.optim.Adam and geoopt,
    interleaved; per method the median seconds per step and its interquartile range."""
    rows = []
    for set_name in sets:
        spec = _spec(set_name)
        reps, inn = (big_repeats or repeats, 1) if set_name in BIG_SETS else (repeats, inner)
        samplers = {m: _adam_optimizer(m, spec, device).step for m in ADAM_METHODS}
        times = _interleaved(samplers, reps, inn, device)
        medians = {k: statistics.median(v) for k, v in times.items()}
        for method, ts in times.items():
            q1, _, q3 = statistics.quantiles(ts, n=4) if len(ts) > 1 else (ts[0],) * 3
            rows.append(
                {
                    "set": set_name,
                    "threads": torch.get_num_threads(),
                    "method": method,
                    "samples": len(ts),
                    "us_per_step": 1e6 * medians[method],
                    "us_q1": 1e6 * q1,
                    "us_q3": 1e6 * q3,
                    "ratio_to_adam_fused": medians[method] / medians["Adam(fused)"],
                    "ratio_to_adam": medians[method] / medians["Adam"],
                    "geoopt_over_this": (
                        medians["geoopt"] / medians[method] if "geoopt" in medians else None
                    ),
                }
            )
        print(
            f"{set_name} (Adam): "
            + ", ".join(
                f"{k} {1e6 * v:.0f}us ({v / medians['Adam(fused)']:.2f})"
                for k, v in medians.items()
            ),
            flush=True,
        )
    return rows


def _adam_markdown(rows) -> str:
    lines = [
        "## RiemannianAdam against torch.optim.Adam and geoopt",
        "",
        "RAdam = RiemannianAdam with the BN-fed weights oblique, the rest Euclidean (default "
        "flags; RAdam(fused): fused=True, torch's fused Adam for the Euclidean weights; "
        "unchecked: nonfinite='unchecked', no read of the gradients before the step); "
        "geoopt = geoopt.optim.RiemannianAdam with each BN-fed weight on geoopt.Sphere of "
        "shape (out, in*k*k). Median per step, interquartile range of the samples, ratios "
        "of medians measured in the same interleaved run. Targets (issue 19, one thread): "
        "RAdam <= 1.2x Adam(fused), geoopt >= 5x RAdam.",
        "",
        "| set | threads | method | us / step | IQR (us) | / Adam(fused) | / Adam "
        "| geoopt / this |",
        "|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        geo = "-" if r["geoopt_over_this"] is None else f"{r['geoopt_over_this']:.1f}"
        lines.append(
            f"| {r['set']} | {r['threads']} | {r['method']} | {r['us_per_step']:.1f} | "
            f"{r['us_q1']:.1f}-{r['us_q3']:.1f} | {r['ratio_to_adam_fused']:.2f} | "
            f"{r['ratio_to_adam']:.2f} | {geo} |"
        )
    return "\n".join(lines) + "\n"


# -- reporting ---------------------------------------------------------------------------------
def _markdown(step_rows, iteration_rows, meta) -> str:
    lines = [
        "# RiemannianSGD: cost of one optimizer step",
        "",
        f"Device {meta['device']}, torch {meta['torch']} ({meta['threads']} threads), "
        f"{meta['repeats']} samples of {meta['inner']} steps, median per step. "
        "UN = BN-fed weights on the oblique manifold (Table 1), the rest Euclidean; "
        "RSGD-euclid = RiemannianSGD with every parameter Euclidean. Ratios are of medians "
        "measured in the same run.",
        "",
        "| set | momentum | foreach | method | us / step | / SGD (same foreach) "
        "| / SGD(foreach) |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for r in step_rows:
        lines.append(
            f"| {r['set']} | {r['momentum']:g} | {'on' if r['foreach'] else 'off'} | "
            f"{r['method']} | {r['us_per_step']:.1f} | {r['ratio_to_sgd_same_foreach']:.2f} | "
            f"{r['ratio_to_sgd_foreach']:.2f} |"
        )
    lines += [
        "",
        f"## Full training iteration (zero_grad + forward + backward + step, batch "
        f"{iteration_rows[0]['batch'] if iteration_rows else '-'})",
        "",
        "ArchBN; SGD = torch.optim.SGD(foreach=True) on everything (B-SGD); UN = "
        "RiemannianSGD (default foreach) with the BN-fed weights oblique. Target: UN <= 1.05x.",
        "",
        "| depth | momentum | method | us / iteration | / SGD |",
        "|---:|---:|---|---:|---:|",
    ]
    for r in iteration_rows:
        lines.append(
            f"| {r['depth']} | {r['momentum']:g} | {r['method']} | "
            f"{r['us_per_iteration']:.1f} | {r['ratio_to_sgd']:.3f} |"
        )
    return "\n".join(lines) + "\n"


# -- each kind of symmetry param_groups finds, stepped by the row kernel -------------------------
KINDS = {  # model: four 64x64x7x7 convs, each followed by ...
    "batchnorm": "BatchNorm2d: per filter, 'oblique' (the baseline)",
    "groupnorm": "GroupNorm(32): per group of 2 filters, 'oblique:groups=32'",
    "layernorm": "channels-last LayerNorm: whole tensor, 'oblique:groups=1'",
    "ws": "weight standardization (StdConv2d) + ReLU: per filter, 'oblique'",
}


class _StdConv2d(nn.Conv2d):
    def forward(self, x):
        w = self.weight.reshape(1, self.out_channels, -1)
        w = torch.nn.functional.batch_norm(w, None, None, training=True, momentum=0.0, eps=1e-6)
        return self._conv_forward(x, w.reshape_as(self.weight), None)


class _LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _kind_model(kind: str) -> nn.Module:
    layers = []
    for _ in range(4):
        conv = (_StdConv2d if kind == "ws" else nn.Conv2d)(64, 64, 7, padding=3, bias=False)
        norm = {
            "batchnorm": lambda: nn.BatchNorm2d(64),
            "groupnorm": lambda: nn.GroupNorm(32, 64),
            "layernorm": lambda: _LayerNorm2d(64),
            "ws": nn.ReLU,
        }[kind]()
        layers += [conv, norm]
    return nn.Sequential(*layers)


def measure_symmetry_kinds(repeats: int, inner: int, device: torch.device) -> list[dict]:
    """``RiemannianSGD.step`` on the groups ``param_groups`` finds in four-conv models whose
    weights are invariant per filter (BatchNorm; weight standardization), per group of
    filters (GroupNorm) and as a whole (LayerNorm), against ``SGD(foreach=True)`` on the same
    parameters; the cost per constrained element, and its ratio to the BatchNorm row."""
    rows = []
    for momentum in (0.0, 0.9):
        samplers, elements, manifolds = {}, {}, {}
        for kind in KINDS:
            torch.manual_seed(0)
            model = _kind_model(kind).to(device)
            groups = param_groups(model, example_input=torch.randn(2, 64, 8, 8, device=device))
            for p in model.parameters():
                p.grad = torch.randn_like(p)
            constrained = [g for g in groups if g["manifold"] != "euclidean"]
            manifolds[kind] = sorted({g["manifold"] for g in constrained})
            elements[kind] = sum(p.numel() for g in constrained for p in g["params"])
            samplers[("RSGD", kind)] = RiemannianSGD(groups, lr=LR, momentum=momentum).step
            twin = _kind_model(kind).to(device)  # SGD on its own copy: no shared tensors
            for p in twin.parameters():
                p.grad = torch.randn_like(p)
            sgd = torch.optim.SGD(twin.parameters(), lr=LR, momentum=momentum, foreach=True)
            samplers[("SGD", kind)] = sgd.step
        times = _interleaved(samplers, repeats, inner, device)
        medians = {key: statistics.median(ts) for key, ts in times.items()}
        for kind in KINDS:
            step = medians[("RSGD", kind)]
            rows.append(
                {
                    "kind": kind,
                    "model": KINDS[kind],
                    "manifolds": manifolds[kind],
                    "momentum": momentum,
                    "constrained_elements": elements[kind],
                    "us_per_step": 1e6 * step,
                    "ns_per_constrained_element": 1e9 * step / elements[kind],
                    "ratio_to_batchnorm": step / medians[("RSGD", "batchnorm")],
                    "ratio_to_sgd_foreach": step / medians[("SGD", kind)],
                }
            )
    return rows


def _kinds_markdown(rows) -> str:
    lines = [
        "",
        "## Each kind of symmetry (param_groups on four 64x64x7x7 convs)",
        "",
        "| followed by | manifold | momentum | us/step | ns/element | / BatchNorm row | / SGD(foreach) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {', '.join(r['manifolds'])} | {r['momentum']} | "
            f"{r['us_per_step']:.1f} | {r['ns_per_constrained_element']:.3f} | "
            f"{r['ratio_to_batchnorm']:.2f} | {r['ratio_to_sgd_foreach']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=200, help="samples per method")
    parser.add_argument("--inner", type=int, default=5, help="steps per sample")
    parser.add_argument(
        "--sets",
        nargs="+",
        choices=[*PARAMETER_SETS, "segnet-vgg16", *ROW_SETS],
        default=[*PARAMETER_SETS, "segnet-vgg16"],
        help="parameter sets (default: all but the opt-in rows-N sets)",
    )
    parser.add_argument(
        "--big-repeats",
        type=int,
        default=10,
        help="samples per method for segnet-vgg16 (29.5M weights) and the rows-N sets",
    )
    parser.add_argument(
        "--depths",
        type=int,
        nargs="*",
        default=[2, 4],
        help="ArchBN depths for the training-iteration table (none: skip)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1: stable numbers)"
    )
    parser.add_argument(
        "--headline-only",
        action="store_true",
        help="only the headline table (archbn-d4, segnet-vgg16)",
    )
    parser.add_argument(
        "--headline-threads",
        type=int,
        nargs="*",
        default=[1, 2],
        help="thread counts for the headline table (none: skip it)",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall (time.perf_counter) or thread (this thread's CPU time: steadier on a "
        "loaded machine; with one thread it is the step's own cost)",
    )
    parser.add_argument(
        "--adam",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the Adam table (archbn-d4, segnet-vgg16; --threads threads)",
    )
    parser.add_argument("--adam-only", action="store_true", help="only the Adam table")
    parser.add_argument(
        "--kernel-rows",
        action="store_true",
        help="add the table of the native kernel's rows against SGD(fused) on the same "
        "tensors, by row length (one thread; --big-repeats rounds)",
    )
    args = parser.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]
    if args.repeats < 1 or args.inner < 1:
        parser.error(f"--repeats and --inner must be >= 1, got {args.repeats}, {args.inner}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch.cuda.is_available() is False here")
    torch.set_num_threads(max(1, args.threads))
    start_machine = machine()
    print(f"machine: {start_machine}", flush=True)

    adam_sets = [s for s in args.sets if s in ("archbn-d4", "segnet-vgg16")]
    adam_rows = (
        measure_adam(adam_sets, args.repeats, args.inner, device, args.big_repeats)
        if args.adam or args.adam_only
        else []
    )
    if args.adam_only:
        args.headline_threads, args.headline_only = [], True
    first_call = _first_call_seconds() if args.headline_threads else {}
    headline_rows = (
        measure_headline(
            [s for s in args.sets if s in ("archbn-d4", "segnet-vgg16", *ROW_SETS)],
            args.repeats,
            args.inner,
            device,
            args.big_repeats,
            args.headline_threads,
        )
        if args.headline_threads
        else []
    )
    torch.set_num_threads(1)
    kernel_rows = measure_kernel_rows(args.big_repeats) if args.kernel_rows else []
    torch.set_num_threads(max(1, args.threads))
    step_rows, iteration_rows, kind_rows = [], [], []
    if not args.headline_only:
        kind_rows = measure_symmetry_kinds(args.repeats, args.inner, device)
        step_rows = measure_steps(args.sets, args.repeats, args.inner, device, args.big_repeats)
        iteration_rows = measure_iterations(
            args.depths, max(1, args.repeats // 2), args.inner, device
        )
    meta = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "riemann_dnn": riemann_dnn.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "repeats": args.repeats,
        "inner": args.inner,
        "lr": LR,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": start_machine,
        "load_average_end": machine()["load_average"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / "optimizer_step.json", args.out / "optimizer_step.md"
    json_path.write_text(
        json.dumps(
            {
                "meta": meta,
                "steps": step_rows,
                "iterations": iteration_rows,
                "headline": headline_rows,
                "symmetry_kinds": kind_rows,
                "adam": adam_rows,
                "kernel_rows": kernel_rows,
                "native_first_call": first_call,
            },
            indent=2,
        )
    )
    markdown = _markdown(step_rows, iteration_rows, meta) + _kinds_markdown(kind_rows)
    if headline_rows:
        markdown += "\n" + _headline_markdown(headline_rows, first_call, meta)
    if adam_rows:
        markdown += "\n" + _adam_markdown(adam_rows)
    if kernel_rows:
        markdown += "\n" + _kernel_rows_markdown(kernel_rows)
    md_path.write_text(markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
