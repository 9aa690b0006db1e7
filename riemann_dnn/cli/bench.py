"""``riemann-dnn bench retractions``: compare retractions (cost, accuracy, training);
``riemann-dnn bench stochastic``: R-SGD, R-SVRG and R-SRG on the finite sums of their papers."""

from __future__ import annotations

import argparse

from .options import (
    UsageError,
    add_data,
    add_device,
    add_out,
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
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    add_out(
        parser,
        "output directory (default results/bench-retractions, "
        "results/bench-retractions-full with --full)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    set_command(parser, run)
    _add_stochastic(targets)


def _add_stochastic(targets) -> None:
    from ..experiments.stochastic.config import PROBLEMS, RETRACTIONS, SOLVERS, TRANSPORTS

    parser = targets.add_parser(
        "stochastic",
        help="R-SGD, R-SVRG and R-SRG: optimality gap against passes and seconds",
        description="Runs each problem (PCA on synthetic data with a set eigengap, PCA on "
        "MNIST images, synthetic matrix completion; Grassmann manifold) x solver (R-SGD with "
        "a decaying step, R-SVRG and R-SRG with a fixed step) x retraction x transport x "
        "seed, steps chosen per problem and solver on a grid. Writes stochastic.json, "
        "stochastic.md and stochastic.png (optimality gap against passes over the data and "
        "against seconds; test RMSE for matrix completion) into --out. The quick default "
        "(under a minute): smaller problems, 30 passes, each retraction with its own "
        "transport, given steps.",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="the full bench: PCA N=10,000 d=20 r=5, the first 10,000 MNIST training images "
        "(full MNIST when found, r=6), completion N=5,000 d=100 r=5, 50 passes, every retraction with every "
        "transport, step grids (minutes on 2 cores). Options given explicitly override "
        "either preset",
    )
    parser.add_argument("--problems", nargs="+", choices=PROBLEMS, default=None)
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, default=None)
    parser.add_argument("--retractions", nargs="+", choices=RETRACTIONS, default=None)
    parser.add_argument(
        "--transports",
        nargs="+",
        choices=TRANSPORTS,
        default=None,
        help="vector transports of R-SVRG and R-SRG (default: each retraction's own: exp "
        "with parallel, qr and polar with differentiated; --full: all)",
    )
    parser.add_argument("--passes", type=positive_float, default=None, help="passes over the data")
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument(
        "--seeds", nargs="+", type=nonnegative_int, default=None, help="paired seeds (default 0)"
    )
    add_device(parser)
    add_data(parser)
    add_threads(parser)
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default results/bench-stochastic, "
        "results/bench-stochastic-full with --full)",
    )
    set_command(parser, run_stochastic)


def run_stochastic(args: argparse.Namespace) -> int:
    import torch

    from ..experiments.stochastic import (
        FULL,
        QUICK,
        TRANSPORTS,
        run_stochastic_bench,
        stochastic_markdown,
        write_stochastic_report,
    )

    preset = FULL if args.full else QUICK
    if args.full and args.transports is None:
        args.transports = list(TRANSPORTS)
    for option in ("problems", "solvers", "retractions", "transports", "seeds"):
        values = getattr(args, option)
        if values is not None:
            check_unique(f"--{option}", values)
            setattr(args, option, tuple(values))
    config = preset.with_options(
        problems=args.problems,
        solvers=args.solvers,
        retractions=args.retractions,
        transports=args.transports,
        passes=args.passes,
        batch_size=args.batch_size,
        seeds=args.seeds,
    )
    sizes = {"pca-synthetic": config.synthetic, "completion": config.completion}
    for name in config.problems:
        if name in sizes and config.batch_size > sizes[name]["num_samples"]:
            raise UsageError(
                f"--batch-size {config.batch_size}: larger than the {sizes[name]['num_samples']} "
                f"samples of {name}; give --batch-size <= {sizes[name]['num_samples']}"
            )
    check_device(args.device)
    mnist = None
    if "pca-mnist" in config.problems:
        given = args.data_dir is not None or args.source != "auto"
        mnist = check_data(args.data_dir, args.source if given else config.mnist["source"])
    out = prepare_out(
        args.out or ("results/bench-stochastic-full" if args.full else "results/bench-stochastic")
    )
    torch.set_num_threads(args.threads)
    results = run_stochastic_bench(config, device=args.device, mnist=mnist, progress=print)
    results["config"]["full"] = bool(args.full)
    results["config"]["threads"] = args.threads
    paths = write_stochastic_report(results, out)
    print(stochastic_markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


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
