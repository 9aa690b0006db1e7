"""``riemann-dnn symmetry``: the paper's §2 made visible (filter-rescaling symmetry of ArchBN)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    parser.add_argument("--out", default=None, help="output directory (default results/symmetry)")
    parser.add_argument("--depth", type=int, default=2, help="ArchBN depth (2; the paper also 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None,
                        help="directory with the four MNIST IDX files (else $RIEMANN_DNN_DATA, "
                        "the cache, or the embedded 5k/1k subset)")
    parser.add_argument("--source", choices=["auto", "full", "embedded"], default="auto",
                        help="'full' requires the IDX files, 'embedded' uses the packaged subset")
    parser.add_argument("--steps", type=int, default=300, help="training steps per copy (300)")
    parser.add_argument("--copies", type=int, default=3, help="rescaled copies (3; copy 0 as is)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate of both methods")
    parser.add_argument("--batch-size", type=int, default=100, help="training minibatch (100)")
    parser.add_argument("--alpha-spread", type=float, default=10.0,
                        help="factors are log-uniform in [1/S, S] (10)")
    parser.add_argument("--check-batch", type=int, default=500,
                        help="images in the batch of the invariance checks (500)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="random training images the trajectories draw minibatches from "
                        "(default: up to 10,000)")
    parser.add_argument("--bn-eps", type=float, default=1e-5,
                        help="BatchNorm eps of the trained network (PyTorch's 1e-5); the checks "
                        "are also made with a negligible eps (exact symmetry)")
    parser.add_argument("--dtype", choices=_DTYPES, default="float64",
                        help="precision of the trajectories (float64: the UN copies agree to "
                        "~1e-14; in float32 rounding differences can be amplified by training). "
                        "The checks use both")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (1: the tensors are small; more threads "
                        "were 4x slower on a busy 2-core machine, 1.1x faster on an idle "
                        "16-core one)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..experiments.symmetry import run_symmetry, write_report

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    out = Path(args.out or "results/symmetry")
    bar = None

    def progress(n: int) -> None:  # the bar opens when training starts, after the checks
        nonlocal bar
        if bar is None:
            bar = tqdm(total=2 * args.steps, unit="step", desc="trajectories (B-SGD, UN)")
        bar.update(n)

    print("invariance checks (float32 and float64, two BatchNorm eps) ...", file=sys.stderr)
    try:
        result = run_symmetry(
            depth=args.depth, seed=args.seed, data_dir=args.data_dir, source=args.source,
            steps=args.steps, copies=args.copies, lr=args.lr, batch_size=args.batch_size,
            alpha_spread=args.alpha_spread, check_batch=args.check_batch,
            train_images=args.train_images, bn_eps=args.bn_eps,
            dtype=getattr(torch, args.dtype), device=args.device, progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    paths = write_report(result, out)
    print(paths[1].read_text())
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
