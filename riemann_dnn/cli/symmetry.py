"""``riemann-dnn symmetry``: the paper's §2 made visible (filter-rescaling symmetry of ArchBN)."""

from __future__ import annotations

import argparse
import sys

from .options import (
    UsageError,
    add_data,
    add_device,
    add_out,
    add_threads,
    check_data,
    check_device,
    float_at_least,
    nonnegative_int,
    positive_float,
    positive_int,
    prepare_out,
    set_command,
)

_DTYPES = ("float32", "float64")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "symmetry",
        help="show the filter-rescaling symmetry of ArchBN and why UN resolves it",
        description="Rescale every filter of an ArchBN by random positive factors (the paper's "
        "eq. (1)) and measure, on a batch of real MNIST: the loss (unchanged), the Euclidean "
        "gradient (scales as 1/alpha), the UN gradient and step (invariant) and a Euclidean "
        "step (not invariant); then train B-SGD and UN from rescaled copies of one network on "
        "the same minibatches and plot how far apart the copies get. Writes symmetry.json, "
        "symmetry.md and symmetry.png.",
    )
    add_out(parser, "output directory (default results/symmetry)")
    parser.add_argument(
        "--depth", type=positive_int, default=2, help="ArchBN depth (2; the paper also 4)"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    add_data(parser)
    parser.add_argument(
        "--steps", type=positive_int, default=300, help="training steps per copy (300)"
    )
    parser.add_argument(
        "--copies", type=positive_int, default=3, help="rescaled copies (3; copy 0 as is)"
    )
    parser.add_argument(
        "--lr", type=positive_float, default=0.05, help="learning rate of both methods"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=100, help="training minibatch (100)"
    )
    parser.add_argument(
        "--alpha-spread",
        type=float_at_least(1),
        default=10.0,
        help="factors are log-uniform in [1/S, S], S >= 1 (10)",
    )
    parser.add_argument(
        "--check-batch",
        type=positive_int,
        default=500,
        help="images in the batch of the invariance checks (500)",
    )
    parser.add_argument(
        "--train-images",
        type=positive_int,
        default=None,
        help="random training images the trajectories draw minibatches from "
        "(default: up to 10,000)",
    )
    parser.add_argument(
        "--bn-eps",
        type=positive_float,
        default=1e-5,
        help="BatchNorm eps of the trained network (PyTorch's 1e-5); the checks "
        "are also made with a negligible eps (exact symmetry)",
    )
    parser.add_argument(
        "--dtype",
        choices=_DTYPES,
        default="float64",
        help="precision of the trajectories (float64: the UN copies agree to "
        "~1e-14; in float32 rounding differences can be amplified by training). "
        "The checks use both",
    )
    add_device(parser)
    add_threads(parser)
    set_command(parser, run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..experiments.progress import progress_bar
    from ..experiments.symmetry import run_symmetry, write_report

    if args.copies < 2:
        raise UsageError(f"--copies {args.copies}: need at least 2 (copy 0 and a rescaled one)")
    check_device(args.device)
    mnist = check_data(args.data_dir, args.source)
    for option, value in (
        ("--check-batch", args.check_batch),
        ("--train-images", args.train_images),
    ):
        if value is not None and value > len(mnist.train_labels):
            raise UsageError(
                f"{option} {value}: more than the {len(mnist.train_labels)} "
                f"training images of {mnist.source}; give at most that"
            )
    for option, value in (("--check-batch", args.check_batch), ("--batch-size", args.batch_size)):
        if value < 2:
            raise UsageError(
                f"{option} {value}: BatchNorm cannot train on one image per batch; give "
                f"{option} >= 2"
            )
    train_images = args.train_images or min(10_000, len(mnist.train_labels))  # run_symmetry's
    if args.batch_size > train_images:
        raise UsageError(
            f"--batch-size {args.batch_size}: more than the {train_images} training images the "
            f"trajectories draw from; give at most {train_images} (or more --train-images)"
        )
    out = prepare_out(args.out or "results/symmetry")
    torch.set_num_threads(args.threads)
    print("invariance checks (float32 and float64, two BatchNorm eps) ...", file=sys.stderr)
    with progress_bar(
        total=2 * args.steps, unit="step", desc="trajectories (B-SGD, UN)", delay=0.5
    ) as bar:
        result = run_symmetry(
            depth=args.depth,
            seed=args.seed,
            data_dir=args.data_dir,
            source=args.source,
            steps=args.steps,
            copies=args.copies,
            lr=args.lr,
            batch_size=args.batch_size,
            alpha_spread=args.alpha_spread,
            check_batch=args.check_batch,
            train_images=args.train_images,
            bn_eps=args.bn_eps,
            dtype=getattr(torch, args.dtype),
            device=args.device,
            progress=bar.update,
        )
    result["config"]["threads"] = args.threads
    paths = write_report(result, out)
    print(paths[1].read_text())
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
