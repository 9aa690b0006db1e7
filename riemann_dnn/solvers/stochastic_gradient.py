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
``point[i]``). Every ``check_period`` iterations the cost and the Riemannian gradient norm
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

import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pymanopt.optimizers.optimizer import Optimizer, OptimizerResult
from pymanopt.tools import printer

from ..optim.schedulers import BoldDriver
from ..step import (
    SGDHyperparameters,
    StepSizeRule,
    check_sgd_hyperparameters,
    make_step_size,
    riemannian_sgd_step,
)
from .problem import FiniteSumProblem, _factors

__all__ = ["StochasticGradient"]

StepSize = (
    Literal["fixed", "decay", "hybrid", "bold_driver"] | StepSizeRule | Callable[[int], float]
)
Callback = Callable[[int, Any, dict], Any]

_RULE_NAMES = ("fixed", "decay", "hybrid", "bold_driver")


class _DefaultMaxIterations(int):
    """The default ``max_iterations`` (1000), told apart from a user's 1000 by identity: it
    gives way to a ``max_epochs`` the user set, so that limit is never silently cut short."""

    def __repr__(self) -> str:
        return "1000"


_DEFAULT_MAX_ITERATIONS = _DefaultMaxIterations(1000)


# -- option validation ------------------------------------------------------------------------
def _option_error(name: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"StochasticGradient: option {name} must be {expected}, got {value!r}")


