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


def input_shape(text: str) -> tuple[int, ...]:
    """argparse type: a batch shape such as ``8,3,32,32`` (or ``8x3x32x32``)."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected the batch's shape as integers, e.g. 8,3,32,32, got {text!r}"
        ) from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"every size must be >= 1, got {text!r}")
    return shape


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "symmetry",
        help="show the filter-rescaling symmetry of ArchBN and why UN resolves it",
        description="Rescale every filter of an ArchBN by random positive factors (the paper's "
        "eq. (1)) and measure, on a batch of real MNIST: the loss (unchanged), the Euclidean "
        "gradient (scales as 1/alpha), the UN gradient and step (invariant) and a Euclidean "
        "step (not invariant); then train B-SGD and UN from rescaled copies of one network on "
        "the same minibatches and plot how far apart the copies get. Writes symmetry.json, "
        "symmetry.md and symmetry.png. With --model: the symmetry of every weight of any "
        "model (riemann_dnn.params.explain), written as explain.json and explain.md.",
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="MODULE:FACTORY",
        help="explain an importable model instead: 'package.module:factory', a callable "
        "that builds the torch.nn.Module with no arguments (e.g. torchvision.models:resnet18)",
    )
    parser.add_argument(
        "--input-shape",
        type=input_shape,
        default=None,
        metavar="N,C,H,W",
        help="with --model: the shape of the random batch it runs on, batch dimension "
        "included (default: built from the model's first layer)",
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


def run_model(args: argparse.Namespace) -> int:
    """``--model``: one row per weight of the model the factory builds."""
    import torch

    from ..experiments.symmetry import explain_model, load_factory, write_explanation
    from ..experiments.symmetry.model import build_model

    check_device(args.device)
    try:
        model = build_model(load_factory(args.model), args.model)
    except ValueError as err:
        raise UsageError(f"--model {args.model}: {err}") from None
    out = prepare_out(args.out or "results/symmetry")
    torch.set_num_threads(args.threads)
    try:
        explanation = explain_model(model, args.input_shape, seed=args.seed, device=args.device)
    except (RuntimeError, ValueError) as err:
        if args.input_shape is None:
            raise UsageError(f"--model {args.model}: {' '.join(str(err).split())}") from None
        shape = ",".join(map(str, args.input_shape))
        raise UsageError(
            f"--input-shape {shape}: {args.model} does not run on a batch of that shape "
            f"({type(err).__name__}: {str(err).splitlines()[0]}); give the shape it takes"
        ) from None
    print(explanation)
    paths = write_explanation(explanation, out, model=args.model)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from ..experiments.progress import progress_bar
    from ..experiments.symmetry import run_symmetry, write_report

    if args.model is not None:
        return run_model(args)
    if args.input_shape is not None:
        raise UsageError("--input-shape: only with --model MODULE:FACTORY; add --model")
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
