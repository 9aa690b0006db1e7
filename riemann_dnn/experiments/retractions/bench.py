r"""Compare retractions: cost, accuracy (distance from the manifold, agreement with exp) and
effect on training (``riemann-dnn bench retractions``).

For a ``p x n`` weight (``p`` filters of size ``n``) the manifolds are

- ``oblique``: ``Oblique(p, n, unit="rows")``, retractions ``normalize`` and ``exp``;
- ``stiefel``: ``Stiefel(n, p)`` (the point is :math:`W^T`, orthonormal rows of :math:`W`;
  ``Stiefel(p, n)`` if ``p > n``), retractions ``qr``, ``polar``, ``cayley``, ``exp``;
- ``grassmann``: ``Grassmann(n, p)`` (the row space of :math:`W`), retractions ``qr``,
  ``polar``, ``exp``; skipped for square sizes, where :math:`\mathrm{Gr}(n, n)` is a point.

Measured, in one run (so ratios compare like with like):

- time per call: median over repeats after a warm-up call, and the ratio to the cheapest
  retraction of the same manifold, size and dtype;
- distance from the manifold (``constraint_violation``) after that call, with a step of
  :math:`\|U\|_F = 0.1\sqrt{p}` (about 0.1 per filter), and after ``steps`` chained small
  steps (:math:`\|U\|_F = 0.01\sqrt p`, a fresh random tangent direction each step) in
  float32;
- the agreement order with exp: :math:`e(t) = d(R_x(tv), \exp_x(tv))` (Frobenius distance;
  subspace distance for Grassmann) over :math:`t = 10^0 \dots 10^{-5}` in float64;
  :func:`agreement_order` fits the slope of :math:`\log e` against :math:`\log t` where
  :math:`t \le 0.1` and :math:`e` is above rounding; the slope is order + 1;
- optionally, ArchBN (depth 2) under :func:`~.protocol.quick_protocol` per
  constraint/retraction: test error and epoch time.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...manifolds import Grassmann, Oblique, Stiefel

__all__ = [
    "RETRACTIONS",
    "ARCHBN_VARIANTS",
    "OrderFit",
    "parse_size",
    "build_manifold",
    "agreement_order",
    "exp_gaps",
    "time_call",
    "chained_drift",
    "run_retraction_bench",
    "write_retraction_report",
]

#: Manifold family -> retractions compared (each family's ``retractions`` dict gives the
#: theoretical order of agreement with exp).
RETRACTIONS: dict[str, tuple[str, ...]] = {
    "oblique": ("normalize", "exp"),
    "stiefel": ("qr", "polar", "cayley", "exp"),
    "grassmann": ("qr", "polar", "exp"),
}

#: ArchBN variants trained by the bench: (method, constraint, retraction). "bsgd" is the
#: Euclidean reference. The protocol uses no momentum, so the transport does not matter.
ARCHBN_VARIANTS: tuple[tuple[str, str, str | None], ...] = (
    ("bsgd", "oblique", None),
    ("un", "oblique", "normalize"),
    ("un", "oblique", "exp"),
    ("un", "stiefel", "qr"),
    ("un", "stiefel", "polar"),
    ("un", "stiefel", "cayley"),
    ("un", "stiefel", "exp"),
    ("un", "grassmann", "qr"),
    ("un", "grassmann", "polar"),
    ("un", "grassmann", "exp"),
)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
ONE_STEP = 0.1  # |U|_F / sqrt(p) for the single-call measurement
DRIFT_STEP = 0.01  # |U|_F / sqrt(p) for each of the chained steps
ORDER_TS = tuple(float(t) for t in np.logspace(0, -5, 16))
ORDER_T_MAX = 0.1  # fit only t <= this (the asymptotic regime)


# -- the manifolds -------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    """``"64x784"`` -> ``(64, 784)``: ``p`` filters of size ``n``."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        rows, cols = (int(part) for part in parts)
    except ValueError:
        raise ValueError(
            f"size {text!r}: expected ROWSxCOLS (filters x filter size), e.g. 64x784"
        ) from None
    if rows < 1 or cols < 1:
        raise ValueError(f"size {text!r}: both dimensions must be >= 1")
    return rows, cols


