"""``riemann-dnn reproduce table2``/``sensitivity``/``study`` and ``riemann-dnn train archbn``."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from ..experiments.config import PROTOCOLS, quick_protocol
from ..experiments.methods import METHODS, TABLE2_METHODS
from .options import (
    UsageError,
    add_amp,
    add_data,
    add_device,
    add_jobs,
    add_out,
    add_targets,
    add_threads,
    check_batch,
    check_data,
    check_device,
    check_jobs,
    check_launch,
    check_methods,
    check_retraction,
    check_unique,
    nonnegative_int,
    positive_float,
    positive_int,
    prepare_out,
    report_written,
    result_files,
    run_options,
    set_command,
)

# the defaults come from the experiments' own configuration (no default typed twice)
_EPOCHS = ("selection_epochs", "min_epochs", "max_epochs")
_PAPER, _QUICK = PROTOCOLS["paper-sum"], quick_protocol()
_METHOD_NAMES = list(METHODS)


def _add_protocol_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("protocol (defaults: the paper's)")
    group.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default="paper-sum",
        help="named protocol: paper-sum (default; the paper's rate grid with "
        "the summed loss, which reproduces its Table 2) or study (mean loss, "
        "half-decade grid extended until the chosen rate is interior, stopping "
        "rules on accepted epochs only; docs/study.md); the options below "
        "override it",
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        default=_PAPER.batch_size,
        help=f"minibatch size (the paper gives none; default {_PAPER.batch_size})",
    )
    group.add_argument(
        "--loss-reduction",
        choices=["mean", "sum"],
        default=None,
        help="minibatch loss: sum (paper-sum) or mean of per-image losses; the "
        "paper does not say, and it sets what its learning-rate grid means "
        "(see docs/table2.md)",
    )
    group.add_argument(
        "--min-epochs",
        type=positive_int,
        default=None,
        help=f"default {_PAPER.min_epochs} (--quick: {_QUICK.min_epochs})",
    )
    group.add_argument(
        "--max-epochs",
        type=positive_int,
        default=None,
        help=f"default {_PAPER.max_epochs} (--quick: {_QUICK.max_epochs})",
    )
    group.add_argument(
        "--selection-epochs",
        type=positive_int,
        default=None,
        help="epochs of each learning-rate candidate (default "
        f"{_PAPER.selection_epochs}; --quick: {_QUICK.selection_epochs})",
    )
    group.add_argument(
        "--lr-candidates",
        type=positive_float,
        nargs="+",
        default=None,
        help="rate grid (default: the named protocol's; paper-sum: 1e-2 1e-3 1e-4 1e-5)",
    )
    group.add_argument(
        "--quick",
        action="store_true",
        help=f"a few-minute protocol: {_QUICK.selection_epochs} selection epochs, "
        f"{_QUICK.min_epochs} to {_QUICK.max_epochs} training epochs "
        "(epoch options given explicitly still apply); results go to a -quick "
        "directory by default",
    )
    data = parser.add_argument_group("data and execution")
    add_data(data)
    add_out(data)
    add_device(data)
    add_threads(data)
    data.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the first run")
    data.add_argument(
        "--constraint",
        default="oblique",
        help="manifold of the filters of the constrained methods (un, un-split): a name of "
        "riemann_dnn.params.MANIFOLD_NAMES other than euclidean (default oblique)",
    )
    data.add_argument(
        "--retraction",
        default=None,
        help="retraction for the constraint (default: the manifold's); append "
        "'+parallel' to carry momentum by parallel transport, e.g. exp+parallel",
    )


def _protocol(args):
    """The named protocol with the options given, checked (one line naming the option
    when wrong)."""
    from dataclasses import replace

    named = PROTOCOLS[getattr(args, "protocol", "paper-sum")]
    epochs = {name: getattr(_QUICK if args.quick else named, name) for name in _EPOCHS}
    for name in epochs:
        if getattr(args, name) is not None:
            epochs[name] = getattr(args, name)
    if epochs["min_epochs"] > epochs["max_epochs"]:
        raise UsageError(
            f"--min-epochs {epochs['min_epochs']} > --max-epochs "
            f"{epochs['max_epochs']}"
            + (" (--quick's)" if args.quick else "")
            + "; give --min-epochs <= --max-epochs"
        )
    if args.lr_candidates is not None:
        check_unique("--lr-candidates", args.lr_candidates)
    return replace(
        named,
        batch_size=args.batch_size,
        loss_reduction=args.loss_reduction or named.loss_reduction,
        lr_candidates=tuple(args.lr_candidates or named.lr_candidates),
        **epochs,
    )


def constraint_names() -> list[str]:
    """The manifolds a constrained method's filters can live on: every name of the manifold
    registry (:data:`riemann_dnn.params.MANIFOLD_NAMES`) but ``euclidean``."""
    from ..params import MANIFOLD_NAMES

    return [name for name in MANIFOLD_NAMES if name != "euclidean"]


def _check_common(args, protocol, batch_sizes: list[int] | None = None) -> None:
    """The checks every protocol command makes before loading or training anything; caps
    ``args.jobs`` at the cores available."""
    check_device(args.device)
    if args.constraint not in constraint_names():
        raise UsageError(
            f"--constraint {args.constraint}: not a manifold for the filters; choose from "
            f"{', '.join(constraint_names())}"
        )
    check_retraction(args.constraint, args.retraction)
    methods = getattr(args, "methods", None) or [getattr(args, "method", "un")]
    check_methods("--methods" if hasattr(args, "methods") else "--method", methods)
    mnist = check_data(args.data_dir, args.source)
    option = "--batch-sizes" if batch_sizes else "--batch-size"
    for batch in batch_sizes or [protocol.batch_size]:
        check_batch(option, batch, protocol, len(mnist.train_labels), mnist.source)
    if hasattr(args, "jobs"):
        args.jobs = check_jobs(args.jobs, args.threads)


def _default_out(base: str, args) -> str:
    return args.out or (f"{base}-quick" if args.quick else base)


def add_parser(subparsers) -> None:
    targets = add_targets(subparsers, "reproduce", "reproduce the paper's results")
    table2 = targets.add_parser(
        "table2",
        help="Table 2: UN vs B-SGD test error of ArchBN on MNIST",
        description="Run the paper's protocol (learning-rate selection, bold-driver training, "
        "test error) for each depth, method and run; writes table2.json, table2.md and "
        "table2.png, and one JSON per run as soon as it ends, named by the hash of everything "
        "that determines its numbers (rerun to resume; another protocol never overwrites "
        "them). Default --out: results/table2, or results/table2-quick with --quick.",
    )
    table2.add_argument(
        "--runs", type=positive_int, default=10, help="runs per depth and method (10)"
    )
    table2.add_argument("--depths", type=positive_int, nargs="+", default=[2, 4])
    table2.add_argument(
        "--methods", nargs="+", default=list(TABLE2_METHODS), choices=_METHOD_NAMES
    )
    add_jobs(
        table2,
        None,
        "worker processes (default: one per CPU core); the results do not depend on it",
    )
    _add_protocol_options(table2)
    set_command(table2, run_table2)

    study = targets.add_parser(
        "sensitivity",
        help="Table 2 protocol over batch sizes x loss reductions",
        description="Run the Table 2 protocol for every batch size and loss reduction (the "
        "paper states neither); writes sensitivity.json, .md and .png and one table2 "
        "directory per combination (rerun to resume). Default --out: results/sensitivity, or "
        "results/sensitivity-quick with --quick.",
    )
    study.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[10, 32, 100])
    study.add_argument("--reductions", nargs="+", choices=["mean", "sum"], default=["mean", "sum"])
    study.add_argument("--runs", type=positive_int, default=3)
    study.add_argument("--depths", type=positive_int, nargs="+", default=[4])
    study.add_argument(
        "--methods", nargs="+", default=["un", "bsgd"], choices=list(TABLE2_METHODS)
    )
    add_jobs(study, None, "worker processes (default: one per CPU core)")
    _add_protocol_options(study)
    set_command(study, run_sensitivity)

    from . import study as study_command

    study_command.add_parser(targets)

    models = add_targets(subparsers, "train", "train one model", dest="model")
    archbn = models.add_parser(
        "archbn",
        help="one run of the Table 2 protocol",
        description="One run of the paper's protocol for ArchBN; writes run.json, run.md, "
        "run.png (default --out: results/archbn-depthD-METHOD, with -quick for --quick).",
    )
    archbn.add_argument("--depth", type=positive_int, default=2)
    archbn.add_argument("--method", choices=_METHOD_NAMES, default="un")
    _add_protocol_options(archbn)
    add_amp(archbn)
    set_command(archbn, run_train)


def run_table2(args: argparse.Namespace) -> int:
    """The table; under ``torchrun`` its (cell, seed) ensembles are sharded across the ranks
    and rank 0 writes the table (:func:`~riemann_dnn.experiments.table2.reproduce_table2`)."""
    from ..experiments import distributed
    from ..experiments.table2 import TableMismatchError, reproduce_table2

    depths = check_unique("--depths", args.depths)
    methods = check_unique("--methods", args.methods)
    protocol = _protocol(args)
    check_launch()
    _check_common(args, protocol)
    out = prepare_out(_default_out("results/table2", args))
    distributed.launch_from_env(args.device)
    try:
        return _table2(args, out, depths, methods, protocol, reproduce_table2, TableMismatchError)
    finally:
        distributed.shutdown()


def _sweep_options(args) -> dict:
    """What the protocol sweeps (table2, sensitivity) take from their shared options."""
    return dict(
        seed=args.seed,
        **run_options(args),
        constraint=args.constraint,
        retraction=args.retraction,
    )


def _table2(args, out, depths, methods, protocol, reproduce_table2, TableMismatchError) -> int:
    options = dict(depths=depths, methods=methods, runs=args.runs, protocol=protocol)
    try:
        summary = reproduce_table2(out, **options, **_sweep_options(args))
    except TableMismatchError as err:
        raise UsageError(f"--out {out}: {err}") from None
    if summary is None:  # a rank other than 0 of a sharded sweep: rank 0 reports
        return 0
    report_written(
        result_files(out, "table2"),
        f" and {len(summary['rows'])} cells of run records in {out / 'runs'}",
    )
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    from ..experiments.sensitivity import batch_reduction_study
    from ..experiments.table2 import TableMismatchError

    protocol = _protocol(args)
    options = dict(
        batch_sizes=check_unique("--batch-sizes", args.batch_sizes),
        reductions=check_unique("--reductions", args.reductions),
        depths=check_unique("--depths", args.depths),
        methods=check_unique("--methods", args.methods),
        runs=args.runs,
        protocol=protocol,
    )
    if check_launch() > 1:
        raise UsageError(
            "reproduce sensitivity is not sharded across torchrun processes "
            "yet; run it without torchrun, or shard its batch sizes by hand "
            "with reproduce table2 --batch-size under torchrun"
        )
    _check_common(args, protocol, options["batch_sizes"])
    out = prepare_out(_default_out("results/sensitivity", args))
    try:
        batch_reduction_study(out, **options, **_sweep_options(args))
    except TableMismatchError as err:
        raise UsageError(f"--out {out}: {err}") from None
    report_written(result_files(out, "sensitivity"))
    return 0


def run_train(args: argparse.Namespace) -> int:
    """One run of the protocol through :func:`~riemann_dnn.experiments.protocol.train_runs`:
    in this process, or under ``torchrun`` one model data-parallel over the launch (every
    rank trains, rank 0 writes); with ``--amp bf16`` under autocast either way."""
    import torch

    from ..experiments import distributed
    from ..experiments.methods import METHODS
    from ..experiments.progress import progress_bar, settle
    from ..experiments.protocol import progress_total, train_runs
    from ..experiments.records import write_json
    from ..experiments.runs import MNISTTensors, load_finished, run_configs
    from ..experiments.table2 import TableMismatchError, check_table
    from ..experiments.table2_report import protocol_words, summarize, write_report

    protocol = _protocol(args)
    world = check_launch(protocol.batch_size)
    _check_common(args, protocol)
    out = prepare_out(_default_out(f"results/archbn-depth{args.depth}-{args.method}", args))
    launch = distributed.launch_from_env(args.device)
    try:
        torch.set_num_threads(args.threads)
        data = MNISTTensors.load(args.data_dir, source=args.source, device=launch.device)
        (config,) = run_configs(
            data,
            depths=[args.depth],
            methods=[args.method],
            runs=1,
            seed=args.seed,
            protocol=protocol,
            constraint=args.constraint,
            retraction=args.retraction,
            device=args.device,
            threads=args.threads,
            amp=args.amp,
            world_size=world,
            rank=launch.rank,
        )
        identity = {k: v for k, v in config.to_json().items() if k != "rank"}
        try:
            check_table(out / "run.json", identity, what="run")
        except TableMismatchError as err:
            raise UsageError(f"--out {out}: {err}") from None
        record = distributed.broadcast_object(load_finished(out, config))
        if record is None:
            planned = progress_total([config])
            with progress_bar(
                total=planned, desc=config.name, unit="epoch", enabled=launch.is_main
            ) as bar:
                (record,) = train_runs(
                    [config], data, out, device=launch.device, progress=bar.update
                )
                settle(bar, planned, protocol.selection_epochs + record["epochs"])
        elif launch.is_main:
            print(f"{config.name}: finished run found in {out / 'runs'}, not retrained")
        if not launch.is_main:
            return 0
        summary = summarize([record])
        summary.update(
            protocol=asdict(protocol),
            data=data.source,
            identity=identity,
            world_size=config.world_size,
            title=f"ArchBN depth {args.depth}, {METHODS[args.method].label}: one "
            f"run (seed {args.seed}) of the "
            f"{protocol_words(asdict(protocol)).split(':')[0]}",
        )
        write_report(summary, [record], out, stem="run")
        write_json(out / "run.json", {**record, "summary": summary, "identity": identity})
        print(
            f"{config.name}: lr {record['chosen_lr']:.0e}, {record['epochs']} epochs "
            f"({record['stop_reason']}), test error {record['test_error']:.4f}"
        )
        report_written(result_files(out, "run"), show=False)
        return 0
    finally:
        distributed.shutdown()
