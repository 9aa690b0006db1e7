"""``riemann-dnn byom``: RiemannianSGD on the symmetries param_groups finds in networks
without BatchNorm (GroupNorm + weight standardization, ConvNeXt-style LayerNorm), against
torch.optim.SGD and its controls (same initial point, per-filter effective rate), on MNIST,
with rates chosen on validation images and paired seeds."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .options import (
    UsageError,
    add_data,
    add_jobs,
    add_out,
    add_threads,
    check_data,
    check_jobs,
    check_unique,
    nonnegative_int,
    positive_float,
    positive_int,
    prepare_out,
    report_written,
    set_command,
    use_threads,
)


def add_parser(subparsers) -> None:
    from ..experiments.byom import ARCHS, BYOM_METHODS, SCHEDULES

    parser = subparsers.add_parser(
        "byom",
        help="bring your own model: RiemannianSGD on the symmetries param_groups finds",
        description="Train a small ResNet with GroupNorm and weight standardization (and, "
        "with --archs, a small ConvNeXt-style net) on MNIST with RiemannianSGD on the groups "
        "riemann_dnn.params.param_groups finds (un), torch.optim.SGD from the same initial "
        "point (bsgd), bsgd with per-filter rate lr*||w||^2 (bsgd-elr) and torch.optim.SGD "
        "from PyTorch's initialisation (sgd), all with momentum 0.9. Each method's rate is "
        "chosen on validation images (seed 0; the grid is extended while the best rate is on "
        "its edge), then paired seeds report the test error and paired comparisons. Writes "
        "byom.json, byom.md, byom.png and runs/*.json (a rerun reuses finished runs).",
    )
    parser.add_argument("--quick", action="store_true", help="a run of under a minute")
    parser.add_argument("--archs", nargs="+", choices=list(ARCHS), default=None)
    parser.add_argument("--methods", nargs="+", choices=list(BYOM_METHODS), default=None)
    parser.add_argument(
        "--seeds", type=positive_int, default=None, help="paired seeds per method (5)"
    )
    parser.add_argument("--epochs", type=positive_int, default=None, help="epochs per run (6)")
    parser.add_argument("--width", type=positive_int, default=None, help="base width (8)")
    parser.add_argument("--train-images", type=positive_int, default=None, help="(10,000)")
    parser.add_argument(
        "--validation-images", type=positive_int, default=None, help="held out (2,000)"
    )
    parser.add_argument("--test-images", type=positive_int, default=None, help="(10,000)")
    parser.add_argument(
        "--lr-candidates",
        type=positive_float,
        nargs="+",
        default=None,
        help="the rate grid to start from (10^-1.5 10^-1 10^-0.5)",
    )
    parser.add_argument(
        "--lr-extend",
        type=nonnegative_int,
        default=None,
        help="steps of x10^0.5 the grid may be extended each way while the best rate is on "
        "its edge (2)",
    )
    parser.add_argument("--schedule", choices=list(SCHEDULES), default=None, help="(constant)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="(50)")
    add_out(parser, "output directory (results/byom[-quick])")
    add_data(parser)
    add_threads(parser)
    add_jobs(parser, 1, "worker processes (default 1: this process)")
    set_command(parser, run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.byom import ByomConfig, run_byom, write_byom

    overrides = {
        key: value
        for key, value in {
            "archs": tuple(check_unique("--archs", args.archs)) if args.archs else None,
            "methods": tuple(check_unique("--methods", args.methods)) if args.methods else None,
            "seeds": args.seeds,
            "epochs": args.epochs,
            "width": args.width,
            "train_images": args.train_images,
            "validation_images": args.validation_images,
            "test_images": args.test_images,
            "lr_candidates": tuple(check_unique("--lr-candidates", args.lr_candidates))
            if args.lr_candidates
            else None,
            "lr_extend": args.lr_extend,
            "schedule": args.schedule,
            "batch_size": args.batch_size,
            "data_dir": args.data_dir,
            "source": args.source,
        }.items()
        if value is not None
    }
    if "lr_candidates" in overrides and len(overrides["lr_candidates"]) < 2:
        overrides.setdefault("lr_extend", 0)
        if overrides["lr_extend"]:
            raise UsageError(
                f"--lr-extend {overrides['lr_extend']}: extending the grid needs at least "
                f"two --lr-candidates; give more rates or --lr-extend 0"
            )
    config = ByomConfig.quick(**overrides) if args.quick else ByomConfig(**overrides)
    if config.width % 4:
        raise UsageError(f"--width {config.width}: GroupNorm's 4 groups need a multiple of 4")
    mnist = check_data(args.data_dir, args.source)
    need = config.train_images + config.validation_images
    if need > len(mnist.train_labels):
        raise UsageError(
            f"--train-images {config.train_images} + --validation-images "
            f"{config.validation_images}: more than the {len(mnist.train_labels)} training "
            f"images of {mnist.source}; give at most that together"
        )
    available = len(mnist.test_labels)
    if config.test_images > available:
        if args.test_images is not None:
            raise UsageError(
                f"--test-images {config.test_images}: more than the {available} test images "
                f"of {mnist.source}; give at most that"
            )
        print(
            f"riemann-dnn byom: {mnist.source} has {available} test images; using all of them "
            f"(not {config.test_images})",
            file=sys.stderr,
        )
        config = replace(config, test_images=available)
    jobs = check_jobs(args.jobs, args.threads)
    out = prepare_out(args.out or ("results/byom-quick" if args.quick else "results/byom"))
    use_threads(args.threads)
    result = run_byom(
        config,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        out=out,
        jobs=jobs,
        threads=args.threads,
    )
    paths = write_byom(result, out)
    report_written(paths)
    return 0
