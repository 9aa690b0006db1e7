r"""Variance-reduced Riemannian solvers for finite sums: R-SVRG and R-SRG, with retraction
:math:`R` and vector transport :math:`\mathcal{T}` chosen by name.

For :math:`f = \frac1N\sum_i f_i` on a manifold, with :math:`\operatorname{grad} f_B` the
Riemannian gradient of the batch mean and step size :math:`\alpha_k`:

**R-SVRG** (Zhang, Reddi & Sra, NeurIPS 2016; Sato, Kasai & Mishra, SIAM J. Optim. 2019,
"with retraction and vector transport"). Each outer loop (an *epoch*) takes a snapshot
:math:`\tilde x = x_0` and its full gradient, then makes ``inner_iterations`` (:math:`m`)
updates

.. math::

    \xi_t = \operatorname{grad} f_{B_t}(x_t)
            - \mathcal{T}_{\tilde x \to x_t}\bigl(\operatorname{grad} f_{B_t}(\tilde x)
            - \operatorname{grad} f(\tilde x)\bigr), \qquad
    x_{t+1} = R_{x_t}(-\alpha_k \xi_t),

and the next snapshot is :math:`x_m` (the papers' option I). Cost of an epoch:
:math:`N + 2mb` component gradients (:math:`N + (2m - 1)b`: at :math:`t = 0` both batch
gradients are taken at the same point, once).

**R-SRG** (Kasai, Sato & Mishra, ICML 2018). Each epoch starts from :math:`x_0` with the full
gradient :math:`v_0 = \operatorname{grad} f(x_0)` and :math:`x_1 = R_{x_0}(-\alpha v_0)`,
then makes :math:`m` recursive updates

.. math::

    v_t = \operatorname{grad} f_{B_t}(x_t)
          - \mathcal{T}_{x_{t-1} \to x_t}\bigl(\operatorname{grad} f_{B_t}(x_{t-1}) - v_{t-1}\bigr),
    \qquad x_{t+1} = R_{x_t}(-\alpha_k v_t);

an epoch is :math:`m + 1` updates and costs :math:`N + 2mb` component gradients.

:math:`\mathcal{T}_{x\to y}` is the manifold's ``transport(x, y, v)``: projection,
parallel transport along the geodesic, or the differentiated retraction along
:math:`R_x^{-1}(y)` (``transport="differentiated"``), per factor of a product. The defaults
of :math:`m` follow RSOpt (Kasai's MATLAB code): :math:`\lceil 5N/b\rceil` for R-SVRG,
:math:`\lceil N/b\rceil` for R-SRG.

Example::

    problem = pca_problem(pca_data(10_000, 20, 5, seed=0), 5)   # Grassmann(20, 5)
    solver = RiemannianSVRG(batch_size=10, max_passes=50, step_size="fixed",
                            initial_step_size=0.05, retraction="qr",
                            transport="differentiated", seed=0, verbosity=0)
    result = solver.run(problem)            # result.log["iterations"]["optimality_gap"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .base import DEFAULT_MAX_ITERATIONS, Callback, FiniteSumSolver, StepSize

__all__ = ["RiemannianSVRG", "RiemannianSRG", "VarianceReducedSolver"]


def _difference(a: Any, b: Any) -> Any:
    """``a - b`` for arrays or lists of arrays (the Euclidean gradients of a product)."""
    if isinstance(a, list):
        return [x - y for x, y in zip(a, b)]
    return a - b


class VarianceReducedSolver(FiniteSumSolver):
    """The base of :class:`RiemannianSVRG` and :class:`RiemannianSRG`: epochs of
    ``inner_iterations`` updates that start from a full gradient, with a fixed step by
    default (see :class:`~riemann_dnn.solvers.FiniteSumSolver` for the shared options)."""

    #: the default ``inner_iterations`` in passes over the data: m = ceil(passes * N / b)
    default_inner_passes: ClassVar[float] = 1.0

    def __init__(
        self,
        batch_size: int = 10,
        max_iterations: int | None = DEFAULT_MAX_ITERATIONS,
        max_epochs: int | None = None,
        max_time: float | None = 1000,
        *,
        inner_iterations: int | None = None,
        max_passes: float | None = None,
        sampling: str = "without_replacement",
        step_size: StepSize = "fixed",
        initial_step_size: float = 0.1,
        step_size_decay: float = 0.1,
        decay_steps: int = 100,
        retraction: str | Sequence[str | None] | None = None,
        transport: str | Sequence[str | None] | None = None,
        check_period: int = 100,
        check_samples: int | None = None,
        min_gradient_norm: float = 0.0,
        min_step_size: float = 1e-10,
        callback: Callback | None = None,
        seed: int | np.random.Generator | None = None,
        verbosity: int = 2,
        log_verbosity: int = 0,
        progress_bar: bool = True,
        checkpoint: Any = None,
    ):
        super().__init__(
            batch_size,
            max_iterations,
            max_epochs,
            max_time,
            max_passes=max_passes,
            sampling=sampling,
            step_size=step_size,
            initial_step_size=initial_step_size,
            step_size_decay=step_size_decay,
            decay_steps=decay_steps,
            retraction=retraction,
            transport=transport,
            check_period=check_period,
            check_samples=check_samples,
            min_gradient_norm=min_gradient_norm,
            min_step_size=min_step_size,
            callback=callback,
            seed=seed,
            verbosity=verbosity,
            log_verbosity=log_verbosity,
            progress_bar=progress_bar,
            checkpoint=checkpoint,
        )
        if inner_iterations is not None:
            inner_iterations = self._int_at_least("inner_iterations", inner_iterations, 1)
        self.inner_iterations = inner_iterations

    def _parameters(self) -> dict[str, Any]:
        return {**super()._parameters(), "inner_iterations": self.inner_iterations}

    def _inner(self, run) -> int:
        """:math:`m` for this problem."""
        if self.inner_iterations is not None:
            return self.inner_iterations
        b = run.sampler.batch_size
        return -(-int(self.default_inner_passes * run.problem.num_samples) // b)

    def _start(self, run) -> None:
        run.state = {}
        run.step_size = run.rule(0)

    def _move(self, run, direction: Any) -> None:
        """:math:`x \\leftarrow R_x(-\\alpha_k d)` with this iteration's step size."""
        run.step_size = run.rule(run.iteration)
        self._advance(run, run.manifold.retraction(run.point, -run.step_size * direction))


