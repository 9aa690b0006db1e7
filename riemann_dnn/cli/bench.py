"""``riemann-dnn bench retractions``: compare retractions (cost, accuracy, training)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="performance and accuracy benchmarks")
    targets = bench.add_subparsers(dest="target", metavar="TARGET", required=True)
    parser = targets.add_parser(
        "retractions",
        help="time, accuracy and training effect of each retraction",
        description="For the oblique (normalize, exp), Stiefel (qr, polar, cayley, exp) and "
        "Grassmann (qr, polar, exp) manifolds of a PxN weight: median time per call and ratio "
        "to the cheapest, distance from the manifold after one call and after --steps chained "
        "float32 steps, the measured order of agreement with exp (float64), and ArchBN's test "
        "error and epoch time per constraint/retraction (quick protocol). Writes "
        "retractions.json, retractions.md and PNG plots into --out.",
    )
    parser.add_argument("--sizes", nargs="+", default=["64x784", "512x4608", "1024x1024"],
                        metavar="PxN", help="weight sizes: P filters of size N "
                        "(default 64x784 512x4608 1024x1024)")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"],
                        default=["float32", "float64"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--steps", type=int, default=10_000,
                        help="chained float32 steps of the drift measurement (default 10000; "
                        "0 skips it)")
    parser.add_argument("--drift-sizes", nargs="+", default=None, metavar="PxN",
                        help="sizes of the drift measurement (default: the smallest size)")
    parser.add_argument("--order-size", default=None, metavar="PxN",
                        help="size of the agreement-order measurement (default: the smallest)")
    parser.add_argument("--manifolds", nargs="+", default=["oblique", "stiefel", "grassmann"],
                        choices=["oblique", "stiefel", "grassmann"])
    parser.add_argument("--budget", type=float, default=0.5,
                        help="seconds of repeats per timing cell (default 0.5; at least 3 "
                        "repeats, 2 for calls slower than the budget)")
    parser.add_argument("--archbn", action=argparse.BooleanOptionalAction, default=True,
                        help="train ArchBN (depth 2, quick protocol) per constraint/retraction")
    parser.add_argument("--archbn-runs", type=int, default=2,
                        help="runs (seeds) per ArchBN variant (default 2)")
    parser.add_argument("--data-dir", default=None,
                        help="MNIST directory (else $RIEMANN_DNN_DATA, the cache, or the "
                        "embedded 5k/1k subset)")
    parser.add_argument("--source", choices=["auto", "full", "embedded"], default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 gives steadier timings "
                        "on a busy machine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="output directory (default results/bench-retractions)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.retractions import (
        retraction_markdown,
        run_retraction_bench,
        write_retraction_report,
    )

    if args.archbn_runs < 1:
        raise SystemExit(f"--archbn-runs must be >= 1, got {args.archbn_runs}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: no CUDA device is available; use "
                             f"--device cpu")
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    out = Path(args.out or "results/bench-retractions")
    try:
        results = run_retraction_bench(
            sizes=args.sizes, dtypes=args.dtypes, device=args.device, steps=args.steps,
            drift_sizes=args.drift_sizes, order_size=args.order_size, families=args.manifolds,
            budget_s=args.budget, archbn=args.archbn, archbn_runs=args.archbn_runs,
            data_dir=args.data_dir, source=args.source, out_dir=out, seed=args.seed,
            progress=not args.no_progress,
        )
    except ValueError as err:
        raise SystemExit(f"riemann-dnn bench retractions: {err}") from None
    paths = write_retraction_report(results, out)
    print(retraction_markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