def _int_at_least(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise _option_error(name, value, f"an int >= {low}")
    return int(value)


def _limit(name: str, value: Any, *, integer: bool) -> float:
    """A stopping limit: ``None``/``inf`` disables it."""
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _option_error(name, value, "a number >= 0 (or None / inf for no limit)")
    if (
        math.isnan(value)
        or value < 0
        or (integer and math.isfinite(value) and value != int(value))
    ):
        kind = "an int >= 0" if integer else "a number >= 0"
        raise _option_error(name, value, f"{kind} (or None / inf for no limit)")
    return float(value)


def _number(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo = f"{'>' if low_open else '>='} {low}"
        hi = "" if high == math.inf else f" and {'<' if high_open else '<='} {high}"
        raise _option_error(name, value, f"a finite number {lo}{hi}")
    return float(value)


class _FixedRule:
    """A user callable ``rule(k)`` checked for finite positive step sizes."""

    def __init__(self, function: Callable[[int], float]):
        self.function = function

    def __call__(self, iteration: int) -> float:
        value = float(self.function(iteration))
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"StochasticGradient: the step_size callable returned {value!r} at iteration "
                f"{iteration}; it must return a finite number >= 0"
            )
        return value


# -- sampling -----------------------------------------------------------------------------------
class _Sampler:
    """Batches of sample indices, one epoch's worth moved to the data's device at once."""

    def __init__(
        self,
        problem: FiniteSumProblem,
        batch_size: int,
        with_replacement: bool,
        rng: np.random.Generator,
    ):
        self.problem, self.rng = problem, rng
        self.num_samples = problem.num_samples
        self.batch_size = min(batch_size, self.num_samples)
        self.batches_per_epoch = -(-self.num_samples // self.batch_size)
        self.with_replacement = with_replacement

    def epoch(self) -> list:
        """The batches of one epoch (index arrays/tensors in the problem's form)."""
        if self.with_replacement:
            draws = self.rng.integers(
                0, self.num_samples, size=self.batches_per_epoch * self.batch_size
            )
        else:
            draws = self.rng.permutation(self.num_samples)
        indices = self.problem.as_indices(draws)
        b = self.batch_size
        return [indices[start : start + b] for start in range(0, len(draws), b)]


# -- the step, factor-wise on products ---------------------------------------------------------
def _step(manifold, point, egrad, buffer, hp: SGDHyperparameters):
    """The shared step, applied factor-wise on a Product (buffer: list per factor or None)."""
    factors = _factors(manifold)
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


@dataclass
class _Run:
    """The state of one :meth:`StochasticGradient.run`: the problem, the iterate and its
    momentum, the counters and the outputs."""

    problem: FiniteSumProblem
    point: Any
    sampler: _Sampler
    check_indices: Any
    rule: Callable[[int], float] | None  # None: the bold driver sets the rate
    hp: SGDHyperparameters
    buffer: Any = None
    bold: BoldDriver | None = None
    snapshot: _PointState = field(default_factory=lambda: _PointState(None, None))
    printer: Any = None
    bar: Any = None
    start_time: float = 0.0
    iteration: int = 0
    epoch: int = 0
    batches_done: int = 0  # in the current epoch
    batches: list = field(default_factory=list)  # the current epoch's batches still to come
    step_size: float = 0.0
    stats: dict = field(default_factory=dict)  # the last check's statistics


def _is_finite(value: float) -> bool:
    return value is not None and math.isfinite(value)


class StochasticGradient(Optimizer):
    r"""Riemannian stochastic gradient descent for a :class:`FiniteSumProblem`.

    See the module docstring for the update, the options' Manopt names and the bold driver.

    Args:
        batch_size: samples per iteration (default 100; capped at :math:`N`).
        max_iterations: stop after this many iterations (default 1000, or no limit when a
            finite ``max_epochs`` is given; ``None``: no limit).
        max_epochs: stop after this many epochs (default ``None``: no limit).
        max_time: stop after this many seconds (default 1000, pymanopt's).
        sampling: ``"without_replacement"`` (default; a fresh permutation each epoch) or
            ``"with_replacement"`` (Manopt's: i.i.d. uniform indices).
        step_size: ``"decay"`` (default, :math:`\lambda_0/(1+\lambda_0\gamma k)`),
            ``"fixed"``, ``"hybrid"`` (decay for ``decay_steps`` iterations, then constant),
            ``"bold_driver"`` (per epoch), a :class:`~riemann_dnn.step.StepSizeRule` or a
            callable ``k -> step size``.
        initial_step_size: :math:`\lambda_0` (default 0.1).
        step_size_decay: :math:`\gamma` (default 0.1).
        decay_steps: ``hybrid``'s number of decaying iterations (default 100).
        bold_driver_increase, bold_driver_decrease: the bold driver's factors (1.05, 0.5).
        momentum, dampening, nesterov, weight_decay: as in ``torch.optim.SGD``; momentum is
            a tangent vector carried by vector transport (default 0, 0, False, 0).
        check_period: iterations between statistics (default 100).
        check_samples: size of the fixed random subset used for statistics, the bold driver
            and the result's cost (default 1000; ``None``: all samples).
        min_gradient_norm: stop when the estimated Riemannian gradient norm falls below
            this (default 0: never).
        min_step_size: stop when the step size falls below this (default 1e-10).
        callback: ``callback(iteration, point, stats)`` at each check, with ``stats`` a dict
            (``iteration, epoch, time, cost, gradient_norm, step_size``); returning ``True``
            stops the run.
        seed: an int, a ``numpy.random.Generator`` or ``None``: drives the sampling and the
            random initial point (same seed, same problem -> identical result).
        verbosity: 0 silent, 1 start and final summary, 2 one table row per check (default 2,
            like pymanopt); with ``progress_bar`` and a terminal, a tqdm bar at >= 1.
        log_verbosity: 0 no per-check log; 1 ``log["iterations"]`` (iteration, time, point,
            cost, gradient_norm, step_size, epoch) at each check and ``log["epochs"]`` at each
            epoch's end; 2 also ``log["step_sizes"]``, the step size of every iteration.
        progress_bar: show a tqdm progress bar when ``verbosity >= 1`` and stdout is a tty.
    """

    def __init__(
        self,
        batch_size: int = 100,
        max_iterations: int | None = _DEFAULT_MAX_ITERATIONS,
        max_epochs: int | None = None,
        max_time: float | None = 1000,
        *,
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
        check_period: int = 100,
        check_samples: int | None = 1000,
        min_gradient_norm: float = 0.0,
        min_step_size: float = 1e-10,
        callback: Callback | None = None,
        seed: int | np.random.Generator | None = None,
        verbosity: int = 2,
        log_verbosity: int = 0,
        progress_bar: bool = True,
    ):
        self.batch_size = _int_at_least("batch_size", batch_size, 1)
        self.max_epochs = _limit("max_epochs", max_epochs, integer=True)
        if max_iterations is _DEFAULT_MAX_ITERATIONS and math.isfinite(self.max_epochs):
            max_iterations = None  # the user's epoch limit decides
        max_iterations = _limit("max_iterations", max_iterations, integer=True)
        max_time = _limit("max_time", max_time, integer=False)
        if sampling not in ("without_replacement", "with_replacement"):
            raise _option_error(
                "sampling", sampling, "'without_replacement' or 'with_replacement'"
            )
        self.sampling = sampling
        self.initial_step_size = _number("initial_step_size", initial_step_size, 0, low_open=True)
        self.step_size_decay = _number("step_size_decay", step_size_decay, 0)
        self.decay_steps = _int_at_least("decay_steps", decay_steps, 0)
        self.bold_driver_increase = _number(
            "bold_driver_increase", bold_driver_increase, 0, low_open=True
        )
        self.bold_driver_decrease = _number(
            "bold_driver_decrease", bold_driver_decrease, 0, 1, low_open=True, high_open=True
        )
        if isinstance(step_size, str):
            if step_size not in _RULE_NAMES:
                raise _option_error(
                    "step_size", step_size, f"one of {_RULE_NAMES}, a StepSizeRule or a callable"
                )
        elif not callable(step_size):
            raise _option_error(
                "step_size", step_size, f"one of {_RULE_NAMES}, a StepSizeRule or a callable"
            )
        self.step_size = step_size
        if not isinstance(nesterov, bool):
            raise _option_error("nesterov", nesterov, "a bool")
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
        self.check_period = _int_at_least("check_period", check_period, 1)
        if check_samples is not None:
            check_samples = _int_at_least("check_samples", check_samples, 1)
        self.check_samples = check_samples
        min_gradient_norm = _number("min_gradient_norm", min_gradient_norm, 0)
        min_step_size = _number("min_step_size", min_step_size, 0)
        if callback is not None and not callable(callback):
            raise _option_error("callback", callback, "callable or None")
        self.callback = callback
        if seed is not None and not isinstance(seed, (int, np.integer, np.random.Generator)):
            raise _option_error("seed", seed, "an int, a numpy.random.Generator or None")
        if isinstance(seed, (int, np.integer)) and (isinstance(seed, bool) or seed < 0):
            raise _option_error("seed", seed, "an int >= 0")
        self.seed = seed
        verbosity = _int_at_least("verbosity", verbosity, 0)
        log_verbosity = _int_at_least("log_verbosity", log_verbosity, 0)
        if not isinstance(progress_bar, bool):
            raise _option_error("progress_bar", progress_bar, "a bool")
        self.progress_bar = progress_bar
        if all(math.isinf(v) for v in (max_iterations, self.max_epochs, max_time)) and (
            callback is None
        ):
            raise ValueError(
                "StochasticGradient: options max_iterations, max_epochs and max_time are all "
                "unlimited and there is no callback to stop the run; set at least one limit"
            )
        super().__init__(
            max_time=max_time,
            max_iterations=max_iterations,
            min_gradient_norm=min_gradient_norm,
            min_step_size=min_step_size,
            max_cost_evaluations=math.inf,
            verbosity=verbosity,
            log_verbosity=log_verbosity,
        )
        # Build the rule once so that bad combinations fail here, not in run().
        self._make_rule()

    # -- helpers ------------------------------------------------------------------------------
    def _make_rule(self) -> Callable[[int], float] | None:
        """The per-iteration rule (``None`` for the bold driver)."""
        if self.step_size == "bold_driver":
            return None
        if isinstance(self.step_size, (str, StepSizeRule)):
            return make_step_size(
                self.step_size,
                self.initial_step_size,
                decay=self.step_size_decay,
                decay_steps=self.decay_steps,
            )
        return _FixedRule(self.step_size)

    def _parameters(self) -> dict:
        names = (
            "batch_size",
            "max_epochs",
            "sampling",
            "step_size",
            "initial_step_size",
            "step_size_decay",
            "decay_steps",
            "bold_driver_increase",
            "bold_driver_decrease",
            "momentum",
            "dampening",
            "nesterov",
            "weight_decay",
            "check_period",
            "check_samples",
            "seed",
        )
        return {name: getattr(self, name) for name in names}

    def _stop_reason(
        self,
        *,
        start_time: float,
        iteration: int,
        epoch: int,
        gradient_norm: float,
        step_size: float,
    ) -> str | None:
        reason = self._check_stopping_criterion(
            start_time=start_time,
            iteration=iteration,
            gradient_norm=gradient_norm if _is_finite(gradient_norm) else math.inf,
            step_size=step_size,
        )
        if reason is None and epoch >= self.max_epochs:
            run_time = time.time() - start_time
            reason = (
                f"Terminated - max epochs reached after {iteration} iterations, "
                f"{run_time:.2f} seconds."
            )
        return reason

    # -- run ------------------------------------------------------------------------------------
    def run(self, problem: FiniteSumProblem, *, initial_point: Any = None) -> OptimizerResult:
        """Minimise ``problem`` from ``initial_point`` (random from ``seed`` when ``None``).

        Returns pymanopt's :class:`OptimizerResult`: ``point`` (torch tensors stay on their
        device; numpy stays numpy; a list on a Product), ``cost`` and ``gradient_norm``
        (estimates on the check subset at the final point), ``iterations``,
        ``stopping_criterion``, ``time``, ``cost_evaluations`` (batch gradients computed),
        ``step_size`` (the last one) and ``log``.
        """
        run = self._setup(problem, initial_point)
        self._start_output(run)
        reason = self._check(run)
        if run.rule is None:
            self._start_bold_driver(run)
        while reason is None:
            reason = self._stop_reason(
                start_time=run.start_time,
                iteration=run.iteration,
                epoch=run.epoch,
                gradient_norm=run.stats.get("gradient_norm", math.inf),
                step_size=run.step_size,
            )
            if reason is not None:
                break
            self._iterate(run)
            if run.iteration % self.check_period == 0:
                reason = self._check(run)
        return self._finish(run, reason)

    def _setup(self, problem: FiniteSumProblem, initial_point: Any) -> _Run:
        """Check the problem and the initial point; draw (from ``seed``, in this order) the
        initial point and the check subset; build the step-size rule."""
        if not isinstance(problem, FiniteSumProblem):
            raise TypeError(
                "StochasticGradient.run: problem must be a riemann_dnn.solvers."
                f"FiniteSumProblem, got {type(problem).__name__}; wrap your cost with "
                "FiniteSumProblem(manifold, cost, data)"
            )
        manifold = problem.manifold
        rng = (
            self.seed
            if isinstance(self.seed, np.random.Generator)
            else np.random.default_rng(self.seed)
        )
        if initial_point is None:
            point = problem.random_point(
                generator=int(rng.integers(2**62)) if self.seed is not None else None
            )
        else:
            point = initial_point
            if hasattr(manifold, "check_point"):
                try:
                    manifold.check_point(point)
                except ValueError as err:
                    raise ValueError(f"StochasticGradient.run: initial_point: {err}") from None
        sampler = _Sampler(problem, self.batch_size, self.sampling == "with_replacement", rng)
        if self.check_samples is None or self.check_samples >= problem.num_samples:
            check_indices = None
        else:
            check_indices = problem.as_indices(
                np.sort(rng.choice(problem.num_samples, self.check_samples, replace=False))
            )
        hp = SGDHyperparameters(
            lr=0.0,
            momentum=self.momentum,
            dampening=self.dampening,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
        )
        return _Run(problem, point, sampler, check_indices, self._make_rule(), hp)

    def _start_output(self, run: _Run) -> None:
        """Start the log, the printed table and the progress bar; then the clock."""
        self._initialize_log(optimizer_parameters=self._parameters())
        if self._log_verbosity >= 1:
            self._log["epochs"] = defaultdict(list)
        if self._log_verbosity >= 2:
            self._log["step_sizes"] = []
        if self._verbosity >= 1:
            print("Optimizing...")
        if self._verbosity >= 2:
            width = max(
                4,
                len(str(int(self._max_iterations))) if math.isfinite(self._max_iterations) else 9,
            )
            run.printer = printer.ColumnPrinter(
                columns=[
                    ("Iteration", f"{width}d"),
                    ("Epoch", "5d"),
                    ("Cost", "+.16e"),
                    ("Gradient norm", ".8e"),
                    ("Step size", ".3e"),
                    ("Time [s]", ".2f"),
                ]
            )
        else:
            run.printer = printer.VoidPrinter()
        run.printer.print_header()
        if self._verbosity >= 1 and self.progress_bar and sys.stdout.isatty():
            from tqdm import tqdm

            total = self._max_iterations
            if not math.isfinite(total) and math.isfinite(self.max_epochs):
                total = self.max_epochs * run.sampler.batches_per_epoch
            run.bar = tqdm(total=int(total) if math.isfinite(total) else None, leave=False)
        run.start_time = time.time()
        run.step_size = self.initial_step_size if run.rule is None else run.rule(0)

    def _check(self, run: _Run) -> str | None:
        """Statistics at the current point (printed, logged, passed to the callback);
        returns a stop reason from the callback or a non-finite cost."""
        problem, manifold, point = run.problem, run.problem.manifold, run.point
        with problem.evaluating():
            cost, egrad = problem.cost_and_euclidean_gradient_on(point, run.check_indices)
        rgrad = manifold.euclidean_to_riemannian_gradient(point, egrad)
        gradient_norm = float(manifold.norm(point, rgrad))
        stats = run.stats
        stats.clear()
        stats.update(
            iteration=run.iteration,
            epoch=run.epoch + run.batches_done / run.sampler.batches_per_epoch,
            time=time.time() - run.start_time,
            cost=cost,
            gradient_norm=gradient_norm,
            step_size=run.step_size,
        )
        run.printer.print_row(
            [run.iteration, run.epoch, cost, gradient_norm, run.step_size, stats["time"]]
        )
        self._add_log_entry(
            iteration=run.iteration,
            point=point,
            cost=cost,
            gradient_norm=gradient_norm,
            step_size=run.step_size,
            epoch=stats["epoch"],
        )
        if self.callback is not None and self.callback(run.iteration, point, dict(stats)):
            return (
                f"Terminated - callback requested a stop after {run.iteration} iterations, "
                f"{stats['time']:.2f} seconds."
            )
        if not math.isfinite(cost) and run.rule is not None:
            return (
                f"Terminated - non-finite cost ({cost}) after {run.iteration} iterations, "
                f"{stats['time']:.2f} seconds."
            )
        return None

    def _start_bold_driver(self, run: _Run) -> None:
        """The bold driver, from the initial check's cost; it snapshots ``run.snapshot``."""
        run.snapshot.point, run.snapshot.buffer = run.point, run.buffer
        run.bold = BoldDriver(
            None,
            run.snapshot,
            lr=self.initial_step_size,
            increase=self.bold_driver_increase,
            decrease=self.bold_driver_decrease,
            initial_loss=run.stats["cost"],
        )

    def _iterate(self, run: _Run) -> None:
        """One iteration: the next batch, its gradient and the step; then the end of the
        epoch when this was its last batch."""
        if not run.batches:
            run.batches = run.sampler.epoch()
        indices = run.batches.pop(0)
        run.step_size = run.bold.lr if run.bold is not None else run.rule(run.iteration)
        egrad = run.problem.euclidean_gradient_on(run.point, indices)
        run.point, run.buffer = _step(
            run.problem.manifold,
            run.point,
            egrad,
            run.buffer,
            run.hp._replace(lr=run.step_size),
        )
        run.iteration += 1
        run.batches_done += 1
        if self._log_verbosity >= 2:
            self._log["step_sizes"].append(run.step_size)
        if run.bar is not None:
            run.bar.update(1)
        if run.batches_done == run.sampler.batches_per_epoch:
            self._end_epoch(run)

    def _end_epoch(self, run: _Run) -> None:
        """Count the epoch; the bold driver's verdict on it (its cost on the check subset);
        the epoch's log entry."""
        run.epoch += 1
        run.batches_done = 0
        epoch_cost, accepted = None, None
        if run.bold is not None:
            epoch_cost = run.problem.cost_on(run.point, run.check_indices)
            run.snapshot.point, run.snapshot.buffer = run.point, run.buffer
            accepted = run.bold.step(epoch_cost)
            run.point, run.buffer = run.snapshot.point, run.snapshot.buffer
            run.step_size = run.bold.lr
        if self._log_verbosity >= 1:
            entry = self._log["epochs"]
            entry["epoch"].append(run.epoch)
            entry["iteration"].append(run.iteration)
            entry["time"].append(time.time() - run.start_time)
            entry["cost"].append(epoch_cost)
            entry["step_size"].append(run.step_size)
            entry["accepted"].append(accepted)
            entry["point"].append(run.point)

    def _finish(self, run: _Run, reason: str) -> OptimizerResult:
        """Close the bar, check the final point (unless just checked), print the summary
        and return the result."""
        if run.bar is not None:
            run.bar.close()
        if run.stats.get("iteration") != run.iteration:
            self._check(run)
        stats = run.stats
        if self._verbosity >= 1:
            print(reason)
            print(
                f"Final cost {stats['cost']:.6e}, gradient norm {stats['gradient_norm']:.3e}, "
                f"{run.iteration} iterations, {run.epoch} epochs, "
                f"{time.time() - run.start_time:.2f} s"
            )
        return self._return_result(
            start_time=run.start_time,
            point=run.point,
            cost=stats["cost"],
            iterations=run.iteration,
            stopping_criterion=reason,
            cost_evaluations=run.iteration,
            step_size=run.step_size,
            gradient_norm=stats["gradient_norm"],
        )
