r"""Stochastic solvers on the finite sums of their papers (``riemann-dnn bench stochastic``):
R-SGD, R-SVRG and R-SRG on PCA (synthetic data with a set eigengap, MNIST images) and on
low-rank matrix completion, all on the Grassmann manifold, per retraction and vector
transport; optimality gap against passes over the data and against seconds, test RMSE for
matrix completion.

One idea per module: :mod:`.config` (what is compared, the presets), :mod:`.bench` (the runs
and the step-size rule), :mod:`.report` (the files, written through
:mod:`riemann_dnn.experiments.records`).
"""

from __future__ import annotations

from .bench import build_problem, first_pass_below, linear_rate, run_stochastic_bench
from .config import (
    FULL,
    NATURAL_TRANSPORT,
    PROBLEMS,
    QUICK,
    RETRACTIONS,
    SOLVERS,
    TRANSPORTS,
    BenchConfig,
    combinations,
)
from .report import plot_stochastic, stochastic_markdown, summary_rows, write_stochastic_report

__all__ = [
    "PROBLEMS",
    "SOLVERS",
    "RETRACTIONS",
    "TRANSPORTS",
    "NATURAL_TRANSPORT",
    "BenchConfig",
    "QUICK",
    "FULL",
    "combinations",
    "build_problem",
    "run_stochastic_bench",
    "linear_rate",
    "first_pass_below",
    "summary_rows",
    "stochastic_markdown",
    "plot_stochastic",
    "write_stochastic_report",
]
