"""The bench itself: every measurement of the package docstring in one run
(:func:`run_retraction_bench`), with the machine it ran on."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .archbn import train_archbn_variants
from .config import (
    ARCHBN_VARIANTS,
    DRIFT_STEP,
    DTYPES,
    ONE_STEP,
    ORDER_T_MAX,
    ORDER_TS,
    RETRACTIONS,
    cells_of,
    parse_size,
    size_name,
)
from .measure import chained_drift, scaled_tangent, time_call
from .order import agreement_order, exp_gaps, order_floor

__all__ = ["run_retraction_bench"]


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
    """Run every measurement (see :mod:`riemann_dnn.experiments.retractions`) and return
    the results as a dict (what :func:`~.report.write_retraction_report` writes).

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
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise ValueError(f"dtypes {bad}: choose from {sorted(DTYPES)}")
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
    cells = list(cells_of(families, parsed))
    order_cells = list(cells_of(families, [order_at]))
    drift_cells = list(cells_of(families, drift)) if steps > 0 else []
    variants = (
        list(archbn_variants)
        if archbn_variants is not None
        else [v for v in ARCHBN_VARIANTS if v[0] == "bsgd" or v[1] in families]
    )
    protocol = archbn_protocol
    if archbn and protocol is None:
        from ..config import quick_protocol

        protocol = quick_protocol()
    archbn_units = (
        len(variants) * (protocol.selection_epochs + protocol.max_epochs) if archbn else 0
    )
    total = len(cells) * len(dtypes) + len(order_cells) + len(drift_cells) + archbn_units
    with progress_bar(total=total, desc="bench retractions", unit="cell", enabled=progress) as bar:
        results: dict[str, Any] = {
            "config": {
                "sizes": [size_name(s) for s in parsed],
                "dtypes": list(dtypes),
                "device": str(dev),
                "steps": steps,
                "drift_sizes": [size_name(s) for s in drift],
                "order_size": size_name(order_at),
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
                bar.set_postfix_str(f"time {family} {retraction} {size_name(size)} {dtype_name}")
                dtype = DTYPES[dtype_name]
                x = manifold.random_point(device=dev, dtype=dtype, generator=seed)
                u = scaled_tangent(manifold, x, ONE_STEP, seed + 1)
                median, repeats, y = time_call(
                    partial(manifold.retraction, x, u), device=dev, budget_s=budget_s
                )
                timing.append(
                    {
                        "family": family,
                        "retraction": retraction,
                        "size": size_name(size),
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
            v = scaled_tangent(manifold, x, 1.0, seed + 1)  # |v| = sqrt(p): 1 per filter
            theory = type(manifold).retractions[retraction]
            if retraction == "exp":
                errors = [0.0] * len(ORDER_TS)
            else:
                errors = exp_gaps(family, manifold, x, v)
            fit = agreement_order(ORDER_TS, errors, floor=order_floor(x))
            orders.append(
                {
                    "family": family,
                    "retraction": retraction,
                    "size": size_name(size),
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
            bar.set_postfix_str(f"drift {family} {retraction} {size_name(size)}")
            x = manifold.random_point(device=dev, dtype=torch.float32, generator=seed)
            marks = [10**k for k in range(1, 8) if 10**k < steps]
            record = chained_drift(manifold, x, steps, seed=seed + 2, checkpoints=marks)
            drifts.append(
                {
                    "family": family,
                    "retraction": retraction,
                    "size": size_name(size),
                    "dtype": "float32",
                    "violation_start": manifold.constraint_violation(x),
                    **record,
                    "curve": {str(k): v for k, v in record["curve"].items()},
                }
            )
            bar.update(1)
        results["drift"] = drifts

        results["archbn"] = (
            train_archbn_variants(
                variants, protocol, archbn_runs, data_dir, source, dev, out_dir, seed, bar
            )
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
