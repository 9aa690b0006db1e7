r"""``StochasticGradient``: Riemannian minibatch SGD as a pymanopt optimizer (Manopt parity).

At iteration :math:`k` the solver draws a batch :math:`B_k`, computes the Euclidean
gradient :math:`g_k = \nabla f_{B_k}(x_k)` of the problem's batch cost and makes the one
shared Riemannian step (:func:`riemann_dnn.step.riemannian_sgd_step`: projection, momentum
in the tangent space, retraction, transport by projection) with step size
:math:`\lambda_k`:

.. math::

    x_{k+1} = R_{x_k}\bigl(-\lambda_k\, d_k\bigr), \qquad
    d_k = P_{x_k}(g_k + \omega x_k) \text{ (with momentum: see riemann_dnn.step.sgd)}.

On a ``Product`` the step is applied factor-wise (``manifold.manifolds[i]`` at
``point[i]``), with each factor's retraction and transport (``retraction=``, ``transport=``:
see :class:`~riemann_dnn.solvers.FiniteSumSolver`, which holds the options, sampling,
statistics, stopping criteria and checkpoints this solver shares with
:class:`~riemann_dnn.solvers.RiemannianSVRG` and :class:`~riemann_dnn.solvers.RiemannianSRG`). Every ``check_period`` iterations the cost and the Riemannian gradient norm
are estimated on a fixed subset of ``check_samples`` samples (drawn once per run; all
samples when ``check_samples`` is ``None`` or at least :math:`N`), logged, printed and
passed to the ``callback``.

Options and their Manopt (``stochasticgradient.m`` / ``stepsize_sg.m``) names:

=====================  =========================  ==========================================
ours (default)         Manopt (default)           meaning
=====================  =========================  ==========================================
``batch_size`` (100)   ``batchsize`` (1)          samples per iteration (the paper: 100)
``max_iterations``     ``maxiter`` (1000)         stop after this many iterations (1000;
                                                  no limit when ``max_epochs`` is given)
``max_epochs`` (inf)   --                         stop after this many epochs
``max_passes`` (inf)   --                         stop after this many passes over the data
``max_time`` (1000 s)  ``maxtime``                stop after this wall-clock time
``sampling``           with replacement           ``"without_replacement"``: each sample once
                                                  per epoch, reshuffled each epoch
``check_period``       ``checkperiod`` (100)      iterations between statistics (100)
``step_size``          ``stepsize_type``          ``"decay"`` (default), ``"fixed"``,
                       (``"decay"``)              ``"hybrid"``, ``"bold_driver"``, a
                                                  ``StepSizeRule`` or ``callable(k)``
``initial_step_size``  ``stepsize_init`` (0.1)    :math:`\lambda_0` (0.1)
``step_size_decay``    ``stepsize_lambda`` (0.1)  :math:`\gamma` in
                                                  :math:`\lambda_0/(1+\lambda_0\gamma k)` (0.1)
``decay_steps`` (100)  ``stepsize_decaysteps``    ``hybrid``: iterations of decay
``callback``           ``statsfun``               ``callback(iteration, point, stats)``
=====================  =========================  ==========================================

An *epoch* is :math:`\lceil N / b\rceil` iterations (``b = min(batch_size, N)``); without
replacement the last batch of an epoch holds the remaining :math:`N - b(\lceil N/b\rceil-1)`
samples. With ``step_size="bold_driver"`` the rate is constant within an epoch; after each
epoch the check-subset cost (the full cost when ``check_samples`` is ``None``) is compared
with the best so far: if it did not rise the rate grows by ``bold_driver_increase`` (1.05),
otherwise it shrinks by ``bold_driver_decrease`` (0.5) and the point *and the momentum* are
restored to their values after the last accepted epoch.

Example::

    problem = FiniteSumProblem(Stiefel(20, 3), cost, X)         # X: (N, 20) tensor
    solver = StochasticGradient(batch_size=50, max_iterations=3000, step_size="decay",
                                initial_step_size=0.05, seed=0, verbosity=0)
    result = solver.run(problem)                                  # pymanopt OptimizerResult
    result.point, result.cost, result.stopping_criterion, result.log
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from ..optim.schedulers import BoldDriver
from ..step import SGDHyperparameters, StepSizeRule, check_sgd_hyperparameters, riemannian_sgd_step
from .base import DEFAULT_MAX_ITERATIONS, Callback, FiniteSumSolver

__all__ = ["StochasticGradient"]

StepSize = (
    Literal["fixed", "decay", "hybrid", "bold_driver"] | StepSizeRule | Callable[[int], float]
)


def _step(manifold, factors, point, egrad, buffer, hp: SGDHyperparameters):
    """The shared step, applied factor-wise on a product (buffer: a list per factor or None)."""
    if factors is None:
        return riemannian_sgd_step(manifold, point, egrad, buffer, hp)
    buffers = buffer if buffer is not None else [None] * len(factors)
    new_points, new_buffers = [], []
    for factor, x, g, m in zip(factors, point, egrad, buffers):
        x_new, m_new = riemannian_sgd_step(factor, x, g, m, hp)
        new_points.append(x_new)
        new_buffers.append(m_new)
    return new_points, (None if hp.momentum == 0 else new_buffers)


class _PointState:
    """The iterate and momentum as a :class:`~riemann_dnn.optim.BoldDriver` state."""

    def __init__(self, point: Any, buffer: Any):
        self.point, self.buffer = point, buffer

    def state_dict(self) -> dict[str, Any]:
        return {"point": self.point, "buffer": self.buffer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.point, self.buffer = state["point"], state["buffer"]


class StochasticGradient(FiniteSumSolver):
    r"""Riemannian stochastic gradient descent for a :class:`~riemann_dnn.problems.FiniteSumProblem`.

    See the module docstring for the update, the options' Manopt names and the bold driver,
    and :class:`~riemann_dnn.solvers.FiniteSumSolver` for the options every solver shares
    (limits, sampling, step-size rules, ``retraction``/``transport`` by name, statistics,
    ``seed``, verbosity, log, ``checkpoint``). An epoch is :math:`\lceil N/b\rceil`
    iterations.

    Its own options, besides the shared ones:

    Args:
        step_size: ``"decay"`` (default, :math:`\lambda_0/(1+\lambda_0\gamma k)`),
            ``"fixed"``, ``"hybrid"`` (decay for ``decay_steps`` iterations, then constant),
            ``"bold_driver"`` (per epoch), a :class:`~riemann_dnn.step.StepSizeRule` or a
            callable ``k -> step size``.
        bold_driver_increase, bold_driver_decrease: the bold driver's factors (1.05, 0.5).
        momentum, dampening, nesterov, weight_decay: as in ``torch.optim.SGD``; momentum is
            a tangent vector carried by the vector transport (default 0, 0, False, 0).
    """

    step_size_names: ClassVar[tuple[str, ...]] = ("fixed", "decay", "hybrid", "bold_driver")

    def __init__(
        self,
        batch_size: int = 100,
        max_iterations: int | None = DEFAULT_MAX_ITERATIONS,
        max_epochs: int | None = None,
        max_time: float | None = 1000,
        *,
        max_passes: float | None = None,
        sampling: Literal["without_replacement", "with_replacement"] = "without_replacement",
        step_size: StepSize = "decay",
        initial_step_size: float = 0.1,
        step_size_decay: float = 0.1,
        decay_steps: int = 100,
        bold_driver_increase: float = 1.05,
        bold_driver_decrease: float = 0.5,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        retraction: str | Sequence[str | None] | None = None,
        transport: str | Sequence[str | None] | None = None,
        check_period: int = 100,
        check_samples: int | None = 1000,
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
        self.bold_driver_increase = self._number(
            "bold_driver_increase", bold_driver_increase, 0, low_open=True
        )
        self.bold_driver_decrease = self._number(
            "bold_driver_decrease", bold_driver_decrease, 0, 1, low_open=True, high_open=True
        )
        if not isinstance(nesterov, bool):
            raise self._option_error("nesterov", nesterov, "a bool")
        check_sgd_hyperparameters(
            "StochasticGradient",
            momentum,
            dampening,
            weight_decay,
            nesterov,
            option=True,
            momentum_below=1,
            dampening_at_most=1,
        )
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.weight_decay, self.nesterov = float(weight_decay), nesterov
        self._make_rule()  # bad combinations fail here, not in run()

    def _make_rule(self) -> Callable[[int], float] | None:
        """The per-iteration rule (``None`` for the bold driver)."""
        return None if self.step_size == "bold_driver" else super()._make_rule()

    def _parameters(self) -> dict:
        return {
            **super()._parameters(),
            "bold_driver_increase": self.bold_driver_increase,
            "bold_driver_decrease": self.bold_driver_decrease,
            "momentum": self.momentum,
            "dampening": self.dampening,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def _hyperparameters(self, step_size: float) -> SGDHyperparameters:
        return SGDHyperparameters(
            lr=step_size,
            momentum=self.momentum,
            dampening=self.dampening,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
        )

    def _start(self, run) -> None:
        """The momentum buffer; the bold driver, from the initial cost (on the check
        subset), snapshotting the point and the momentum."""
        run.state = {"buffer": None}
        if run.rule is None:
            with run.problem.evaluating():
                initial = run.problem.cost_on(run.point, run.check_indices)
            snapshot = _PointState(run.point, None)
            run.state["bold"] = BoldDriver(
                None,
                snapshot,
                lr=self.initial_step_size,
                increase=self.bold_driver_increase,
                decrease=self.bold_driver_decrease,
                initial_loss=initial,
            )
            run.state["snapshot"] = snapshot

    def _iterate(self, run) -> None:
        """One iteration: the next batch, its gradient and the step; then the end of the
        epoch when this was its last batch."""
        indices = self._next_batch(run)
        bold = run.state.get("bold")
        run.step_size = bold.lr if bold is not None else run.rule(run.iteration)
        egrad = self._batch_gradient(run, run.point, indices)
        point, run.state["buffer"] = _step(
            run.manifold,
            run.factors,
            run.point,
            egrad,
            run.state["buffer"],
            self._hyperparameters(run.step_size),
        )
        self._advance(run, point)
        if run.inner == run.sampler.batches_per_epoch:
            self._end_epoch(run)

    def _end_epoch(self, run) -> None:
        """Count the epoch; the bold driver's verdict on it (its cost on the check subset);
        the epoch's log entry."""
        run.epoch += 1
        run.inner = 0
        bold = run.state.get("bold")
        if bold is None:
            self._log_epoch(run, cost=None, accepted=None)
            return
        epoch_cost = run.problem.cost_on(run.point, run.check_indices)
        snapshot = run.state["snapshot"]
        snapshot.point, snapshot.buffer = run.point, run.state["buffer"]
        accepted = bold.step(epoch_cost)
        run.point, run.state["buffer"] = snapshot.point, snapshot.buffer
        run.step_size = bold.lr
        self._log_epoch(run, cost=epoch_cost, accepted=accepted)

    def _state_dict(self, run) -> dict[str, Any]:
        state = {"buffer": run.state["buffer"]}
        if run.state.get("bold") is not None:
            state["bold"] = run.state["bold"].state_dict()
        return state

    def _load_state_dict(self, run, state: dict[str, Any]) -> None:
        run.state = {"buffer": state["buffer"]}
        if "bold" in state:
            snapshot = _PointState(run.point, state["buffer"])
            bold = BoldDriver(None, snapshot, lr=self.initial_step_size)
            bold.load_state_dict(state["bold"])
            run.state.update(bold=bold, snapshot=snapshot)
