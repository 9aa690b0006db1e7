"""``riemann-dnn reproduce study``: the controlled study (registered by :mod:`.reproduce`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(targets) -> None:
    """Register ``study`` under ``reproduce``'s targets."""
    study = targets.add_parser(
        "study",
        help="does the symmetry-invariant update help? paired study with controls",
        description="UN vs B-SGD, B-SGD with per-filter rate λ‖w‖², B-SGD with weight decay, "
        "UN with split rates and SGD, on the MLP and conv ArchBN (MNIST) and SegNet-Basic "
        "(digit scenes), paired seeds, bootstrap CIs, paired t / Wilcoxon tests with Holm's "
        "correction; writes study.json, study.md and study.png (rerun to resume).",
    )
    study.add_argument(
        "--quick", action="store_true", help="the same study at a scale of a few minutes"
    )
    study.add_argument(
        "--data-dir",
        default=None,
        help="directory with IDX-format MNIST-layout image/label files (else "
        "$RIEMANN_DNN_DATA, the cache, or the embedded 5k/1k subset)",
    )
    study.add_argument("--source", choices=["auto", "full", "embedded"], default="auto")
    study.add_argument("--out", default=None, help="output directory (results/study)")
    study.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: one per CPU core)"
    )
    study.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per training process (1; recorded per run)",
    )
    study.add_argument(
        "--protocol",
        choices=["study", "paper-sum"],
        default="study",
        help="study (default: mean loss, extended half-decade grid, stopping "
        "rules on accepted epochs) or paper-sum (the paper's grid with the "
        "summed loss), at the study's scale",
    )
    study.add_argument(
        "--archs",
        nargs="+",
        choices=["mlp", "conv", "segnet"],
        default=["mlp", "conv", "segnet"],
        help="architectures to run (all)",
    )
    study.add_argument(
        "--mlp-scale",
        choices=["study", "paper"],
        default="study",
        help="the MLP on the study's 10,000 training images (default) or at "
        "the paper's scale (50,000, 25-60 epochs; ~3x the time)",
    )
    study.add_argument("--device", default="cpu")
    study.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report the runs already finished in --out",
    )
    study.set_defaults(handler=run_study)


def run_study(args: argparse.Namespace) -> int:
    from ..experiments.study import reproduce_study

    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    out = Path(args.out or ("results/study-quick" if args.quick else "results/study"))
    result = reproduce_study(
        out,
        quick=args.quick,
        protocol=args.protocol,
        archs=tuple(args.archs),
        mlp_scale=args.mlp_scale,
        data_dir=args.data_dir,
        source=args.source,
        device=args.device,
        jobs=args.jobs,
        threads=args.threads,
        train=not args.report_only,
    )
    print((out / "study.md").read_text())
    print(
        f"wrote {out / 'study.json'}, {out / 'study.md'}, {out / 'study.png'} "
        f"({len(result['cells'])} cells, {len(result['comparisons'])} comparisons)"
    )
    return 0
