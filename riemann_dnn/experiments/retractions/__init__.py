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

One idea per module: :mod:`.config` (what is compared, the manifold of a weight),
:mod:`.order` (agreement with exp), :mod:`.measure` (time per call, drift),
:mod:`.archbn` (training), :mod:`.bench` (the whole run), :mod:`.report` and :mod:`.plots`
(the files, written through :mod:`riemann_dnn.experiments.records`).
"""

from __future__ import annotations

from .bench import run_retraction_bench
from .config import ARCHBN_VARIANTS, RETRACTIONS, build_manifold, parse_size
from .measure import chained_drift, time_call
from .order import OrderFit, agreement_order, exp_gaps
from .plots import plot_retractions
from .report import retraction_markdown, write_retraction_report

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
    "retraction_markdown",
    "write_retraction_report",
    "plot_retractions",
]
