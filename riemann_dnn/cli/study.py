"""``riemann-dnn reproduce study``: the controlled study (registered by :mod:`.reproduce`)."""

from __future__ import annotations

import argparse

from ..experiments.config import PROTOCOLS, STUDY_ARCHS
from ..experiments.methods import ARMS
from .options import (
    UsageError,
    add_data,
    add_device,
    add_jobs,
    add_out,
    add_threads,
    check_data,
    check_device,
    check_jobs,
    check_unique,
    positive_int,
    prepare_out,
    report_written,
    result_files,
    run_options,
    set_command,
)


def add_parser(targets) -> None:
    """Register ``study`` under ``reproduce``'s targets."""
    study = targets.add_parser(
        "study",
        help="does the symmetry-invariant update help? paired study with controls",
        description="UN vs B-SGD, B-SGD with per-filter rate λ‖w‖², B-SGD with weight decay, "
        "UN with split rates and SGD, on the MLP and conv ArchBN (MNIST) and SegNet-Basic "
        "(digit scenes), paired seeds, bootstrap CIs, paired t / Wilcoxon tests with Holm's "
        "correction; writes study.json, study.md and study.png (rerun to resume). "
        "--optimizers momentum adds UN with momentum 0.9 vs B-SGD with momentum and SGDP; "
        "--optimizers adam adds Riemannian Adam vs Adam, AdamW and AdamP (SGDP and AdamP "
        'need the study extra: pip install "riemann-dnn[study]").',
    )
    study.add_argument(
        "--quick", action="store_true", help="the same study at a scale of a few minutes"
    )
    add_data(study)
    add_out(study, "output directory (results/study)")
    add_jobs(study, None, "worker processes (default: one per CPU core); no number depends on it")
    add_threads(study)
    study.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default="study",
        help="study (default: mean loss, extended half-decade grid, stopping "
        "rules on accepted epochs) or paper-sum (the paper's grid with the "
        "summed loss), at the study's scale",
    )
    study.add_argument(
        "--archs",
        nargs="+",
        choices=list(STUDY_ARCHS),
        default=list(STUDY_ARCHS),
        help="architectures to run (all)",
    )
    study.add_argument(
        "--optimizers",
        nargs="+",
        choices=list(ARMS),
        default=["sgd"],
        help="the study's arms: sgd (default: plain SGD, UN and its controls), momentum "
        "(momentum 0.9: UN, B-SGD, SGDP), adam (Riemannian Adam, Adam, AdamW, AdamP)",
    )
    study.add_argument(
        "--mlp-scale",
        choices=["study", "paper"],
        default="study",
        help="the MLP on the study's 10,000 training images (default) or at "
        "the paper's scale (50,000, 25-60 epochs; ~3x the time)",
    )
    study.add_argument(
        "--segnet-seeds",
        type=positive_int,
        default=None,
        help="seeds of the SegNet cell (default 8; --quick 2), the first of the default ones",
    )
    add_device(study)
    study.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report the runs already finished in --out",
    )
    set_command(study, run_study)


def run_study(args: argparse.Namespace) -> int:
    from ..experiments.study import reproduce_study, study_plan

    archs = tuple(check_unique("--archs", args.archs))
    optimizers = tuple(check_unique("--optimizers", args.optimizers))
    if args.segnet_seeds is not None and args.segnet_seeds < 2:
        raise UsageError(
            f"--segnet-seeds {args.segnet_seeds}: the paired statistics need at least 2 seeds"
        )
    try:  # an unknown arm, or the adamp package missing: refused before any work
        plan = study_plan(
            args.quick,
            args.protocol,
            archs=archs,
            mlp_scale=args.mlp_scale,
            optimizers=optimizers,
            segnet_seeds=args.segnet_seeds,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    check_device(args.device)
    mnist = check_data(args.data_dir, args.source)
    for arch, protocol in (("mlp", plan.mlp_protocol), ("conv", plan.conv_protocol)):
        if arch in archs:
            try:
                protocol.training_sets(len(mnist.train_labels))
            except ValueError as err:
                raise UsageError(
                    f"--archs {arch}: the study's {arch} protocol needs more training images "
                    f"than {mnist.source} has ({err}); give full MNIST (--data-dir or "
                    f"$RIEMANN_DNN_DATA){'' if args.quick else ', or --quick'}"
                ) from None
    args.jobs = check_jobs(args.jobs, args.threads)
    out = prepare_out(args.out or ("results/study-quick" if args.quick else "results/study"))
    result = reproduce_study(
        out,
        plan=plan,
        quick=args.quick,
        protocol=args.protocol,
        archs=archs,
        mlp_scale=args.mlp_scale,
        optimizers=optimizers,
        train=not args.report_only,
        **run_options(args),
    )
    report_written(
        result_files(out, "study"),
        f" ({len(result['cells'])} cells, {len(result['comparisons'])} comparisons)",
    )
    return 0
