r"""The order of agreement of a retraction with the exponential map:
:math:`e(t) = d(R_x(tv), \exp_x(tv))` and the slope of :math:`\log e` against :math:`\log t`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .config import ORDER_T_MAX, ORDER_TS

__all__ = ["OrderFit", "agreement_order", "exp_gaps"]


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


def order_floor(point: torch.Tensor) -> float:
    """Errors below this are rounding (:math:`10^3\\varepsilon\\sqrt{p}`)."""
    return 1e3 * torch.finfo(point.dtype).eps * math.sqrt(min(point.shape[-2:]))


def format_order(value: float | str) -> str:
    """An order or slope for the reports (``∞`` for exp's exact agreement)."""
    value = float(value)
    if math.isinf(value):
        return "∞"
    return "—" if math.isnan(value) else f"{value:.2f}"
