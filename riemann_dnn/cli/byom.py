"""``riemann-dnn byom``: RiemannianSGD on the symmetries param_groups finds in networks
without BatchNorm (GroupNorm + weight standardization, ConvNeXt-style LayerNorm), against
torch.optim.SGD, on MNIST."""

from __future__ import annotations

import argparse
import sys

from .options import (
    UsageError,
    add_data,
    add_out,
    add_threads,
    check_data,
    check_unique,
    positive_float,
    positive_int,
    prepare_out,
    set_command,
    use_threads,
)


def add_parser(subparsers) -> None:
    from ..experiments.byom import ARCHS

    parser = subparsers.add_parser(
        "byom",
        help="bring your own model: RiemannianSGD on the symmetries param_groups finds",
        description="Train a small ResNet with GroupNorm and weight standardization and a "
        "small ConvNeXt-style net on MNIST with RiemannianSGD (momentum 0.9) on the groups "
        "riemann_dnn.params.param_groups finds, and with torch.optim.SGD (momentum 0.9); the "
        "rate of each is chosen on validation images, then several seeds report the test "
        "error. Writes byom.json, byom.md and byom.png.",
    )
    parser.add_argument("--quick", action="store_true", help="a run of under a minute")
    parser.add_argument("--archs", nargs="+", choices=list(ARCHS), default=None)
    parser.add_argument("--seeds", type=positive_int, default=None, help="runs per cell (2)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="epochs per run (3)")
    parser.add_argument("--width", type=positive_int, default=None, help="base width (8)")
    parser.add_argument("--train-images", type=positive_int, default=None, help="(5,000)")
    parser.add_argument(
        "--validation-images", type=positive_int, default=None, help="held out (2,000)"
    )
    parser.add_argument("--test-images", type=positive_int, default=None, help="(10,000)")
    parser.add_argument(
        "--lr-candidates", type=positive_float, nargs="+", default=None, help="(0.01 0.03 0.1 0.3)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=None, help="(50)")
    add_out(parser, "output directory (results/byom[-quick])")
    add_data(parser)
    add_threads(parser)
    set_command(parser, run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.byom import ByomConfig, run_byom, write_byom

    overrides = {
        key: value
        for key, value in {
            "archs": tuple(check_unique("--archs", args.archs)) if args.archs else None,
            "seeds": args.seeds,
            "epochs": args.epochs,
            "width": args.width,
            "train_images": args.train_images,
            "validation_images": args.validation_images,
            "test_images": args.test_images,
            "lr_candidates": tuple(check_unique("--lr-candidates", args.lr_candidates))
            if args.lr_candidates
            else None,
            "batch_size": args.batch_size,
            "data_dir": args.data_dir,
            "source": args.source,
        }.items()
        if value is not None
    }
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
    out = prepare_out(args.out or ("results/byom-quick" if args.quick else "results/byom"))
    use_threads(args.threads)
    result = run_byom(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    result["config"]["threads"] = args.threads
    paths = write_byom(result, out)
    print(paths[1].read_text())
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
