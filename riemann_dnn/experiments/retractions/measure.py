"""Time per call of a retraction, and its drift from the manifold over chained steps."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .config import DRIFT_STEP

__all__ = ["time_call", "chained_drift"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scaled_tangent(manifold, point, length_per_filter: float, generator) -> torch.Tensor:
    """A random tangent vector with :math:`\\|U\\|_F = \\ell\\sqrt{p}`."""
    filters = min(point.shape[-2:])
    return manifold.random_tangent_vector(point, generator=generator) * (
        length_per_filter * math.sqrt(filters)
    )


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
