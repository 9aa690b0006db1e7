"""``riemann-dnn reproduce table2``/``sensitivity``/``study`` and ``riemann-dnn train archbn``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# the methods of the protocol's registry (riemann_dnn.experiments.protocol.METHODS)
_METHOD_NAMES = ["un", "bsgd", "sgd", "bsgd-elr", "bsgd-wd", "un-split"]


def _add_protocol_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("protocol (defaults: the paper's)")
    group.add_argument("--protocol", choices=["paper-sum", "study"], default="paper-sum",
                       help="named protocol: paper-sum (default; the paper's rate grid with "
                       "the summed loss, which reproduces its Table 2) or study (mean loss, "
                       "half-decade grid extended until the chosen rate is interior, stopping "
                       "rules on accepted epochs only; docs/study.md); the options below "
                       "override it")
    group.add_argument("--batch-size", type=int, default=100,
                       help="minibatch size (the paper gives none; default 100)")
    group.add_argument("--loss-reduction", choices=["mean", "sum"], default=None,
                       help="minibatch loss: sum (paper-sum) or mean of per-image losses; the "
                       "paper does not say, and it sets what its learning-rate grid means "
                       "(see docs/table2.md)")
    group.add_argument("--min-epochs", type=int, default=25)
    group.add_argument("--max-epochs", type=int, default=60)
    group.add_argument("--selection-epochs", type=int, default=50,
                       help="epochs of each learning-rate candidate (default 50)")
    group.add_argument("--lr-candidates", type=float, nargs="+", default=None,
                       help="rate grid (default: the named protocol's; paper-sum: 1e-2 1e-3 "
                       "1e-4 1e-5)")
    group.add_argument("--quick", action="store_true",
                       help="a few-minute protocol: 10 selection epochs, 10 to 15 training epochs "
                       "(overrides the epoch options)")
    data = parser.add_argument_group("data and execution")
    data.add_argument("--data-dir", default=None,
                      help="directory with the four MNIST IDX files (else $RIEMANN_DNN_DATA, "
                      "the cache, or the embedded 5k/1k subset)")
    data.add_argument("--source", choices=["auto", "full", "embedded"], default="auto",
                      help="'full' requires the IDX files, 'embedded' uses the packaged subset")
    data.add_argument("--out", default=None, help="output directory")
    data.add_argument("--device", default="cpu", help="cpu or cuda")
    data.add_argument("--seed", type=int, default=0, help="seed of the first run")
    data.add_argument("--constraint", choices=["oblique", "stiefel", "grassmann"],
                      default="oblique", help="manifold of the filters for method 'un'")
    data.add_argument("--retraction", default=None,
                      help="retraction for the constraint (default: the manifold's); append "
                      "'+parallel' to carry momentum by parallel transport, e.g. exp+parallel")


def _protocol(args):
    from dataclasses import replace

    from ..experiments.protocol import PROTOCOLS, quick_protocol

    named = PROTOCOLS[getattr(args, "protocol", "paper-sum")]
    chosen = {"lr_candidates": tuple(args.lr_candidates or named.lr_candidates),
              "loss_reduction": args.loss_reduction or named.loss_reduction,
              "lr_extend": named.lr_extend, "stop_on_accepted": named.stop_on_accepted}
    if args.quick:
        return quick_protocol(batch_size=args.batch_size, **chosen)
    return replace(named, batch_size=args.batch_size, min_epochs=args.min_epochs,
                   max_epochs=args.max_epochs, selection_epochs=args.selection_epochs, **chosen)


def add_parser(subparsers) -> None:
    reproduce = subparsers.add_parser("reproduce", help="reproduce the paper's results")
    targets = reproduce.add_subparsers(dest="target", metavar="TARGET", required=True)
    table2 = targets.add_parser(
        "table2", help="Table 2: UN vs B-SGD test error of ArchBN on MNIST",
        description="Run the paper's protocol (learning-rate selection, bold-driver training, "
        "test error) for each depth, method and run; writes table2.json, table2.md and "
        "table2.png, and one JSON per run as soon as it ends (rerun to resume).",
    )
    table2.add_argument("--runs", type=int, default=10, help="runs per depth and method (10)")
    table2.add_argument("--depths", type=int, nargs="+", default=[2, 4])
    table2.add_argument("--methods", nargs="+", default=["un", "bsgd", "sgd"],
                        choices=_METHOD_NAMES)
    table2.add_argument("--jobs", type=int, default=None,
                        help="worker processes (default: one per CPU core)")
    _add_protocol_options(table2)
    table2.set_defaults(handler=run_table2)

    study = targets.add_parser(
        "sensitivity", help="Table 2 protocol over batch sizes x loss reductions",
        description="Run the Table 2 protocol for every batch size and loss reduction (the "
        "paper states neither); writes sensitivity.json, .md and .png and one table2 "
        "directory per combination (rerun to resume).",
    )
    study.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 32, 100])
    study.add_argument("--reductions", nargs="+", choices=["mean", "sum"],
                       default=["mean", "sum"])
    study.add_argument("--runs", type=int, default=3)
    study.add_argument("--depths", type=int, nargs="+", default=[4])
    study.add_argument("--methods", nargs="+", default=["un", "bsgd"],
                       choices=["un", "bsgd", "sgd"])
    study.add_argument("--jobs", type=int, default=None)
    _add_protocol_options(study)
    study.set_defaults(handler=run_sensitivity)

    from . import study as study_command

    study_command.add_parser(targets)

    train = subparsers.add_parser("train", help="train one model")
    models = train.add_subparsers(dest="model", metavar="MODEL", required=True)
    archbn = models.add_parser(
        "archbn", help="one run of the Table 2 protocol",
        description="One run of the paper's protocol for ArchBN; writes run.json, run.md, run.png.",
    )
    archbn.add_argument("--depth", type=int, default=2)
    archbn.add_argument("--method", choices=_METHOD_NAMES, default="un")
    _add_protocol_options(archbn)
    archbn.set_defaults(handler=run_train)


def run_table2(args: argparse.Namespace) -> int:
    from ..experiments.table2 import reproduce_table2

    out = Path(args.out or "results/table2")
    summary = reproduce_table2(
        out, depths=args.depths, methods=args.methods, runs=args.runs, seed=args.seed,
        protocol=_protocol(args), data_dir=args.data_dir, source=args.source,
        device=args.device, jobs=args.jobs, constraint=args.constraint,
        retraction=args.retraction,
    )
    print((out / "table2.md").read_text())
    print(f"wrote {out / 'table2.json'}, {out / 'table2.md'}, {out / 'table2.png'} "
          f"and {len(summary['rows'])} cells of run records in {out / 'runs'}")
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    from ..experiments.sensitivity import batch_reduction_study

    out = Path(args.out or "results/sensitivity")
    batch_reduction_study(
        out, batch_sizes=args.batch_sizes, reductions=args.reductions, depths=args.depths,
        methods=args.methods, runs=args.runs, protocol=_protocol(args), seed=args.seed,
        data_dir=args.data_dir, source=args.source, device=args.device, jobs=args.jobs,
        constraint=args.constraint, retraction=args.retraction,
    )
    print((out / "sensitivity.md").read_text())
    print(f"wrote {out / 'sensitivity.json'}, {out / 'sensitivity.md'}, "
          f"{out / 'sensitivity.png'}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from ..experiments.protocol import MNISTTensors, RunConfig, train_runs
    from ..experiments.table2 import summarize, write_report

    out = Path(args.out or f"results/archbn-depth{args.depth}-{args.method}")
    data = MNISTTensors.load(args.data_dir, source=args.source, device=args.device)
    config = RunConfig(depth=args.depth, method=args.method, seed=args.seed,
                       protocol=_protocol(args), constraint=args.constraint,
                       retraction=args.retraction, data=data.source)
    from tqdm import tqdm

    protocol = config.protocol
    with tqdm(total=protocol.selection_epochs + protocol.max_epochs, unit="epoch") as bar:
        (record,) = train_runs([config], data, out, device=args.device, progress=bar.update)
    summary = summarize([record])
    write_report(summary, [record], out, stem="run")
    (out / "run.json").write_text(json.dumps({**record, "summary": summary}, indent=1))
    print(f"{config.name}: lr {record['chosen_lr']:.0e}, {record['epochs']} epochs "
          f"({record['stop_reason']}), test error {record['test_error']:.4f}")
    print(f"wrote {out / 'run.json'}, {out / 'run.md'}, {out / 'run.png'}")
    return 0
