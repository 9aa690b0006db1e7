"""What the design choices of ``riemann_dnn.function.torch`` cost, per pymanopt iteration.

Problem: the dominant invariant subspace (``riemann_dnn.problems.dominant_subspace``),
:math:`\\min_{X^TX = I} -\\operatorname{tr}(X^TAX)` on ``Stiefel(n, p)`` with a Wishart ``A``
(small eigen-gaps, so the optimizers run their full iteration budget). Variants, all from the
same initial point and with the same cost code:

- ``ours``: riemann_dnn ``Stiefel`` + ``riemann_dnn.function.torch``, torch points on
  ``--device`` (the current design: ``inner_product``/``norm`` return Python floats).
- ``ours-tensor-scalars``: the same with a ``Stiefel`` subclass whose ``inner_product``/``norm``
  return 0-d tensors (no ``float()``); its time over ``ours`` is what the float choice saves
  (>1) or costs (<1).
- ``pymanopt-pytorch``: riemann_dnn ``Stiefel`` + ``pymanopt.function.pytorch`` on numpy points
  (each cost/gradient/Hessian call converts numpy -> torch -> numpy on the host).
- ``pymanopt-pytorch+Stiefel``: pymanopt's own ``Stiefel`` + ``pymanopt.function.pytorch``.

SteepestDescent and ConjugateGradient use a fixed step (see :class:`FixedStepLineSearcher`)
so every variant does the same work per iteration; the table counts the cost-code calls per
iteration to show it. Reported: median over ``--repeats`` runs of wall time / iterations, and
each variant's time over ``ours`` measured in the same run (> 1: ours is faster)::

    python benchmarks/pymanopt_torch_backend.py --device cpu --sizes 100 1000 --repeats 5

``--threads`` (default 1) sizes torch's and the BLAS thread pools: with several, numpy's
and torch's pools spin against each other and per-iteration times scatter by 10x.
"""

from __future__ import annotations

import argparse
import os
import sys


def _thread_count(argv: list[str]) -> int:
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--threads", type=int, default=1)
    return max(1, early.parse_known_args(argv)[0].threads)


if __name__ == "__main__":  # thread pools are sized when numpy and torch load
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = str(_thread_count(sys.argv[1:]))

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pymanopt  # noqa: E402
import torch  # noqa: E402
from pymanopt.optimizers import (  # noqa: E402
    ConjugateGradient,
    SteepestDescent,
    TrustRegions,
)

import riemann_dnn  # noqa: E402
import riemann_dnn.function  # noqa: E402
from riemann_dnn.manifolds import Stiefel  # noqa: E402


class FixedStepLineSearcher:
    """pymanopt line searcher that always takes ``step * d`` (one cost evaluation).

    pymanopt's backtracking/adaptive searches make a number of cost evaluations that hinges
    on rounding-level differences (the variants' trajectories part after a few dozen
    iterations), so per-iteration times would compare different amounts of work.
    """

    def __init__(self, step: float):
        self.step = step

    def search(self, objective, manifold, x, d, f0, df0):
        norm_d = manifold.norm(x, d)
        newx = manifold.retraction(x, self.step * d)
        objective(newx)  # what an accepted Armijo step costs
        return self.step * norm_d, newx


def _optimizer(name: str, step: float):
    stop = {"verbosity": 0, "min_gradient_norm": 0.0, "min_step_size": 0.0}
    if name == "SteepestDescent":
        return SteepestDescent(FixedStepLineSearcher(step), max_iterations=60, **stop)
    if name == "ConjugateGradient":
        return ConjugateGradient(
            line_searcher=FixedStepLineSearcher(step), max_iterations=60, **stop
        )
    return TrustRegions(max_iterations=8, **stop)


OPTIMIZERS = ["SteepestDescent", "ConjugateGradient", "TrustRegions"]
VARIANTS = ["ours", "ours-tensor-scalars", "pymanopt-pytorch", "pymanopt-pytorch+Stiefel"]


class TensorScalarStiefel(Stiefel):
    """``Stiefel`` whose ``inner_product``/``norm`` return 0-d tensors instead of floats."""

    def inner_product(self, point, tangent_vector_a, tangent_vector_b):
        if isinstance(tangent_vector_a, torch.Tensor):
            return torch.sum(tangent_vector_a * tangent_vector_b)
        return super().inner_product(point, tangent_vector_a, tangent_vector_b)

    def norm(self, point, tangent_vector):
        if isinstance(tangent_vector, torch.Tensor):
            return torch.linalg.vector_norm(tangent_vector)
        return super().norm(point, tangent_vector)