class RiemannianSVRG(VarianceReducedSolver):
    r"""Riemannian SVRG (Zhang, Reddi & Sra 2016; Sato, Kasai & Mishra 2019) for a
    :class:`~riemann_dnn.problems.FiniteSumProblem` on any manifold.

    See the module docstring for the update and :class:`~riemann_dnn.solvers.FiniteSumSolver`
    for the options every solver shares (limits, sampling, step-size rules, ``retraction``
    and ``transport`` by name, statistics, ``seed``, verbosity, log, ``checkpoint``). An
    epoch is one outer loop of ``inner_iterations`` updates.

    Its own options, besides the shared ones (the defaults differ where noted):

    Args:
        batch_size: samples per stochastic gradient (default 10).
        inner_iterations: :math:`m`, updates per snapshot (default
            :math:`\lceil 5N/b\rceil`, RSOpt's ``maxinneriter = 5N`` samples).
        step_size: default ``"fixed"``, the papers' choice for variance reduction.
        check_samples: default ``None``: statistics on all samples.
    """

    default_inner_passes = 5.0

    def _iterate(self, run) -> None:
        state = run.state
        if run.inner == 0:  # a new snapshot and its full gradient
            state["snapshot"] = run.point
            state["full"] = self._batch_gradient(run, run.point, None)
        indices = self._next_batch(run)
        snapshot, point = state["snapshot"], run.point
        here = self._batch_gradient(run, point, indices)
        if run.inner == 0:  # x = snapshot: grad f_B(x) - grad f_B(x~) + grad f(x~)
            direction = self._riemannian(run, point, state["full"])
        else:
            there = self._batch_gradient(run, snapshot, indices)
            correction = self._riemannian(run, snapshot, _difference(there, state["full"]))
            direction = self._riemannian(run, point, here) - run.manifold.transport(
                snapshot, point, correction
            )
        self._move(run, direction)
        if run.inner == self._inner(run):
            self._end_epoch(run)

    def _epoch_length(self, run) -> int:
        return self._inner(run)


class RiemannianSRG(VarianceReducedSolver):
    r"""Riemannian SRG, the stochastic recursive gradient (Kasai, Sato & Mishra 2018), for a
    :class:`~riemann_dnn.problems.FiniteSumProblem` on any manifold.

    See the module docstring for the update and :class:`~riemann_dnn.solvers.FiniteSumSolver`
    for the options every solver shares. An epoch is the full-gradient step and
    ``inner_iterations`` recursive updates.

    Its own options, besides the shared ones (the defaults differ where noted):

    Args:
        batch_size: samples per stochastic gradient (default 10).
        inner_iterations: :math:`m`, recursive updates per epoch (default
            :math:`\lceil N/b\rceil`, RSOpt's ``maxinneriter = N`` samples).
        step_size: default ``"fixed"``, the paper's choice.
        check_samples: default ``None``: statistics on all samples.
    """

    default_inner_passes = 1.0

    def _iterate(self, run) -> None:
        state, point = run.state, run.point
        if run.inner == 0:  # the full gradient and its step
            direction = self._riemannian(run, point, self._batch_gradient(run, point, None))
        else:
            indices = self._next_batch(run)
            previous = state["previous"]
            here = self._batch_gradient(run, point, indices)
            there = self._batch_gradient(run, previous, indices)
            carried = self._riemannian(run, previous, there) - state["direction"]
            direction = self._riemannian(run, point, here) - run.manifold.transport(
                previous, point, carried
            )
        state["previous"], state["direction"] = point, direction
        self._move(run, direction)
        if run.inner == self._inner(run) + 1:
            self._end_epoch(run)

    def _epoch_length(self, run) -> int:
        return self._inner(run) + 1
