r"""The runs of ``riemann-dnn bench stochastic``: each problem x solver x retraction x
transport x seed, with the step size chosen per (problem, solver) by a stated rule.

Rule: over the preset's grid, with the reference retraction and transport (``polar``,
``projection``), the step with the lowest median final optimality gap over the seeds, gaps
below :math:`10^{-12}` (rounding) counting as equal, then the fewest median passes to
:math:`10^{-10}` (the lowest final cost when the optimum is unknown; ties: the first);
R-SGD's grid is of decaying steps. A grid of one value is
no choice: the quick preset gives its steps. The chosen step then serves every retraction
and transport. Seeds are paired: seed ``s`` gives every solver the same initial point and
the same sampling stream.

A run's curve is its statistics at every check (every :math:`\lceil N/2b\rceil`
iterations): passes over the data, optimality gap, solve time (without the statistics),
and for matrix completion the test RMSE. Its linear rate is the least-squares slope of
:math:`\log_{10}` gap per pass over the checks with :math:`10^{-12} \le` gap
:math:`\le 10^{-3}` (``None`` with fewer than three).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...problems import (
    FiniteSumProblem,
    matrix_completion_data,
    matrix_completion_problem,
    matrix_completion_rmse,
    pca_data,
    pca_problem,
    pca_spectrum,
)
from ...solvers import RiemannianSRG, RiemannianSVRG, StochasticGradient
from .config import REFERENCE, BenchConfig, combinations

__all__ = ["build_problem", "run_stochastic_bench", "linear_rate", "first_pass_below"]

_SOLVER_CLASSES = {"sgd": StochasticGradient, "svrg": RiemannianSVRG, "srg": RiemannianSRG}
_LABELS = {"sgd": "R-SGD", "svrg": "R-SVRG", "srg": "R-SRG"}


def _normalised(data: torch.Tensor) -> torch.Tensor:
    """``data`` scaled so that the mean squared row norm is 1."""
    return data / data.square().sum(dim=1).mean().sqrt()


def build_problem(
    name: str, config: BenchConfig, device: Any = "cpu", mnist: Any = None
) -> tuple[FiniteSumProblem, dict[str, Any], Callable | None]:
    """``(problem, description, metric)``: the problem, what defines it, and for matrix
    completion the test RMSE of a point (``None`` otherwise)."""
    if name == "pca-synthetic":
        spec = config.synthetic
        data = _normalised(
            pca_data(
                spec["num_samples"],
                spec["dim"],
                spec["rank"],
                eigengap=spec["eigengap"],
                seed=0,
                device=device,
            )
        )
        spectrum = pca_spectrum(spec["dim"], spec["rank"], spec["eigengap"])
        describe = {
            **spec,
            "lambda_r": float(spectrum[spec["rank"] - 1] / spectrum.sum()),
            "lambda_r+1": float(spectrum[spec["rank"]] / spectrum.sum()),
        }
        return pca_problem(data, spec["rank"]), describe, None
    if name == "pca-mnist":
        spec = config.mnist
        images = mnist.train_images.reshape(len(mnist.train_images), -1)
        count = spec.get("num_samples") or len(images)
        data = torch.as_tensor(np.array(images[:count]), dtype=torch.float64, device=device)
        data = data / 255.0
        problem = pca_problem(_normalised(data - data.mean(dim=0)), spec["rank"])
        values = torch.linalg.eigvalsh(problem.data.T @ problem.data / count).flip(0)
        r = spec["rank"]
        describe = {
            "num_samples": count,
            "dim": int(data.shape[1]),
            "rank": r,
            "mnist_source": str(mnist.source),
            "lambda_r": float(values[r - 1]),
            "lambda_r+1": float(values[r]),
            "eigengap": float(1 - values[r] / values[r - 1]),
        }
        return problem, describe, None
    if name == "completion":
        spec = config.completion
        data = matrix_completion_data(
            spec["num_samples"],
            spec["dim"],
            spec["rank"],
            oversampling=spec["oversampling"],
            seed=0,
            device=device,
        )
        problem = matrix_completion_problem(data)
        describe = {**spec, "observed_per_row": int(data.mask[0].sum()), "noise": data.noise}
        return problem, describe, lambda point: matrix_completion_rmse(point, data)
    raise ValueError(f"unknown problem {name!r}")


def _solver(
    solver: str,
    step: Any,
    retraction: str,
    transport: str | None,
    config: BenchConfig,
    problem: FiniteSumProblem,
    seed: int,
    callback: Callable | None,
):
    batch = config.batch_size
    common = dict(
        batch_size=batch,
        max_passes=config.passes,
        retraction=retraction,
        check_period=max(1, -(-problem.num_samples // (2 * batch))),
        check_samples=None,
        seed=seed,
        verbosity=0,
        log_verbosity=1,
        callback=callback,
        max_time=math.inf,
    )
    if solver == "sgd":
        initial, halving = step
        iterations = halving * problem.num_samples / batch
        return StochasticGradient(
            step_size="decay",
            initial_step_size=initial,
            step_size_decay=1.0 / (initial * iterations),
            **common,
        )
    return _SOLVER_CLASSES[solver](
        step_size="fixed",
        initial_step_size=step,
        inner_iterations=-(-problem.num_samples // batch),
        transport=transport,
        **common,
    )


def linear_rate(passes: list[float], gaps: list[float]) -> float | None:
    """The slope of :math:`\\log_{10}` gap per pass over the checks with gap in
    :math:`[10^{-12}, 10^{-3}]` (``None`` with fewer than three such checks)."""
    points = [(p, math.log10(g)) for p, g in zip(passes, gaps) if 1e-12 <= g <= 1e-3]
    if len(points) < 3:
        return None
    x, y = np.array(points).T
    return float(np.polyfit(x, y, 1)[0])


def first_pass_below(passes: list[float], gaps: list[float], level: float) -> float | None:
    """The passes at the first check with gap <= ``level`` (``None``: never)."""
    return next((p for p, g in zip(passes, gaps) if g <= level), None)


def _run(solver, step, retraction, transport, config, problem, seed, metric) -> dict[str, Any]:
    rmse: list[float] = []

    def record(iteration, point, stats):
        if metric is not None:
            rmse.append(metric(point))

    started = time.perf_counter()
    result = _solver(solver, step, retraction, transport, config, problem, seed, record).run(
        problem
    )
    wall = time.perf_counter() - started
    log = result.log["iterations"]
    passes = [float(p) for p in log["passes"]]
    gaps = [float(g) for g in log.get("optimality_gap", [math.nan] * len(passes))]
    run = {
        "solver": solver,
        "retraction": retraction,
        "transport": transport,
        "step": list(step) if isinstance(step, tuple) else step,
        "seed": seed,
        "passes": passes,
        "gap": gaps,
        "solve_time": [float(t) for t in log["solve_time"]],
        "final_gap": gaps[-1],
        "final_cost": float(log["cost"][-1]),
        "passes_to_1e-6": first_pass_below(passes, gaps, 1e-6),
        "passes_to_1e-10": first_pass_below(passes, gaps, 1e-10),
        "rate": linear_rate(passes, gaps),
        "iterations": result.iterations,
        "wall_seconds": wall,
    }
    if metric is not None:
        run["test_rmse"] = rmse
        run["final_test_rmse"] = rmse[-1]
    return run


def _score(group: list[dict[str, Any]]) -> tuple[float, float]:
    """A step's rank: its median final gap with gaps below 1e-12 (rounding) counted as equal,
    then its median passes to 1e-10; the median final cost when the optimum is unknown."""
    gaps = [r["final_gap"] for r in group]
    if any(g is None or math.isnan(g) for g in gaps):
        return float(np.median([r["final_cost"] for r in group])), 0.0
    reached = [r["passes_to_1e-10"] for r in group]
    passes = math.inf if None in reached else float(np.median(reached))
    return max(float(np.median(gaps)), 1e-12), passes


def _choose(runs: list[dict[str, Any]]) -> Any:
    """The step of the best :func:`_score` (the first on ties)."""
    by_step: dict[str, list] = {}
    for run in runs:
        by_step.setdefault(repr(run["step"]), []).append(run)
    best = min(by_step.values(), key=_score)
    step = best[0]["step"]
    return tuple(step) if isinstance(step, list) else step


def run_stochastic_bench(
    config: BenchConfig,
    *,
    device: str = "cpu",
    mnist: Any = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the bench; returns ``{"config", "problems"}`` with, per problem, its description,
    the step-size selection runs, the chosen steps and the runs."""
    say = progress or (lambda message: None)
    problems = {}
    for name in config.problems:
        problem, description, metric = build_problem(name, config, device, mnist)
        entry: dict[str, Any] = {
            "description": description,
            "optimal_cost": problem.optimal_cost,
            "selection": [],
            "chosen_step": {},
            "runs": [],
        }
        for solver in config.solvers:
            grid = config.sgd_steps if solver == "sgd" else config.vr_steps
            retraction, transport = REFERENCE
            if len(grid) == 1:
                selection = []
            else:
                selection = [
                    _run(
                        solver,
                        step,
                        retraction,
                        transport if solver != "sgd" else None,
                        config,
                        problem,
                        seed,
                        None,
                    )
                    for step in grid
                    for seed in config.seeds
                ]
            for run in selection:
                run.pop("passes"), run.pop("gap"), run.pop("solve_time")
            entry["selection"] += selection
            step = _choose(selection) if selection else grid[0]
            entry["chosen_step"][solver] = list(step) if isinstance(step, tuple) else step
            say(f"{name} {_LABELS[solver]}: step {step} chosen")
            for retraction, transport in combinations(config, solver, problem.manifold):
                for seed in config.seeds:
                    run = _run(solver, step, retraction, transport, config, problem, seed, metric)
                    entry["runs"].append(run)
                    say(
                        f"{name} {_LABELS[solver]} {retraction}+{transport or '-'} seed {seed}: "
                        f"gap {run['final_gap']:.2e} after {run['passes'][-1]:.1f} passes"
                    )
        problems[name] = entry
    settings = {
        key: getattr(config, key)
        for key in (
            "problems",
            "solvers",
            "retractions",
            "transports",
            "passes",
            "batch_size",
            "seeds",
            "synthetic",
            "mnist",
            "completion",
            "vr_steps",
            "sgd_steps",
        )
    }
    settings["device"] = device
    return {"config": settings, "problems": problems}