def _problem(variant: str, A: np.ndarray, p: int, device: torch.device):
    """``(problem, to_initial_point, calls)``; ``calls[0]`` counts evaluations of the torch
    cost code (one per cost, gradient or Hessian-vector product)."""
    n = A.shape[0]
    if variant.startswith("ours"):
        manifold = TensorScalarStiefel(n, p) if variant == "ours-tensor-scalars" else Stiefel(n, p)
        A_t = torch.from_numpy(A).to(device)
        decorator = riemann_dnn.function.torch(manifold)

        def to_point(x0):
            return torch.from_numpy(x0).to(device)
    else:
        manifold = (
            pymanopt.manifolds.Stiefel(n, p) if variant.endswith("+Stiefel") else Stiefel(n, p)
        )
        A_t = torch.from_numpy(A)
        decorator = pymanopt.function.pytorch(manifold)

        def to_point(x0):
            return x0.copy()

    calls = [0]

    @decorator
    def cost(X):
        calls[0] += 1
        return -torch.sum(X * (A_t @ X))

    return pymanopt.Problem(manifold, cost), to_point, calls


def _time_run(optimizer, problem, x0, calls, device) -> dict:
    calls[0] = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = optimizer.run(problem, initial_point=x0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    iterations = max(result.iterations, 1)
    return {
        "seconds_per_iteration": elapsed / iterations,
        "iterations": result.iterations,
        "calls_per_iteration": calls[0] / iterations,
        "final_cost": float(result.cost),
    }


def measure(
    sizes, p, repeats, device, optimizers=("SteepestDescent", "TrustRegions"), seed=0
) -> list[dict]:
    """One row per (n, optimizer, variant): median ms per iteration and ratio to ``ours``."""
    rows = []
    for n in sizes:
        rng = np.random.default_rng(seed)
        G = rng.standard_normal((n, 2 * n))
        A = G @ G.T / (2 * n)
        step = 0.25 / np.linalg.eigvalsh(A)[-1]  # the Euclidean gradient is -2AX
        x0 = Stiefel(n, p).random_point(generator=seed + 1)
        for optimizer_name in optimizers:
            times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            info: dict[str, dict] = {}
            for v in VARIANTS:
                # One variant at a time (warm-up, then the repeats): interleaving them lets
                # numpy's BLAS threads and torch's OpenMP threads, still spinning from the
                # previous variant, slow the next one down.
                problem, to_point, calls = _problem(v, A, p, device)
                try:
                    _time_run(
                        _optimizer(optimizer_name, step), problem, to_point(x0), calls, device
                    )
                except Exception as err:  # a variant that breaks is reported, not fatal
                    info[v] = {"error": f"{type(err).__name__}: {err}"}
                    continue
                for _ in range(repeats):
                    run = _time_run(
                        _optimizer(optimizer_name, step), problem, to_point(x0), calls, device
                    )
                    times[v].append(run.pop("seconds_per_iteration"))
                    info[v] = run
            base = statistics.median(times["ours"]) if times["ours"] else float("nan")
            for v in VARIANTS:
                row = {
                    "n": n,
                    "p": p,
                    "optimizer": optimizer_name,
                    "variant": v,
                    "device": str(device) if v.startswith("ours") else "cpu (numpy)",
                    **info.get(v, {}),
                }
                if times[v]:
                    median = statistics.median(times[v])
                    row.update(
                        ms_per_iteration=1e3 * median,
                        ratio_to_ours=median / base,
                        repeats_ms=[1e3 * t for t in times[v]],
                    )
                rows.append(row)
    return rows


def _markdown(rows, meta) -> str:
    lines = [
        "# pymanopt torch backend: cost per iteration",
        "",
        f"Dominant subspace on Stiefel(n, {meta['p']}), median of {meta['repeats']} runs; "
        f"device {meta['device']}, torch {meta['torch']} ({meta['threads']} threads), "
        f"pymanopt {meta['pymanopt']}. ratio = variant time / ours (> 1: ours is faster).",
        "",
        "| n | optimizer | variant | points on | ms / iter | ratio to ours | iters "
        "| cost-code calls / iter | final cost |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['n']} | {r['optimizer']} | {r['variant']} | {r['device']} | "
                f"failed: {r['error'][:60]} | | | | |"
            )
            continue
        lines.append(
            f"| {r['n']} | {r['optimizer']} | {r['variant']} | {r['device']} | "
            f"{r['ms_per_iteration']:.3f} | {r['ratio_to_ours']:.2f} | {r['iterations']} | "
            f"{r['calls_per_iteration']:.2f} | {r['final_cost']:.8g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--p", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    parser.add_argument(
        "--optimizers", nargs="+", choices=OPTIMIZERS, default=["SteepestDescent", "TrustRegions"]
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch/BLAS threads (default 1: stable numbers)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    device = torch.device(args.device)
    if not 1 <= args.p <= min(args.sizes):
        parser.error(f"--p must be in [1, min(--sizes)], got {args.p}")
    rows = measure(args.sizes, args.p, args.repeats, device, args.optimizers)
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "pymanopt": pymanopt.__version__,
        "riemann_dnn": riemann_dnn.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "p": args.p,
        "repeats": args.repeats,
        "optimizers": "SteepestDescent/ConjugateGradient: 60 iterations, fixed step "
        "0.25/lambda_max(A); TrustRegions: 8 iterations, default settings",
    }
    markdown = _markdown(rows, meta)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"pymanopt_torch_backend_{args.device}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    stem.with_suffix(".md").write_text(markdown)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()
