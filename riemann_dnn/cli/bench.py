"""``riemann-dnn bench retractions``: compare retractions (cost, accuracy, training)."""

from __future__ import annotations

import argparse

from .options import (
    UsageError,
    add_data,
    add_device,
    add_threads,
    check_data,
    check_device,
    check_unique,
    nonnegative_int,
    positive_float,
    positive_int,
    prepare_out,
    set_command,
)


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
    parser.add_argument(
        "--full",
        action="store_true",
        help="the full bench: sizes 64x784 512x4608 1024x1024, 10000 drift "
        "steps, 0.5 s per timing cell and ArchBN training (2 runs per "
        "variant; tens of minutes on 2 cores). Without it a few-minute bench: "
        "sizes 64x784 256x2304, 1000 drift steps, 0.2 s per cell, no ArchBN. "
        "Options given explicitly override either",
    )
    parser.add_argument(
        "--sizes", nargs="+", default=None, metavar="PxN", help="weight sizes: P filters of size N"
    )
    parser.add_argument(
        "--dtypes", nargs="+", choices=["float32", "float64"], default=["float32", "float64"]
    )
    add_device(parser)
    parser.add_argument(
        "--steps",
        type=nonnegative_int,
        default=None,
        help="chained float32 steps of the drift measurement (0 skips it)",
    )
    parser.add_argument(
        "--drift-sizes",
        nargs="+",
        default=None,
        metavar="PxN",
        help="sizes of the drift measurement (default: the smallest size)",
    )
    parser.add_argument(
        "--order-size",
        default=None,
        metavar="PxN",
        help="size of the agreement-order measurement (default: the smallest)",
    )
    parser.add_argument(
        "--manifolds",
        nargs="+",
        default=None,
        help="manifold families to compare (default: every family of "
        "riemann_dnn.experiments.retractions.RETRACTIONS)",
    )
    parser.add_argument(
        "--budget",
        type=positive_float,
        default=None,
        help="seconds of repeats per timing cell (at least 3 repeats, 2 for "
        "calls slower than the budget)",
    )
    parser.add_argument(
        "--archbn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train ArchBN (depth 2, quick protocol) per constraint/retraction",
    )
    parser.add_argument(
        "--archbn-runs",
        type=positive_int,
        default=None,
        help="runs (seeds) per ArchBN variant (default 2 with --full, else 1)",
    )
    add_data(parser)
    add_threads(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default results/bench-retractions, "
        "results/bench-retractions-full with --full)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    set_command(parser, run)


_QUICK = {
    "sizes": ["64x784", "256x2304"],
    "steps": 1000,
    "budget": 0.2,
    "archbn": False,
    "archbn_runs": 1,
}
_FULL = {
    "sizes": ["64x784", "512x4608", "1024x1024"],
    "steps": 10_000,
    "budget": 0.5,
    "archbn": True,
    "archbn_runs": 2,
}


def run(args: argparse.Namespace) -> int:
    import torch

    from ..experiments.retractions import (
        RETRACTIONS,
        parse_size,
        retraction_markdown,
        run_retraction_bench,
        write_retraction_report,
    )

    args.manifolds = args.manifolds or list(RETRACTIONS)
    unknown = [m for m in args.manifolds if m not in RETRACTIONS]
    if unknown:
        raise UsageError(
            f"--manifolds {' '.join(args.manifolds)}: {unknown[0]} has no retractions to "
            f"compare; choose from {', '.join(RETRACTIONS)}"
        )

    for name, value in (_FULL if args.full else _QUICK).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    check_unique("--sizes", args.sizes)
    check_unique("--dtypes", args.dtypes)
    check_unique("--manifolds", args.manifolds)
    for option, sizes in (
        ("--sizes", args.sizes),
        ("--drift-sizes", args.drift_sizes or []),
        ("--order-size", [args.order_size] if args.order_size else []),
    ):
        for size in sizes:
            try:
                parse_size(size)
            except ValueError as err:
                raise UsageError(f"{option} {size}: {err}") from None
    check_device(args.device)
    if args.archbn:
        check_data(args.data_dir, args.source)
    out = prepare_out(
        args.out
        or ("results/bench-retractions-full" if args.full else "results/bench-retractions")
    )
    torch.set_num_threads(args.threads)
    results = run_retraction_bench(
        sizes=args.sizes,
        dtypes=args.dtypes,
        device=args.device,
        steps=args.steps,
        drift_sizes=args.drift_sizes,
        order_size=args.order_size,
        families=args.manifolds,
        budget_s=args.budget,
        archbn=args.archbn,
        archbn_runs=args.archbn_runs,
        data_dir=args.data_dir,
        source=args.source,
        out_dir=out,
        seed=args.seed,
        progress=not args.no_progress,
    )
    results["config"]["full"] = bool(args.full)
    results["config"]["threads"] = args.threads
    paths = write_retraction_report(results, out)
    print(retraction_markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