def build_manifold(family: str, retraction: str, rows: int, cols: int):
    """The manifold of ``family`` for a ``rows x cols`` weight, or ``None`` when it has
    dimension 0 (Grassmann of a square weight)."""
    low, high = min(rows, cols), max(rows, cols)
    if family == "oblique":
        return Oblique(rows, cols, unit="rows", retraction=retraction)
    if family == "stiefel":
        return Stiefel(high, low, retraction=retraction)
    if family == "grassmann":
        return None if low == high else Grassmann(high, low, retraction=retraction)
    raise ValueError(f"unknown manifold family {family!r}; choose from {sorted(RETRACTIONS)}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _scaled_tangent(manifold, point, length_per_filter: float, generator) -> torch.Tensor:
    """A random tangent vector with :math:`\\|U\\|_F = \\ell\\sqrt{p}`."""
    filters = min(point.shape[-2:])
    return manifold.random_tangent_vector(point, generator=generator) * (
        length_per_filter * math.sqrt(filters)
    )


# -- agreement order ---------------------------------------------------------------------------
@dataclass(frozen=True)
class OrderFit:
    """A log-log fit of :math:`e(t)`: ``slope`` (= order + 1), ``order`` (``slope - 1``) and
    the ``t`` range the fit used (``points`` values). ``slope`` is NaN when fewer than
    ``min_points`` values are usable, ``inf`` when every error is exactly 0 (exp itself)."""

    slope: float
    points: int
    t_min: float
    t_max: float

    @property
    def order(self) -> float:
        return self.slope - 1


def agreement_order(
    ts: Sequence[float],
    errors: Sequence[float],
    *,
    floor: float = 0.0,
    t_max: float = ORDER_T_MAX,
    min_points: int = 3,
) -> OrderFit:
    r"""The least-squares slope of :math:`\log e` against :math:`\log t`, over the points
    with :math:`t \le` ``t_max`` (the asymptotic regime) and :math:`e >` ``floor`` (above
    rounding, e.g. :math:`10^3\varepsilon`).

    For a retraction of order :math:`k`, :math:`e(t) = d(R_x(tv), \exp_x(tv)) = O(t^{k+1})`,
    so the slope is :math:`k + 1`.

    Example::

        >>> ts = [1e-1, 1e-2, 1e-3]
        >>> round(agreement_order(ts, [t**3 for t in ts]).slope, 6)
        3.0
    """
    t = np.asarray(ts, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    if t.shape != e.shape or t.ndim != 1:
        raise ValueError(
            f"agreement_order: ts and errors must be 1-D of one length, got "
            f"shapes {t.shape} and {e.shape}"
        )
    if np.all(e == 0):
        return OrderFit(math.inf, 0, math.nan, math.nan)
    keep = (t > 0) & (t <= t_max) & np.isfinite(e) & (e > floor)
    if int(keep.sum()) < min_points:
        return OrderFit(math.nan, int(keep.sum()), math.nan, math.nan)
    slope = float(np.polyfit(np.log(t[keep]), np.log(e[keep]), 1)[0])
    return OrderFit(slope, int(keep.sum()), float(t[keep].min()), float(t[keep].max()))


def _gap(family: str, manifold, a: torch.Tensor, b: torch.Tensor) -> float:
    if family == "grassmann":  # bases differ between retractions: compare subspaces
        return float(manifold.dist(a, b))
    return float(torch.linalg.vector_norm(a - b))


def exp_gaps(
    family: str,
    manifold,
    point: torch.Tensor,
    direction: torch.Tensor,
    ts: Sequence[float] = ORDER_TS,
) -> list[float]:
    """:math:`e(t) = d(R_x(tv), \\exp_x(tv))` for each ``t``."""
    return [
        _gap(
            family,
            manifold,
            manifold.retraction(point, t * direction),
            manifold.exp(point, t * direction),
        )
        for t in ts
    ]


def _order_floor(point: torch.Tensor) -> float:
    """Errors below this are rounding (:math:`10^3\\varepsilon\\sqrt{p}`)."""
    return 1e3 * torch.finfo(point.dtype).eps * math.sqrt(min(point.shape[-2:]))


# -- timing and drift ----------------------------------------------------------------------------
def time_call(
    fn: Callable[[], Any],
    *,
    device: torch.device | str = "cpu",
    budget_s: float = 0.5,
    min_repeats: int = 3,
    max_repeats: int = 25,
) -> tuple[float, int, Any]:
    """Median wall time of ``fn()`` after one warm-up call: ``(median_s, repeats, result)``.

    Repeats until ``budget_s`` is spent (at least ``min_repeats``, at most ``max_repeats``);
    a call slower than ``budget_s`` is repeated only twice. CUDA work is synchronised.
    """
    device = torch.device(device)
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    warm = time.perf_counter() - start
    least = 2 if warm > budget_s else min_repeats
    times: list[float] = []
    while len(times) < max_repeats and (len(times) < least or sum(times) < budget_s):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(times), result


def chained_drift(
    manifold,
    point: torch.Tensor,
    steps: int,
    *,
    step: float = DRIFT_STEP,
    seed: int = 0,
    checkpoints: Sequence[int] = (),
) -> dict[str, Any]:
    """Apply ``steps`` retractions in a chain, each along a fresh random tangent vector of
    norm ``step * sqrt(p)``, and report ``constraint_violation`` at the end (and at
    ``checkpoints``); ``point``'s dtype is kept (float32 in the bench)."""
    generator = torch.Generator(device=point.device).manual_seed(seed)
    scale = step * math.sqrt(min(point.shape[-2:]))
    marks = sorted({c for c in checkpoints if 0 < c < steps})
    curve = {}
    x = point
    for k in range(1, steps + 1):
        u = manifold.projection(
            x, torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        )
        x = manifold.retraction(x, u * (scale / torch.linalg.vector_norm(u)))
        if k in marks:
            curve[k] = manifold.constraint_violation(x)
    curve[steps] = manifold.constraint_violation(x)
    return {"steps": steps, "violation": curve[steps], "curve": curve}


# -- the bench ---------------------------------------------------------------------------------
def _cells(families: Sequence[str], sizes: Sequence[tuple[int, int]]):
    for family in families:
        for rows, cols in sizes:
            for retraction in RETRACTIONS[family]:
                manifold = build_manifold(family, retraction, rows, cols)
                if manifold is not None:
                    yield family, retraction, (rows, cols), manifold


def _size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def run_retraction_bench(
    *,
    sizes: Sequence[str | tuple[int, int]] = ("64x784", "512x4608", "1024x1024"),
    dtypes: Sequence[str] = ("float32", "float64"),
    device: str = "cpu",
    steps: int = 10_000,
    drift_sizes: Sequence[str | tuple[int, int]] | None = None,
    order_size: str | tuple[int, int] | None = None,
    families: Sequence[str] = tuple(RETRACTIONS),
    budget_s: float = 0.5,
    archbn: bool = True,
    archbn_runs: int = 2,
    archbn_variants: Sequence[tuple[str, str, str | None]] | None = None,
    archbn_protocol: Any = None,
    data_dir: str | None = None,
    source: str = "auto",
    out_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every measurement (see the module docstring) and return the results as a dict
    (what :func:`write_retraction_report` writes).

    Args:
        sizes: weight sizes ``"PxN"`` (``p`` filters of size ``n``) to time.
        dtypes: ``"float32"`` and/or ``"float64"`` for the timing.
        device: torch device of every array.
        steps: chained float32 steps of the drift measurement (0: skip it).
        drift_sizes: sizes of the drift measurement (default: the smallest of ``sizes``).
        order_size: size of the agreement-order measurement (default: the smallest).
        families: manifold families to measure (``oblique``, ``stiefel``, ``grassmann``).
        budget_s: time budget per timing cell (repeats stop when it is spent).
        archbn: also train ArchBN (depth 2) per constraint/retraction (quick protocol,
            ``archbn_runs`` seeds; data from ``data_dir``/``source`` as in
            :meth:`~.protocol.MNISTTensors.load`); run records go to ``out_dir/archbn``.
        archbn_variants: ``(method, constraint, retraction)`` triples (default: B-SGD and
            every retraction of ``families``, :data:`ARCHBN_VARIANTS`).
        archbn_protocol: a :class:`~.protocol.Protocol` (default
            :func:`~.protocol.quick_protocol`).
    """
    from ..progress import progress_bar

    unknown = [f for f in families if f not in RETRACTIONS]
    if unknown:
        raise ValueError(f"unknown manifold families {unknown}; choose from {sorted(RETRACTIONS)}")
    bad = [d for d in dtypes if d not in _DTYPES]
    if bad:
        raise ValueError(f"dtypes {bad}: choose from {sorted(_DTYPES)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    parsed = [parse_size(s) if isinstance(s, str) else tuple(s) for s in sizes]
    if not parsed:
        raise ValueError("sizes: give at least one size, e.g. 64x784")
    smallest = min(parsed, key=lambda s: s[0] * s[1])
    drift = (
        [parse_size(s) if isinstance(s, str) else tuple(s) for s in drift_sizes]
        if drift_sizes is not None
        else [smallest]
    )
    order_at = (
        (parse_size(order_size) if isinstance(order_size, str) else tuple(order_size))
        if order_size is not None
        else smallest
    )
    dev = torch.device(device)
    cells = list(_cells(families, parsed))
    order_cells = list(_cells(families, [order_at]))
    drift_cells = list(_cells(families, drift)) if steps > 0 else []
    variants = (
        list(archbn_variants)
        if archbn_variants is not None
        else [v for v in ARCHBN_VARIANTS if v[0] == "bsgd" or v[1] in families]
    )
    protocol = archbn_protocol
    if archbn and protocol is None:
        from ..protocol import quick_protocol

        protocol = quick_protocol()
    archbn_units = (
        len(variants) * (protocol.selection_epochs + protocol.max_epochs) if archbn else 0
    )
    total = len(cells) * len(dtypes) + len(order_cells) + len(drift_cells) + archbn_units
    with progress_bar(total=total, desc="bench retractions", unit="cell", enabled=progress) as bar:
        results: dict[str, Any] = {
            "config": {
                "sizes": [_size_name(s) for s in parsed],
                "dtypes": list(dtypes),
                "device": str(dev),
                "steps": steps,
                "drift_sizes": [_size_name(s) for s in drift],
                "order_size": _size_name(order_at),
                "families": list(families),
                "budget_s": budget_s,
                "one_step_per_filter": ONE_STEP,
                "drift_step_per_filter": DRIFT_STEP,
                "order_ts": list(ORDER_TS),
                "order_t_max": ORDER_T_MAX,
                "seed": seed,
            },
            "machine": _machine(dev),
        }
        start = time.perf_counter()

        timing = []
        for family, retraction, size, manifold in cells:
            for dtype_name in dtypes:
                bar.set_postfix_str(f"time {family} {retraction} {_size_name(size)} {dtype_name}")
                dtype = _DTYPES[dtype_name]
                x = manifold.random_point(device=dev, dtype=dtype, generator=seed)
                u = _scaled_tangent(manifold, x, ONE_STEP, seed + 1)
                median, repeats, y = time_call(
                    partial(manifold.retraction, x, u), device=dev, budget_s=budget_s
                )
                timing.append(
                    {
                        "family": family,
                        "retraction": retraction,
                        "size": _size_name(size),
                        "rows": size[0],
                        "cols": size[1],
                        "manifold": str(manifold),
                        "dtype": dtype_name,
                        "seconds": median,
                        "repeats": repeats,
                        "violation_one_call": manifold.constraint_violation(y),
                    }
                )
                bar.update(1)
        for row in timing:
            peers = [
                r["seconds"]
                for r in timing
                if (r["family"], r["size"], r["dtype"])
                == (row["family"], row["size"], row["dtype"])
            ]
            row["ratio_to_cheapest"] = row["seconds"] / min(peers)
        results["timing"] = timing

        orders = []
        for family, retraction, size, manifold in order_cells:
            bar.set_postfix_str(f"order {family} {retraction}")
            x = manifold.random_point(device=dev, dtype=torch.float64, generator=seed)
            v = _scaled_tangent(manifold, x, 1.0, seed + 1)  # |v| = sqrt(p): 1 per filter
            theory = type(manifold).retractions[retraction]
            if retraction == "exp":
                errors = [0.0] * len(ORDER_TS)
            else:
                errors = exp_gaps(family, manifold, x, v)
            fit = agreement_order(ORDER_TS, errors, floor=_order_floor(x))
            orders.append(
                {
                    "family": family,
                    "retraction": retraction,
                    "size": _size_name(size),
                    "theory_order": theory,
                    "slope": fit.slope,
                    "order": fit.order,
                    "fit_points": fit.points,
                    "fit_t_min": fit.t_min,
                    "fit_t_max": fit.t_max,
                    "ts": list(ORDER_TS),
                    "errors": errors,
                }
            )
            bar.update(1)
        results["orders"] = orders

        drifts = []
        for family, retraction, size, manifold in drift_cells:
            bar.set_postfix_str(f"drift {family} {retraction} {_size_name(size)}")
            x = manifold.random_point(device=dev, dtype=torch.float32, generator=seed)
            marks = [10**k for k in range(1, 8) if 10**k < steps]
            record = chained_drift(manifold, x, steps, seed=seed + 2, checkpoints=marks)
            drifts.append(
                {
                    "family": family,
                    "retraction": retraction,
                    "size": _size_name(size),
                    "dtype": "float32",
                    "violation_start": manifold.constraint_violation(x),
                    **record,
                    "curve": {str(k): v for k, v in record["curve"].items()},
                }
            )
            bar.update(1)
        results["drift"] = drifts

        results["archbn"] = (
            _archbn(variants, protocol, archbn_runs, data_dir, source, dev, out_dir, seed, bar)
            if archbn
            else None
        )
    results["seconds"] = time.perf_counter() - start
    return results


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _machine(device: torch.device) -> dict[str, Any]:
    import os

    info = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _archbn(variants, protocol, runs, data_dir, source, device, out_dir, seed, bar):
    import tempfile

    from ..progress import settle
    from ..protocol import METHODS, MNISTTensors, RunConfig, train_runs

    data = MNISTTensors.load(data_dir, source=source, device=device)
    root = Path(out_dir) / "archbn" if out_dir is not None else Path(tempfile.mkdtemp())
    rows = []
    for method, constraint, retraction in variants:
        label = METHODS[method].label if method != "un" else f"{constraint} {retraction}"
        bar.set_postfix_str(f"ArchBN {label}")
        configs = [
            RunConfig(
                depth=2,
                method=method,
                seed=seed + r,
                protocol=protocol,
                constraint=constraint,
                retraction=retraction,
                data=data.source,
                data_checksum=data.checksum,
                device=str(device),
                threads=torch.get_num_threads(),
            )
            for r in range(runs)
        ]
        records = train_runs(configs, data, root, device=device, progress=bar.update)
        settle(
            bar,
            protocol.selection_epochs + protocol.max_epochs,
            protocol.selection_epochs + max(r["epochs"] for r in records),
        )
        errors = [r["test_error"] for r in records]
        epoch = [statistics.fmean(r["epoch_seconds"]) for r in records]
        rows.append(
            {
                "method": method,
                "constraint": constraint if method == "un" else "euclidean",
                "retraction": retraction if method == "un" else None,
                "label": label,
                "runs": runs,
                "test_errors": errors,
                "mean": statistics.fmean(errors),
                "std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                "chosen_lrs": [r["chosen_lr"] for r in records],
                "epochs": [r["epochs"] for r in records],
                # runs are trained together: the ensemble's epoch time, and per run
                "epoch_seconds": statistics.fmean(epoch),
                "epoch_seconds_per_run": statistics.fmean(epoch) / len(records),
            }
        )
    return {
        "depth": 2,
        "protocol": _protocol_dict(protocol),
        "data": data.source,
        "runs_dir": str(root),
        "rows": rows,
    }


def _protocol_dict(protocol) -> dict[str, Any]:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(protocol)))


# -- report ------------------------------------------------------------------------------------
def _fmt_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _fmt_order(value: float | str) -> str:
    value = float(value)
    if math.isinf(value):
        return "∞"
    return "—" if math.isnan(value) else f"{value:.2f}"


def retraction_markdown(results: dict[str, Any], *, images: str = "") -> str:
    """The report as Markdown tables (``images``: the path prefix of the PNG files)."""
    config, machine = results["config"], results["machine"]
    lines = [
        "# Retractions: cost, accuracy, effect on training"
        + (
            " (full bench)"
            if config.get("full")
            else " (quick bench; --full for the whole)"
            if "full" in config
            else ""
        ),
        "",
        f"Sizes {', '.join(config['sizes'])}; dtypes {', '.join(config['dtypes'])}; "
        f"manifolds {', '.join(config['families'])}; {config['steps']} chained drift steps"
        + ("; ArchBN trained" if results.get("archbn") else "; no ArchBN training")
        + ".",
        "",
        f"Device `{config['device']}`"
        + (f" ({machine['gpu']})" if "gpu" in machine else "")
        + f", torch {machine['torch']}, {machine['torch_threads']} torch threads, "
        f"{machine['processor']} ({machine.get('cpu_count', '?')} CPUs); total "
        f"{results.get('seconds', 0):.0f} s.",
        "",
        "## Time per call and distance from the manifold",
        "",
        f"Median over repeats after a warm-up call (budget {config['budget_s']} s per cell); "
        "×: ratio to the cheapest retraction of the same manifold, size and dtype (same run). "
        f"Violation: `constraint_violation` after one call with ‖U‖ = "
        f"{config['one_step_per_filter']}·√p.",
        "",
    ]
    sizes, dtypes = config["sizes"], config["dtypes"]
    header = (
        "| manifold | retraction | " + " | ".join(f"{s} {d}" for s in sizes for d in dtypes) + " |"
    )
    lines += [header, "|---|---|" + "---:|" * (len(sizes) * len(dtypes))]
    timing = results["timing"]
    keys = list(dict.fromkeys((r["family"], r["retraction"]) for r in timing))
    for family, retraction in keys:
        cells = []
        for size in sizes:
            for dtype in dtypes:
                row = next(
                    (
                        r
                        for r in timing
                        if (r["family"], r["retraction"], r["size"], r["dtype"])
                        == (family, retraction, size, dtype)
                    ),
                    None,
                )
                cells.append(
                    "—"
                    if row is None
                    else f"{_fmt_seconds(row['seconds'])} ×{row['ratio_to_cheapest']:.2f}"
                    f" ({row['violation_one_call']:.0e})"
                )
        lines.append(f"| {family} | {retraction} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cells: median time ×ratio (violation after one call); repeats per cell: "
        f"{min(r['repeats'] for r in timing)}–{max(r['repeats'] for r in timing)}."
        if timing
        else "",
    ]
    if results["orders"]:
        lines += [
            "",
            f"## Agreement with exp (float64, size {config['order_size']})",
            "",
            "e(t) = ‖R(x, tv) − exp(x, tv)‖ (Grassmann: subspace distance), ‖v‖ = √p; "
            f"slope of log e vs log t over t ≤ {config['order_t_max']} with e above "
            "rounding (10³·ε·√p). Order = slope − 1.",
            "",
            "| manifold | retraction | theory order | measured order | slope | fit t range"
            " (points) |",
            "|---|---|---:|---:|---:|---|",
        ]
        for row in results["orders"]:
            rng = (
                "exp itself"
                if math.isinf(float(row["slope"]))
                else (f"{row['fit_t_min']:.0e} – {row['fit_t_max']:.0e} ({row['fit_points']})")
            )
            lines.append(
                f"| {row['family']} | {row['retraction']} | "
                f"{_fmt_order(row['theory_order'])} | {_fmt_order(row['order'])} | "
                f"{_fmt_order(row['slope'])} | {rng} |"
            )
    if results["drift"]:
        marks = sorted({int(k) for r in results["drift"] for k in r["curve"]})
        lines += [
            "",
            "## Drift from the manifold in float32",
            "",
            f"`constraint_violation` after k chained steps, ‖U‖ = "
            f"{config['drift_step_per_filter']}·√p each, fresh random direction.",
            "",
            "| manifold | retraction | size | start | "
            + " | ".join(f"k = {k:,}" for k in marks)
            + " |",
            "|---|---|---|---:|" + "---:|" * len(marks),
        ]
        for row in results["drift"]:
            cells = [
                f"{row['curve'][str(k)]:.1e}" if str(k) in row["curve"] else "—" for k in marks
            ]
            lines.append(
                f"| {row['family']} | {row['retraction']} | {row['size']} | "
                f"{row['violation_start']:.1e} | " + " | ".join(cells) + " |"
            )
    archbn = results.get("archbn")
    if archbn:
        protocol = archbn["protocol"]
        lines += [
            "",
            "## ArchBN (depth 2), quick protocol",
            "",
            f"Data `{archbn['data']}`; {protocol['selection_epochs']} selection epochs per "
            f"rate candidate, {protocol['min_epochs']}–{protocol['max_epochs']} training "
            "epochs, bold driver, no momentum; runs trained together as one ensemble.",
            "",
            "| constraint | retraction | test error (mean ± std) | runs | chosen lr | "
            "epochs | epoch s (ensemble) |",
            "|---|---|---|---:|---|---|---:|",
        ]
        for row in archbn["rows"]:
            lines.append(
                f"| {row['constraint']} | {row['retraction'] or '— (B-SGD)'} | "
                f"{row['mean']:.4f} ± {row['std']:.4f} | {row['runs']} | "
                f"{', '.join(f'{lr:.0e}' for lr in row['chosen_lrs'])} | "
                f"{', '.join(str(e) for e in row['epochs'])} | {row['epoch_seconds']:.2f} |"
            )
    lines += [
        "",
        f"![time vs size]({images}retractions_time.png)",
        "",
        f"![error vs t]({images}retractions_order.png)",
        "",
    ]
    if results["drift"]:
        lines += [f"![drift]({images}retractions_drift.png)", ""]
    return "\n".join(lines)


def write_retraction_report(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``retractions.json``, ``retractions.md`` and the PNG plots into ``out_dir``;
    returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "retractions.json", out / "retractions.md"]
    paths[0].write_text(json.dumps(_strict_json(results), indent=1, allow_nan=False))
    paths[1].write_text(retraction_markdown(results))
    paths += _plots(results, out)
    return paths


def _strict_json(value):
    """``value`` with non-finite floats as the strings ``"inf"``/``"nan"`` (strict JSON;
    ``float()`` reads them back)."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


_STYLE = {"normalize": "o-", "exp": "s-", "qr": "^-", "polar": "v-", "cayley": "D-"}


def _plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r["family"] for r in results["timing"]))
    sizes = list(results["config"]["sizes"])
    paths = []
    fig, axes = plt.subplots(
        1, max(len(families), 1), figsize=(5 * max(len(families), 1), 4), squeeze=False
    )
    for ax, family in zip(axes[0], families):
        rows = [r for r in results["timing"] if r["family"] == family]
        for retraction in dict.fromkeys(r["retraction"] for r in rows):
            for dtype, fill in (("float32", "full"), ("float64", "none")):
                pts = [
                    (sizes.index(r["size"]), r["seconds"])
                    for r in rows
                    if r["retraction"] == retraction and r["dtype"] == dtype
                ]
                if pts:
                    ax.plot(
                        *zip(*sorted(pts)),
                        _STYLE.get(retraction, "o-"),
                        fillstyle=fill,
                        color=f"C{list(_STYLE).index(retraction)}",
                        label=f"{retraction} {dtype}",
                    )
        ax.set_xticks(range(len(sizes)), [s.replace("x", "×") for s in sizes])
        ax.set_yscale("log")
        ax.set_xlabel("weight p×n (p filters of size n)")
        ax.set_ylabel("seconds per call (median)")
        ax.set_title(f"{family}")
        ax.legend(fontsize=7)
    fig.suptitle(f"Retraction time vs size ({results['config']['device']})")
    fig.tight_layout()
    paths.append(out / "retractions_time.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(
        1, max(len(families), 1), figsize=(5 * max(len(families), 1), 4), squeeze=False
    )
    for ax, family in zip(axes[0], families):
        for row in (r for r in results["orders"] if r["family"] == family):
            ts, errors = np.array(row["ts"]), np.array(row["errors"])
            slope, theory = float(row["slope"]), float(row["theory_order"])
            if math.isinf(slope):
                continue
            positive = errors > 0
            ax.plot(
                ts[positive],
                errors[positive],
                _STYLE.get(row["retraction"], "o-"),
                color=f"C{list(_STYLE).index(row['retraction'])}",
                label=f"{row['retraction']}: slope {_fmt_order(slope)} "
                f"(order {_fmt_order(theory)} → {_fmt_order(theory + 1)})",
            )
            if np.isfinite(slope):
                ax.axvspan(row["fit_t_min"], row["fit_t_max"], alpha=0.04, color="k")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_ylabel("d(R(x, tv), exp(x, tv))")
        ax.set_title(f"{family} (float64, {results['config']['order_size']})")
        ax.legend(fontsize=7)
    fig.suptitle("Agreement with the exponential map (shaded: fitted range)")
    fig.tight_layout()
    paths.append(out / "retractions_order.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if results["drift"]:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for index, row in enumerate(results["drift"]):
            pts = sorted((int(k), max(v, 1e-12)) for k, v in row["curve"].items())
            ax.plot(
                *zip(*pts),
                _STYLE.get(row["retraction"], "o-"),
                color=f"C{index % 10}",
                label=f"{row['family']} {row['retraction']} ({row['size']})",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("chained steps k (float32)")
        ax.set_ylabel("constraint violation")
        ax.set_title("Drift from the manifold")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "retractions_drift.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
