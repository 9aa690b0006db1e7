r"""The shared machinery of the stochastic solvers for a :class:`~riemann_dnn.problems.FiniteSumProblem`.

:class:`FiniteSumSolver` is a pymanopt ``Optimizer`` that holds what
:class:`~riemann_dnn.solvers.StochasticGradient`, :class:`~riemann_dnn.solvers.RiemannianSVRG`
and :class:`~riemann_dnn.solvers.RiemannianSRG` share, so that each of them is its update
only:

- the options common to all three and their checks (a ``ValueError`` naming the option, the
  value and what was expected, at construction);
- the retraction and the vector transport chosen by name, per factor of a product;
- the problem interface: the initial point (random from ``seed``, or checked), the sampling
  (a stream of batches: each sample once per permutation, or i.i.d. indices), the fixed
  subset of samples for statistics;
- the run loop with Manopt-style stopping criteria, the statistics at every check (cost,
  Riemannian gradient norm and, when the problem knows its optimum, the optimality gap, each
  against iterations, passes over the data and time), the printed table, the log;
- checkpoints: with ``checkpoint=PATH`` the whole state of the run is written (atomically)
  at every check and at the end, and a run with the same solver options on the same problem
  resumes from it and ends exactly where an uninterrupted run ends.

*Passes* count component-gradient evaluations divided by :math:`N`: a batch gradient on
:math:`b` samples costs :math:`b`, a full gradient :math:`N` (the x-axis of Sato, Kasai &
Mishra 2019 and Kasai, Sato & Mishra 2018). Statistics are measurements and cost no passes;
``solve_time`` in the log is the wall time without them.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pymanopt.manifolds import Product as _PymanoptProduct
from pymanopt.manifolds.manifold import Manifold
from pymanopt.optimizers.optimizer import Optimizer, OptimizerResult
from pymanopt.tools import printer

from ..manifolds import Product
from ..problems import FiniteSumProblem
from ..step import StepSizeRule, make_step_size

__all__ = ["FiniteSumSolver", "StepSize", "Callback"]

StepSize = str | StepSizeRule | Callable[[int], float]
Callback = Callable[[int, Any, dict], Any]

_CHECKPOINT_FORMAT = 1


class _DefaultMaxIterations(int):
    """The default ``max_iterations`` (1000), told apart from a user's 1000 by identity: it
    gives way to a ``max_epochs`` or ``max_passes`` the user set, so that limit is never
    silently cut short."""

    def __repr__(self) -> str:
        return "1000"


DEFAULT_MAX_ITERATIONS = _DefaultMaxIterations(1000)


class _CheckedRule:
    """A user callable ``rule(k)`` checked for finite step sizes >= 0."""

    def __init__(self, owner: str, function: Callable[[int], float]):
        self.owner, self.function = owner, function

    def __call__(self, iteration: int) -> float:
        value = float(self.function(iteration))
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"{self.owner}: the step_size callable returned {value!r} at iteration "
                f"{iteration}; it must return a finite number >= 0"
            )
        return value


class _Sampler:
    """A stream of batches of sample indices: permutations (each sample once per pass) or
    i.i.d. uniform draws, one pass worth moved to the data's device at once."""

    def __init__(self, problem: FiniteSumProblem, batch_size: int, with_replacement: bool):
        self.problem = problem
        self.num_samples = problem.num_samples
        self.batch_size = min(batch_size, self.num_samples)
        self.batches_per_epoch = -(-self.num_samples // self.batch_size)
        self.with_replacement = with_replacement

    def epoch(self, rng: np.random.Generator) -> list:
        """The batches of one pass (index arrays/tensors in the problem's form)."""
        if self.with_replacement:
            draws = rng.integers(
                0, self.num_samples, size=self.batches_per_epoch * self.batch_size
            )
        else:
            draws = rng.permutation(self.num_samples)
        indices = self.problem.as_indices(draws)
        b = self.batch_size
        return [indices[start : start + b] for start in range(0, len(draws), b)]


@dataclass
class _Run:
    """The state of one run: the problem, the stepping manifold, the iterate, the counters,
    the algorithm's own state (``state``) and the outputs."""

    problem: FiniteSumProblem
    manifold: Manifold  # the problem's manifold with the chosen retractions and transports
    factors: list | None  # its factors on a product
    point: Any
    sampler: _Sampler
    check_indices: Any
    rule: Callable[[int], float] | None
    rng: np.random.Generator
    state: dict = field(default_factory=dict)
    printer: Any = None
    bar: Any = None
    start_time: float = 0.0
    solve_time: float = 0.0  # wall time without statistics and checkpoints
    iteration: int = 0
    epoch: int = 0
    inner: int = 0  # iterations done in the current epoch
    batches: list = field(default_factory=list)  # the current pass's batches still to come
    gradients: int = 0  # component-gradient evaluations
    gradient_calls: int = 0  # batch or full gradients computed
    step_size: float = 0.0
    stats: dict = field(default_factory=dict)  # the last check's statistics
    resumed: bool = False
    identity: dict | None = None  # the checkpoint's identity, computed once

    @property
    def passes(self) -> float:
        return self.gradients / self.problem.num_samples


def _is_finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


# -- checkpoints: tensors and plain containers only (torch.load(..., weights_only=True)) -------
def _saveable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.array(value))}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _saveable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_saveable(item) for item in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def _restored(value: Any, device: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__numpy__"}:
            return value["__numpy__"].numpy()
        return {key: _restored(item, device) for key, item in value.items()}
    if isinstance(value, list):
        return [_restored(item, device) for item in value]
    if isinstance(value, torch.Tensor):
        return value.to(device) if device is not None else value
    return value


class FiniteSumSolver(Optimizer):
    r"""The base of the stochastic solvers for a :class:`~riemann_dnn.problems.FiniteSumProblem`
    (see the module docstring); a subclass defines ``_iterate`` (one update) and may
    extend ``_start``, ``_parameters`` and ``_end_epoch``.

    The options every solver shares (each subclass adds its own):

    Args:
        batch_size: samples per stochastic gradient (capped at :math:`N`).
        max_iterations: stop after this many updates (default 1000, or no limit when a
            finite ``max_epochs`` or ``max_passes`` is given; ``None``: no limit).
        max_epochs: stop after this many epochs (the solver says what an epoch is).
        max_time: stop after this many seconds (default 1000, pymanopt's).
        max_passes: stop once the component-gradient evaluations reach this many times
            :math:`N` (default ``None``: no limit).
        sampling: ``"without_replacement"`` (a fresh permutation each pass over the data)
            or ``"with_replacement"`` (i.i.d. uniform indices).
        step_size: a rule name (``"fixed"``, ``"decay"``
            :math:`\lambda_0/(1+\lambda_0\gamma k)`, ``"hybrid"``: decay for
            ``decay_steps`` iterations, then constant), a
            :class:`~riemann_dnn.step.StepSizeRule` or a callable ``k -> step size``.
        initial_step_size, step_size_decay, decay_steps: :math:`\lambda_0`, :math:`\gamma`,
            ``hybrid``'s decaying iterations.
        retraction: ``None`` (each factor's own), a name for every factor (e.g.
            ``"qr"``; a flat factor keeps its own), or one name or ``None`` per factor of a
            ``Product``.
        transport: the vector transport, chosen the same way: ``"projection"``,
            ``"parallel"`` or ``"differentiated"`` (see
            :data:`riemann_dnn.manifolds.TRANSPORTS` and each manifold's ``transports``;
            on a flat factor every transport is the identity).
        check_period: iterations between statistics.
        check_samples: size of the fixed random subset for the statistics (``None``: all
            samples). The optimality gap is always measured on all samples.
        min_gradient_norm: stop when the estimated Riemannian gradient norm falls below it.
        min_step_size: stop when the step size falls below it.
        callback: ``callback(iteration, point, stats)`` at each check; ``True`` stops the
            run. ``stats`` holds ``iteration, epoch, passes, time, solve_time, cost,
            gradient_norm, step_size`` (and ``optimality_gap`` when known).
        seed: an int, a ``numpy.random.Generator`` or ``None``: drives the sampling and the
            random initial point (same seed, same problem -> identical result).
        verbosity: 0 silent, 1 start and summary, 2 one table row per check.
        log_verbosity: 0 none; 1 ``log["iterations"]`` (the statistics and the point of
            every check) and ``log["epochs"]``; 2 also ``log["step_sizes"]``.
        progress_bar: a tqdm bar when ``verbosity >= 1`` and stdout is a terminal.
        checkpoint: a file path: the run's state is written there at every check and at
            the end, and :meth:`run` resumes from it when it exists (``initial_point`` is
            then ignored). A checkpoint of another solver, other options (stopping
            criteria, verbosity, callback aside) or another problem is refused.
    """

    #: The step-size rule names this solver accepts.
    step_size_names: ClassVar[tuple[str, ...]] = ("fixed", "decay", "hybrid")
    #: The default sampling.
    default_sampling: ClassVar[str] = "without_replacement"

    def __init__(
        self,
        batch_size: int = 100,
        max_iterations: int | None = DEFAULT_MAX_ITERATIONS,
        max_epochs: int | None = None,
        max_time: float | None = 1000,
        *,
        max_passes: float | None = None,
        sampling: str = "without_replacement",
        step_size: StepSize = "decay",
        initial_step_size: float = 0.1,
        step_size_decay: float = 0.1,
        decay_steps: int = 100,
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
        checkpoint: str | os.PathLike | None = None,
    ):
        self.batch_size = self._int_at_least("batch_size", batch_size, 1)
        self.max_epochs = self._limit("max_epochs", max_epochs, integer=True)
        self.max_passes = self._limit("max_passes", max_passes, integer=False)
        if max_iterations is DEFAULT_MAX_ITERATIONS and (
            math.isfinite(self.max_epochs) or math.isfinite(self.max_passes)
        ):
            max_iterations = None  # the user's epoch or pass limit decides
        max_iterations = self._limit("max_iterations", max_iterations, integer=True)
        max_time = self._limit("max_time", max_time, integer=False)
        if sampling not in ("without_replacement", "with_replacement"):
            raise self._option_error(
                "sampling", sampling, "'without_replacement' or 'with_replacement'"
            )
        self.sampling = sampling
        self.initial_step_size = self._number(
            "initial_step_size", initial_step_size, 0, low_open=True
        )
        self.step_size_decay = self._number("step_size_decay", step_size_decay, 0)
        self.decay_steps = self._int_at_least("decay_steps", decay_steps, 0)
        expected = f"one of {self.step_size_names}, a StepSizeRule or a callable"
        if isinstance(step_size, str):
            if step_size not in self.step_size_names:
                raise self._option_error("step_size", step_size, expected)
        elif not callable(step_size):
            raise self._option_error("step_size", step_size, expected)
        self.step_size = step_size
        self.retraction = self._names("retraction", retraction)
        self.transport = self._names("transport", transport)
        self.check_period = self._int_at_least("check_period", check_period, 1)
        if check_samples is not None:
            check_samples = self._int_at_least("check_samples", check_samples, 1)
        self.check_samples = check_samples
        min_gradient_norm = self._number("min_gradient_norm", min_gradient_norm, 0)
        min_step_size = self._number("min_step_size", min_step_size, 0)
        if callback is not None and not callable(callback):
            raise self._option_error("callback", callback, "callable or None")
        self.callback = callback
        if seed is not None and not isinstance(seed, (int, np.integer, np.random.Generator)):
            raise self._option_error("seed", seed, "an int, a numpy.random.Generator or None")
        if isinstance(seed, (int, np.integer)) and (isinstance(seed, bool) or seed < 0):
            raise self._option_error("seed", seed, "an int >= 0")
        self.seed = seed
        verbosity = self._int_at_least("verbosity", verbosity, 0)
        log_verbosity = self._int_at_least("log_verbosity", log_verbosity, 0)
        if not isinstance(progress_bar, bool):
            raise self._option_error("progress_bar", progress_bar, "a bool")
        self.progress_bar = progress_bar
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            raise self._option_error("checkpoint", checkpoint, "a file path or None")
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        limits = (max_iterations, self.max_epochs, self.max_passes, max_time)
        if all(math.isinf(v) for v in limits) and callback is None:
            raise ValueError(
                f"{self._owner}: options max_iterations, max_epochs, max_passes and max_time "
                "are all unlimited and there is no callback to stop the run; set at least one "
                "limit"
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

    # -- option checks (every message: owner, option, value, what was expected) ---------------
    @property
    def _owner(self) -> str:
        return type(self).__name__

    def _option_error(self, name: str, value: Any, expected: str) -> ValueError:
        return ValueError(f"{self._owner}: option {name} must be {expected}, got {value!r}")

    def _int_at_least(self, name: str, value: Any, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise self._option_error(name, value, f"an int >= {low}")
        return int(value)

    def _limit(self, name: str, value: Any, *, integer: bool) -> float:
        """A stopping limit: ``None``/``inf`` disables it."""
        if value is None:
            return math.inf
        kind = "an int >= 0" if integer else "a number >= 0"
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self._option_error(name, value, f"{kind} (or None / inf for no limit)")
        if (
            math.isnan(value)
            or value < 0
            or (integer and math.isfinite(value) and value != int(value))
        ):
            raise self._option_error(name, value, f"{kind} (or None / inf for no limit)")
        return float(value)

    def _number(
        self,
        name: str,
        value: Any,
        low: float,
        high: float = math.inf,
        *,
        low_open: bool = False,
        high_open: bool = False,
    ) -> float:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, bool
        )
        ok = ok and math.isfinite(value) and (value > low if low_open else value >= low)
        ok = ok and (value < high if high_open else value <= high)
        if not ok:
            lo = f"{'>' if low_open else '>='} {low}"
            hi = "" if high == math.inf else f" and {'<' if high_open else '<='} {high}"
            raise self._option_error(name, value, f"a finite number {lo}{hi}")
        return float(value)

    def _names(self, name: str, value: Any) -> str | tuple[str | None, ...] | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, Sequence) and all(v is None or isinstance(v, str) for v in value):
            return tuple(value)
        raise self._option_error(name, value, "None, a name, or one name (or None) per factor")

    def _make_rule(self) -> Callable[[int], float]:
        """The per-iteration step-size rule."""
        if isinstance(self.step_size, (str, StepSizeRule)):
            return make_step_size(
                self.step_size,
                self.initial_step_size,
                decay=self.step_size_decay,
                decay_steps=self.decay_steps,
            )
        return _CheckedRule(self._owner, self.step_size)

    def _parameters(self) -> dict[str, Any]:
        """The options that determine the iterates (stopping criteria, output and the
        checkpoint path aside): the log's ``optimizer_parameters`` and the checkpoint's
        identity."""
        names = (
            "batch_size",
            "sampling",
            "step_size",
            "initial_step_size",
            "step_size_decay",
            "decay_steps",
            "retraction",
            "transport",
            "check_period",
            "check_samples",
            "seed",
        )
        return {name: getattr(self, name) for name in names}

    # -- the stepping manifold ----------------------------------------------------------------
    def _stepping_manifold(self, manifold: Manifold) -> tuple[Manifold, list | None]:
        """``manifold`` with the chosen retractions and transports; its factors on a product.
        A name a factor lacks is refused, naming the factor and its choices."""
        is_product = isinstance(manifold, _PymanoptProduct)
        factors = list(manifold.manifolds) if is_product else [manifold]
        chosen = []
        for option in ("retraction", "transport"):
            value = getattr(self, option)
            if isinstance(value, tuple):
                if len(value) != len(factors):
                    raise ValueError(
                        f"{self._owner}: option {option} gives {len(value)} names for a "
                        f"manifold of {len(factors)} factors ({manifold}); give one per factor "
                        f"or one for all"
                    )
                chosen.append(list(value))
            else:
                chosen.append([value] * len(factors))
        built = [
            self._factor_with(index if is_product else None, factor, retraction, transport)
            for index, (factor, retraction, transport) in enumerate(zip(factors, *chosen))
        ]
        if not is_product:
            return built[0], None
        return Product(built), built

    def _factor_with(
        self, index: int | None, factor: Manifold, retraction: str | None, transport: str | None
    ) -> Manifold:
        where = f"factor {index} ({factor})" if index is not None else f"{factor}"
        if retraction is None and transport is None:
            return factor
        if getattr(factor, "is_flat", False):
            return factor  # every retraction is x + u and every transport the identity
        if not hasattr(factor, "with_retraction"):
            raise ValueError(
                f"{self._owner}: {where} is not one of riemann_dnn's manifolds, so its "
                f"retraction and transport cannot be chosen by name; leave retraction and "
                f"transport at None for it"
            )
        current = factor.transport_name
        built = factor
        if retraction is not None:
            if retraction not in factor.retractions:
                raise ValueError(
                    f"{self._owner}: retraction {retraction!r} is not available on {where}; "
                    f"choose one of {sorted(factor.retractions)}"
                )
            built = factor.with_transport("projection").with_retraction(retraction)
        transport = current if transport is None else transport
        if transport not in built.transports:
            raise ValueError(
                f"{self._owner}: transport {transport!r} is not available on {where} with "
                f"the {built.retraction_name!r} retraction; choose one of "
                f"{list(built.transports)}"
            )
        return built.with_transport(transport)

    # -- the run --------------------------------------------------------------------------------
    def run(self, problem: FiniteSumProblem, *, initial_point: Any = None) -> OptimizerResult:
        """Minimise ``problem`` from ``initial_point`` (random from ``seed`` when ``None``),
        or resume from the ``checkpoint`` file when it exists.

        Returns pymanopt's :class:`OptimizerResult`: ``point`` (torch tensors stay on their
        device; numpy stays numpy; a list on a product), ``cost`` and ``gradient_norm``
        (estimates on the check subset at the final point), ``iterations``,
        ``stopping_criterion``, ``time``, ``cost_evaluations`` (batch or full gradients
        computed), ``step_size`` (the last one) and ``log``.
        """
        run = self._setup(problem, initial_point)
        resume = self._load_checkpoint(run) if self.checkpoint is not None else None
        self._start_output(run, resume)
        reason = None
        if resume is None:
            self._start(run)
            reason = self._check(run)
        while reason is None:
            reason = self._stop_reason(run)
            if reason is not None:
                break
            started = time.time()
            self._iterate(run)
            run.solve_time += time.time() - started
            if run.bar is not None:
                run.bar.update(1)
            if run.iteration % self.check_period == 0:
                reason = self._check(run)
        return self._finish(run, reason)

    def _setup(self, problem: FiniteSumProblem, initial_point: Any) -> _Run:
        """Check the problem, the options against its manifold and the initial point; draw
        (from ``seed``, in this order) the initial point and the check subset."""
        if not isinstance(problem, FiniteSumProblem):
            raise TypeError(
                f"{self._owner}.run: problem must be a riemann_dnn.problems.FiniteSumProblem, "
                f"got {type(problem).__name__}; wrap your cost with "
                "FiniteSumProblem(manifold, cost, data)"
            )
        manifold, factors = self._stepping_manifold(problem.manifold)
        rng = (
            self.seed
            if isinstance(self.seed, np.random.Generator)
            else np.random.default_rng(self.seed)
        )
        if initial_point is None or self._checkpoint_exists():
            point = problem.random_point(
                generator=int(rng.integers(2**62)) if self.seed is not None else None
            )
        else:
            point = initial_point
            if hasattr(problem.manifold, "check_point"):
                try:
                    problem.manifold.check_point(point)
                except ValueError as err:
                    raise ValueError(f"{self._owner}.run: initial_point: {err}") from None
        sampler = _Sampler(problem, self.batch_size, self.sampling == "with_replacement")
        if self.check_samples is None or self.check_samples >= problem.num_samples:
            check_indices = None
        else:
            check_indices = problem.as_indices(
                np.sort(rng.choice(problem.num_samples, self.check_samples, replace=False))
            )
        return _Run(
            problem, manifold, factors, point, sampler, check_indices, self._make_rule(), rng
        )

    def _start(self, run: _Run) -> None:
        """The algorithm's state before the first iteration (after the clock starts)."""

    def _iterate(self, run: _Run) -> None:
        """One update: advance ``run.point``, ``run.iteration``, the counters and the
        epoch."""
        raise NotImplementedError

    def _advance(self, run: _Run, point: Any) -> None:
        """Move to ``point``: count the iteration (the step size used is ``run.step_size``,
        logged with ``log_verbosity >= 2``)."""
        run.point = point
        run.iteration += 1
        run.inner += 1
        if self._log_verbosity >= 2:
            self._log["step_sizes"].append(run.step_size)

    def _next_batch(self, run: _Run) -> Any:
        """The next batch of the sampling stream (a new pass when the last one is used up)."""
        if not run.batches:
            run.batches = run.sampler.epoch(run.rng)
        return run.batches.pop(0)

    def _batch_gradient(self, run: _Run, point: Any, indices: Any) -> Any:
        """:math:`\\nabla f_B` at ``point`` (all samples when ``indices`` is ``None``),
        counted in the component-gradient evaluations."""
        run.gradients += run.problem.num_samples if indices is None else len(indices)
        run.gradient_calls += 1
        return run.problem.euclidean_gradient_on(point, indices)

    def _riemannian(self, run: _Run, point: Any, egrad: Any) -> Any:
        return run.manifold.euclidean_to_riemannian_gradient(point, egrad)

    def _end_epoch(self, run: _Run) -> None:
        """Count the epoch and log it (``log["epochs"]`` with ``log_verbosity >= 1``)."""
        run.epoch += 1
        run.inner = 0
        self._log_epoch(run)

    def _log_epoch(self, run: _Run, **extra: Any) -> None:
        if self._log_verbosity < 1:
            return
        entry = self._log["epochs"]
        entry["epoch"].append(run.epoch)
        entry["iteration"].append(run.iteration)
        entry["passes"].append(run.passes)
        entry["time"].append(time.time() - run.start_time)
        entry["step_size"].append(run.step_size)
        for key, value in extra.items():
            entry[key].append(value)
        entry["point"].append(run.point)

    def _epoch_length(self, run: _Run) -> int:
        """Iterations per epoch (for the fractional epoch of the statistics)."""
        return run.sampler.batches_per_epoch

    def _stop_reason(self, run: _Run) -> str | None:
        reason = self._check_stopping_criterion(
            start_time=run.start_time,
            iteration=run.iteration,
            gradient_norm=run.stats.get("gradient_norm", math.inf)
            if _is_finite(run.stats.get("gradient_norm"))
            else math.inf,
            step_size=run.step_size,
        )
        if reason is not None:
            return reason
        run_time = time.time() - run.start_time
        if run.epoch >= self.max_epochs:
            return (
                f"Terminated - max epochs reached after {run.iteration} iterations, "
                f"{run_time:.2f} seconds."
            )
        if run.passes >= self.max_passes:
            return (
                f"Terminated - max passes reached after {run.iteration} iterations "
                f"({run.passes:.2f} passes over the data), {run_time:.2f} seconds."
            )
        return None

    # -- output ---------------------------------------------------------------------------------
    def _start_output(self, run: _Run, resume: dict | None) -> None:
        """Start (or restore) the log, the printed table and the progress bar; then the
        clock (shifted back by the resumed run's time)."""
        self._initialize_log(optimizer_parameters=self._parameters())
        if self._log_verbosity >= 1:
            self._log["epochs"] = defaultdict(list)
        if self._log_verbosity >= 2:
            self._log["step_sizes"] = []
        if resume is not None and resume["log"] is not None and self._log_verbosity >= 1:
            for key in ("iterations", "epochs"):
                self._log[key] = defaultdict(list, resume["log"].get(key) or {})
            if self._log_verbosity >= 2:
                self._log["step_sizes"] = list(resume["log"].get("step_sizes") or [])
        if self._verbosity >= 1:
            print("Optimizing..." if resume is None else f"Resuming from {self.checkpoint}...")
        if self._verbosity >= 2:
            finite = math.isfinite(self._max_iterations)
            width = max(4, len(str(int(self._max_iterations))) if finite else 9)
            columns = [
                ("Iteration", f"{width}d"),
                ("Epoch", "5d"),
                ("Passes", "8.2f"),
                ("Cost", "+.16e"),
                ("Gradient norm", ".8e"),
            ]
            if run.problem.optimal_cost is not None:
                columns.append(("Optimality gap", ".3e"))
            columns += [("Step size", ".3e"), ("Time [s]", ".2f")]
            run.printer = printer.ColumnPrinter(columns=columns)
        else:
            run.printer = printer.VoidPrinter()
        run.printer.print_header()
        if self._verbosity >= 1 and self.progress_bar and sys.stdout.isatty():
            from tqdm import tqdm

            total = self._max_iterations
            run.bar = tqdm(total=int(total) if math.isfinite(total) else None, leave=False)
            run.bar.update(run.iteration)
        elapsed = 0.0 if resume is None else resume["time"]
        run.start_time = time.time() - elapsed
        if resume is None:
            run.step_size = run.rule(0) if run.rule is not None else self.initial_step_size

    def _check(self, run: _Run) -> str | None:
        """Statistics at the current point (printed, logged, passed to the callback), then the
        checkpoint; returns a stop reason from the callback or a non-finite cost."""
        problem, point = run.problem, run.point
        with problem.evaluating():
            cost, egrad = problem.cost_and_euclidean_gradient_on(point, run.check_indices)
            gap = None
            if problem.optimal_cost is not None:
                full = cost if run.check_indices is None else problem.cost_on(point)
                gap = full - problem.optimal_cost
        gradient_norm = float(run.manifold.norm(point, self._riemannian(run, point, egrad)))
        stats = run.stats
        stats.clear()
        stats.update(
            iteration=run.iteration,
            epoch=run.epoch + run.inner / self._epoch_length(run),
            passes=run.passes,
            time=time.time() - run.start_time,
            solve_time=run.solve_time,
            cost=cost,
            gradient_norm=gradient_norm,
            step_size=run.step_size,
        )
        if gap is not None:
            stats["optimality_gap"] = gap
        row = [run.iteration, run.epoch, run.passes, cost, gradient_norm]
        row += [] if gap is None else [gap]
        run.printer.print_row([*row, run.step_size, stats["time"]])
        self._add_log_entry(
            iteration=run.iteration,
            point=point,
            cost=cost,
            **{k: v for k, v in stats.items() if k not in ("iteration", "cost", "time")},
        )
        if self.checkpoint is not None:
            self._save_checkpoint(run)
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
                f"{run.iteration} iterations, {run.epoch} epochs, {run.passes:.2f} passes, "
                f"{time.time() - run.start_time:.2f} s"
            )
        return self._return_result(
            start_time=run.start_time,
            point=run.point,
            cost=stats["cost"],
            iterations=run.iteration,
            stopping_criterion=reason,
            cost_evaluations=run.gradient_calls,
            step_size=run.step_size,
            gradient_norm=stats["gradient_norm"],
        )

    # -- checkpoints ----------------------------------------------------------------------------
    def _checkpoint_exists(self) -> bool:
        return self.checkpoint is not None and self.checkpoint.exists()

    def _identity(self, run: _Run) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: the solver, its options and the
        problem's size, manifold, data shapes and data sums."""
        if run.identity is not None:
            return run.identity
        data = run.problem.data
        arrays = data if isinstance(data, tuple) else (data,)
        run.identity = json.loads(
            json.dumps(
                {
                    "solver": self._owner,
                    "options": {k: _describe(v) for k, v in self._parameters().items()},
                    "problem": type(run.problem).__name__,
                    "manifold": repr(run.manifold),
                    "num_samples": run.problem.num_samples,
                    "data_shapes": [list(a.shape) for a in arrays],
                    "data_sums": [_checksum(a) for a in arrays],
                }
            )
        )
        return run.identity

    def _save_checkpoint(self, run: _Run) -> None:
        """Write the whole state of the run to ``checkpoint``, atomically (a temporary file
        of a unique name beside it, then ``os.replace``)."""
        log = None
        if self._log_verbosity >= 1:
            log = {
                "iterations": dict(self._log["iterations"]),
                "epochs": dict(self._log["epochs"]),
                "step_sizes": self._log.get("step_sizes"),
            }
        state = {
            "format": _CHECKPOINT_FORMAT,
            "identity": json.dumps(self._identity(run), sort_keys=True),
            "point": run.point,
            "state": self._state_dict(run),
            "rng": json.dumps(run.rng.bit_generator.state),
            "check_indices": run.check_indices,
            "batches": run.batches,
            "counters": {
                "iteration": run.iteration,
                "epoch": run.epoch,
                "inner": run.inner,
                "gradients": run.gradients,
                "gradient_calls": run.gradient_calls,
                "step_size": run.step_size,
                "solve_time": run.solve_time,
                "time": time.time() - run.start_time,
            },
            "stats": dict(run.stats),
            "log": log,
        }
        path = self.checkpoint
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            torch.save(_saveable(state), tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _load_checkpoint(self, run: _Run) -> dict | None:
        """Restore ``run`` from ``checkpoint`` when the file exists (refusing one of another
        solver, other options or another problem); returns what the output needs."""
        path = self.checkpoint
        if not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file
            raise ValueError(
                f"{self._owner}.run: checkpoint {path} cannot be read ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); remove it to start afresh"
            ) from None
        if not isinstance(saved, dict) or saved.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(
                f"{self._owner}.run: {path} is not a checkpoint of this version; remove it "
                f"to start afresh"
            )
        mine, theirs = self._identity(run), json.loads(saved["identity"])
        if mine != theirs:
            key, a, b = _first_difference(theirs, mine)
            raise ValueError(
                f"{self._owner}.run: checkpoint {path} was written by another run ({key}: "
                f"{a} there, {b} here); remove it, or give another checkpoint path"
            )
        device = run.problem.device
        saved = _restored(saved, device)
        run.point = saved["point"]
        self._load_state_dict(run, saved["state"])
        run.rng.bit_generator.state = json.loads(saved["rng"])
        run.check_indices = saved["check_indices"]
        run.batches = list(saved["batches"])
        counters = saved["counters"]
        for name in ("iteration", "epoch", "inner", "gradients", "gradient_calls"):
            setattr(run, name, int(counters[name]))
        run.step_size, run.solve_time = counters["step_size"], counters["solve_time"]
        run.stats = dict(saved["stats"])
        run.resumed = True
        return {"time": counters["time"], "log": saved["log"]}

    def _state_dict(self, run: _Run) -> dict[str, Any]:
        """The algorithm's own state, for the checkpoint."""
        return dict(run.state)

    def _load_state_dict(self, run: _Run, state: dict[str, Any]) -> None:
        run.state = dict(state)


def _first_difference(a: Any, b: Any, key: str = "") -> tuple[str, Any, Any]:
    if isinstance(a, dict) and isinstance(b, dict):
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                return _first_difference(a.get(name), b.get(name), f"{key}.{name}".lstrip("."))
    return key, a, b


def _checksum(array: Any) -> float:
    """The sum of the entries in float64 (one device synchronisation): tells data apart."""
    if isinstance(array, torch.Tensor):
        return float(array.detach().to(torch.float64).sum())
    return float(np.asarray(array, dtype=np.float64).sum())


def _describe(value: Any) -> Any:
    """A stable description of an option for a checkpoint's identity (no memory addresses)."""
    if isinstance(value, np.random.Generator):
        return "numpy.random.Generator"
    if callable(value) and not isinstance(value, StepSizeRule):
        return f"callable {getattr(value, '__qualname__', type(value).__name__)}"
    return repr(value)
