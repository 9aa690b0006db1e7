"""Does the symmetry-invariant update help? The controlled study behind ``reproduce study``.

For each architecture (the paper's MLP ArchBN, a convolutional ArchBN, SegNet-Basic on digit
scenes), depth and method, the same seeds are run with the study's protocol
(:data:`~.protocol.PROTOCOLS` ``"study"``: the mean minibatch loss, a half-decade rate grid
extended until each run's chosen rate is interior, selection on validation error only,
stopping rules on accepted epochs only), and every method is compared with UN on the paired
seeds (:mod:`.stats`: mean difference with a bootstrap CI, paired t and Wilcoxon tests, Holm
over all comparisons of the study).

The MNIST cells run through :func:`~.table2.reproduce_table2` (its records, resume and worker
pool; one directory per architecture), SegNet through
:func:`~.segmentation.compare_methods`. :func:`reproduce_study` writes ``study.json``,
``study.md`` and ``study.png`` (:mod:`.study_report`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import PROTOCOLS, STUDY_ARCHS, Protocol
from .ensemble import missing_optimizers
from .methods import ARMS, METHODS, SEGMENTATION_METHOD_NAMES
from .runs import MNISTTensors, load_finished, run_configs
from .stats import holm, paired_comparison

__all__ = [
    "StudyPlan",
    "SegNetPlan",
    "study_plan",
    "reproduce_study",
    "collect_study",
    "COMPARISONS",
    "STUDY_METHODS",
    "STUDY_OPTIMIZERS",
    "study_methods",
]

#: The methods of the default study (the ``sgd`` arm).
STUDY_METHODS = ARMS["sgd"]

#: ``--optimizers``: the study's arms (:data:`~.methods.ARMS`).
STUDY_OPTIMIZERS = tuple(ARMS)

#: The pairs compared at every (arch, depth) where both were run: ``(a, b)``, the difference
#: being a - b. Plain SGD's arm, then momentum 0.9's (UN against B-SGD and SGDP), then the
#: adaptive arm's (Riemannian Adam against Adam, AdamW and AdamP).
COMPARISONS = (
    ("un", "bsgd"),
    ("un", "bsgd-elr"),
    ("un", "bsgd-wd"),
    ("un-split", "un"),
    ("un", "sgd"),
    ("un-mom", "bsgd-mom"),
    ("un-mom", "sgdp"),
    ("radam", "adam"),
    ("radam", "adamw"),
    ("radam", "adamp"),
)


def study_methods(optimizers: tuple[str, ...]) -> tuple[str, ...]:
    """The methods of the arms ``optimizers`` (names of :data:`STUDY_OPTIMIZERS`), refusing
    an unknown arm, or one whose baselines need the ``adamp`` package when it is missing."""
    unknown = [o for o in optimizers if o not in ARMS]
    if unknown or not optimizers:
        raise ValueError(
            f"optimizers must be some of {STUDY_OPTIMIZERS}, got {list(optimizers)!r}"
        )
    methods = tuple(m for o in dict.fromkeys(optimizers) for m in ARMS[o])
    missing = missing_optimizers(METHODS[m].optimizer for m in methods)
    if missing:
        arms = sorted({METHODS[m].arm for m in methods if METHODS[m].optimizer in missing})
        raise ValueError(
            f"--optimizers {' '.join(arms)}: the {'/'.join(sorted(set(missing)))} baselines "
            'need the adamp package; install the study extra: pip install "riemann-dnn[study]"'
        )
    return methods


@dataclass(frozen=True)
class SegNetPlan:
    """The SegNet-Basic cell: :class:`~.segmentation.SegmentationConfig` options, the rate
    grid (selected on held-out training scenes with the first seed, as
    :func:`~.segmentation.compare_methods` does) and the seeds."""

    seeds: int = 8
    lr_grid: tuple[float, ...] = (0.3, 0.1, 0.03)
    selection_epochs: int | None = 4
    config: dict[str, Any] = field(
        default_factory=lambda: {
            "model": "segnet-basic",
            "width": 16,
            "depth": 3,
            "kernel": 3,
            "epochs": 12,
            "batch_size": 16,
            "momentum": 0.9,
            "class_weights": "median",
            "train_scenes": 2000,
            "test_scenes": 500,
            "canvas": 32,
        }
    )


@dataclass(frozen=True)
class StudyPlan:
    """What the study runs: per architecture the depths, seeds, width and protocol."""

    methods: tuple[str, ...] = STUDY_METHODS
    mlp_depths: tuple[int, ...] = (2, 4)
    mlp_seeds: int = 10
    mlp_width: int = 64
    mlp_protocol: Protocol = field(
        default_factory=lambda: replace(
            PROTOCOLS["study"],
            train_images=10_000,
            validation=5_000,
            selection_epochs=15,
            min_epochs=15,
            max_epochs=30,
        )
    )
    conv_depths: tuple[int, ...] = (2, 4)
    conv_seeds: int = 5
    conv_width: int = 8
    conv_protocol: Protocol = field(
        default_factory=lambda: replace(
            PROTOCOLS["study"],
            train_images=2_000,
            validation=2_000,
            selection_train=500,
            selection_epochs=8,
            min_epochs=8,
            max_epochs=15,
        )
    )
    segnet: SegNetPlan | None = field(default_factory=SegNetPlan)
    seed: int = 0

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
        for method in self.methods:
            reference = ARMS[METHODS[method].arm][0]
            if reference not in self.methods:
                raise ValueError(f"the study compares {method!r} with {reference!r}: include it")

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def study_plan(
    quick: bool = False,
    protocol: str = "study",
    *,
    archs: tuple[str, ...] = STUDY_ARCHS,
    mlp_scale: str = "study",
    optimizers: tuple[str, ...] = ("sgd",),
    segnet_seeds: int | None = None,
) -> StudyPlan:
    """The full study, or (``quick``) the same study at a scale of a few minutes: 3 seeds,
    1,000 training images, a few epochs, a tiny conv net and SegNet. ``protocol="paper-sum"``
    keeps the scale but takes the paper's rate grid, summed loss, fixed grid and stopping
    rule (:data:`~.protocol.PROTOCOLS`). ``archs`` keeps some architectures only;
    ``mlp_scale="paper"`` runs the MLP at the paper's scale (50,000 training and 10,000
    validation images, 50 selection epochs, 25 to 60 epochs) instead of the study's.
    ``optimizers`` names the arms (:func:`study_methods`): ``"sgd"`` (the default study),
    ``"momentum"``, ``"adam"``. ``segnet_seeds`` replaces the SegNet cell's number of seeds
    (8; quick 2): seeds ``0 .. segnet_seeds - 1``, a prefix of the default ones."""
    unknown = set(archs) - set(STUDY_ARCHS)
    if unknown or not archs:
        raise ValueError(f"archs must be some of {STUDY_ARCHS}, got {archs!r}")
    if segnet_seeds is not None and segnet_seeds < 2:
        raise ValueError(f"segnet_seeds must be >= 2 (paired statistics), got {segnet_seeds}")
    if mlp_scale not in ("study", "paper"):
        raise ValueError(f"mlp_scale must be 'study' or 'paper', got {mlp_scale!r}")
    plan = _plan(quick)
    if mlp_scale == "paper":
        plan = replace(plan, mlp_protocol=PROTOCOLS["study"])
    plan = replace(
        plan,
        methods=study_methods(tuple(optimizers)),
        mlp_depths=plan.mlp_depths if "mlp" in archs else (),
        conv_depths=plan.conv_depths if "conv" in archs else (),
        segnet=plan.segnet if "segnet" in archs else None,
    )
    if segnet_seeds is not None and plan.segnet is not None:
        plan = replace(plan, segnet=replace(plan.segnet, seeds=segnet_seeds))
    if protocol == "study":
        return plan
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is unknown; choose from {sorted(PROTOCOLS)}")
    named = PROTOCOLS[protocol]
    keys = ("lr_candidates", "loss_reduction", "lr_extend", "stop_on_accepted", "bn_estimate")
    swap = {k: getattr(named, k) for k in keys}
    return replace(
        plan,
        mlp_protocol=replace(plan.mlp_protocol, **swap),
        conv_protocol=replace(plan.conv_protocol, **swap),
    )


def _plan(quick: bool) -> StudyPlan:
    if not quick:
        return StudyPlan()
    tiny = replace(
        PROTOCOLS["study"],
        selection_train=300,
        selection_val=200,
        selection_epochs=4,
        validation=500,
        train_images=1_000,
        min_epochs=3,
        max_epochs=6,
        lr_extend=1,
        bn_estimate=300,
    )
    return StudyPlan(
        mlp_seeds=3,
        mlp_protocol=tiny,
        conv_seeds=2,
        conv_width=4,
        conv_depths=(2,),
        conv_protocol=replace(
            tiny,
            selection_train=200,
            selection_epochs=2,
            train_images=400,
            min_epochs=2,
            max_epochs=3,
            lr_extend=0,
        ),
        segnet=SegNetPlan(
            seeds=2,
            lr_grid=(0.1,),
            config={
                "model": "segnet-basic",
                "width": 4,
                "depth": 2,
                "kernel": 3,
                "epochs": 1,
                "batch_size": 16,
                "train_scenes": 64,
                "test_scenes": 32,
                "canvas": 32,
            },
        ),
    )


def _arms(plan: StudyPlan) -> list[tuple[str, tuple[int, ...], int, int, Protocol]]:
    return [
        (arch, depths, seeds, width, protocol)
        for arch, depths, seeds, width, protocol in (
            ("mlp", plan.mlp_depths, plan.mlp_seeds, plan.mlp_width, plan.mlp_protocol),
            ("conv", plan.conv_depths, plan.conv_seeds, plan.conv_width, plan.conv_protocol),
        )
        if depths and seeds
    ]


def reproduce_study(
    out_dir: str | Path,
    *,
    plan: StudyPlan | None = None,
    quick: bool = False,
    protocol: str = "study",
    archs: tuple[str, ...] = STUDY_ARCHS,
    mlp_scale: str = "study",
    optimizers: tuple[str, ...] = ("sgd",),
    data_dir: str | None = None,
    source: str = "auto",
    device: str = "cpu",
    jobs: int | None = None,
    threads: int = 1,
    train: bool = True,
    progress: bool = True,
) -> dict:
    """Run (or resume) the study and write ``study.json``, ``study.md``, ``study.png``.

    Every training process uses ``threads`` torch threads (recorded in each run), so a run's
    numbers do not depend on ``jobs``. With ``train=False`` nothing is trained: the report
    covers the runs already finished in ``out_dir`` (cells without runs are left out).
    """
    from .study_report import write_study

    plan = plan or study_plan(
        quick, protocol, archs=tuple(archs), mlp_scale=mlp_scale, optimizers=tuple(optimizers)
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    if train:
        from .table2 import reproduce_table2

        for arch, depths, seeds, width, protocol in _arms(plan):
            tick = time.perf_counter()
            # at most one worker per cell, so that every cell is one ensemble whatever
            # --jobs is (conv numbers depend on the ensemble's size; the MLP's do not)
            cells = len(depths) * len(plan.methods)
            reproduce_table2(
                out / arch,
                depths=depths,
                methods=plan.methods,
                runs=seeds,
                seed=plan.seed,
                protocol=protocol,
                data_dir=data_dir,
                source=source,
                device=device,
                arch=arch,
                jobs=min(jobs or os.cpu_count() or 1, cells),
                width=width,
                threads=threads,
                progress=f"study {arch}" if progress else False,
            )
            seconds[arch] = time.perf_counter() - tick
        if plan.segnet is not None:
            tick = time.perf_counter()
            for part in _segnet_parts(plan):
                _run_segnet(plan, part, out, data_dir, source, device, jobs, threads)
            seconds["segnet"] = time.perf_counter() - tick
    result = collect_study(
        out, plan, data_dir=data_dir, source=source, device=device, threads=threads
    )
    result["seconds"] = seconds
    result["threads"] = threads
    result["jobs"] = jobs
    write_study(result, out)
    return result


def _segnet_base(plan: StudyPlan):
    from .segmentation import SegmentationConfig

    return SegmentationConfig(**plan.segnet.config)


#: The decoupled weight decay of AdamW and AdamP on SegNet, fixed (SegNet selects rates
#: only); the middle of the MNIST cells' grid (:data:`~.methods.ADAPTIVE_WEIGHT_DECAYS`).
SEGNET_DECOUPLED_WEIGHT_DECAY = 0.1


@dataclass(frozen=True)
class _SegNetPart:
    """One :func:`~.segmentation.compare_methods` call of the SegNet cell: its directory,
    methods, rate scale and weight decay."""

    folder: str
    methods: tuple[str, ...]
    lr_scale: float = 1.0
    weight_decay: float = 0.0


def _segnet_parts(plan: StudyPlan) -> list[_SegNetPart]:
    """The SegNet cell's parts: per arm its methods that segmentation trains (the plain arm
    UN and B-SGD, in ``segnet/``, as the study always did; SegNet always has momentum 0.9),
    grouped by their rate scale (each method's fixed grid is the plan's times its
    ``lr_scale``) and by decoupled weight decay (``segnet-<arm>-wd``); a scale other than the
    arm's smallest names its part's folder (``segnet-adam-lr0.1``)."""
    if plan.segnet is None:
        return []
    parts = []
    for arm, names in ARMS.items():
        chosen = [m for m in names if m in plan.methods and m in SEGMENTATION_METHOD_NAMES]
        if not chosen:
            continue
        smallest = min(METHODS[m].lr_scale for m in chosen)
        for decayed in (False, True):
            group = [m for m in chosen if METHODS[m].weight_decay == decayed]
            for scale in sorted({METHODS[m].lr_scale for m in group}):
                folder = ("segnet" if arm == "sgd" else f"segnet-{arm}") + ("-wd" * decayed)
                if scale != smallest:
                    folder += f"-lr{scale:g}"
                parts.append(
                    _SegNetPart(
                        folder,
                        tuple(m for m in group if METHODS[m].lr_scale == scale),
                        scale,
                        SEGNET_DECOUPLED_WEIGHT_DECAY if decayed else 0.0,
                    )
                )
    return parts


def _run_segnet(plan, part: _SegNetPart, out, data_dir, source, device, jobs, threads) -> dict:
    from .segmentation import compare_methods, load_segmentation_data

    base = replace(_segnet_base(plan), weight_decay=part.weight_decay)
    data = load_segmentation_data(base, data_dir=data_dir, source=source)
    return compare_methods(
        base,
        out / part.folder,
        methods=part.methods,
        seeds=tuple(plan.seed + s for s in range(plan.segnet.seeds)),
        lr_grid=tuple(r * part.lr_scale for r in plan.segnet.lr_grid),
        selection_epochs=plan.segnet.selection_epochs,
        data=data,
        device=device,
        resume=True,
        progress=False,
        jobs=max(1, jobs or 1),
        threads=threads,
        log=None,
    )


def _mnist_cells(
    out: Path, plan: StudyPlan, data: MNISTTensors, device: str, threads: int
) -> list[dict]:

    cells = []
    for arch, depths, seeds, width, protocol in _arms(plan):
        for depth in depths:
            for method in plan.methods:
                runs = []
                for config in run_configs(
                    data,
                    depths=[depth],
                    methods=[method],
                    runs=seeds,
                    seed=plan.seed,
                    protocol=protocol,
                    device=device,
                    threads=threads,
                    arch=arch,
                    width=width,
                ):
                    record = load_finished(out / arch, config)
                    if record is not None:
                        runs.append(record)
                if not runs:
                    continue
                cells.append(
                    {
                        "arch": arch,
                        "depth": depth,
                        "method": method,
                        "label": METHODS[method].label,
                        "width": width,
                        "seeds": [r["config"]["seed"] for r in runs],
                        "test_errors": [r["test_error"] for r in runs],
                        "chosen": [r.get("chosen", {"lr": r["chosen_lr"]}) for r in runs],
                        "interior": [r["selection"].get("interior") for r in runs],
                        "epochs": [r["epochs"] for r in runs],
                        "stop_reasons": [r["stop_reason"] for r in runs],
                        "undone_epochs": [r["curves"]["accepted"].count(False) for r in runs],
                        "filter_norms": [r.get("filter_norms") for r in runs],
                        "seconds": max(r["seconds"] for r in runs),
                        "torch_threads": sorted({r["torch_threads"] for r in runs}),
                        "test_size": None,
                    }
                )
    return cells


def _segnet_cells(out: Path, plan: StudyPlan) -> list[dict]:
    cells = []
    for part in _segnet_parts(plan):
        path = out / part.folder / "comparison.json"
        if path.exists():
            cells += _segnet_part_cells(json.loads(path.read_text()), plan)
    return cells


def _segnet_part_cells(summary: dict, plan: StudyPlan) -> list[dict]:
    cells = []
    decay = summary["config"].get("weight_decay") or 0.0
    for row in summary["rows"]:
        acc = row["global_accuracy"]["values"]
        chosen = {"lr": row["lr"], **({"weight_decay": decay} if decay else {})}
        cells.append(
            {
                "arch": "segnet",
                "depth": plan.segnet.config.get("depth") or 4,
                "method": row["method"],
                "label": row["label"],
                "width": summary["config"]["width"],
                "seeds": summary["seeds"],
                "test_errors": [1 - a for a in acc],
                "mean_iou": row["mean_iou"]["values"],
                "chosen": [chosen] * len(acc),
                "interior": None,
                "epochs": [summary["config"]["epochs"]] * len(acc),
                "stop_reasons": ["fixed_epochs"] * len(acc),
                "undone_epochs": None,
                "filter_norms": None,
                "seconds": row["epoch_seconds"] * summary["config"]["epochs"] * len(acc),
                "torch_threads": None,
                "test_size": None,
            }
        )
    return cells


def collect_study(
    out_dir: str | Path,
    plan: StudyPlan,
    *,
    data_dir: str | None = None,
    source: str = "auto",
    device: str = "cpu",
    threads: int = 1,
) -> dict:
    """The study's result from the finished records in ``out_dir``: ``cells`` (per-run test
    errors, chosen rates, epochs, stop reasons), ``comparisons`` (paired statistics with
    Holm's correction over all of them) and the exact ``plan`` (protocols included)."""
    import warnings

    out = Path(out_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = MNISTTensors.load(data_dir, source=source, device="cpu")
    test_size = int(data.test_y.shape[0])
    cells = _mnist_cells(out, plan, data, device, threads) + _segnet_cells(out, plan)
    for cell in cells:
        if cell["arch"] != "segnet":
            cell["test_size"] = test_size
    comparisons = []
    by_key = {(c["arch"], c["depth"], c["method"]): c for c in cells}
    for arch, depth in sorted({(c["arch"], c["depth"]) for c in cells}):
        for a, b in COMPARISONS:
            ca, cb = by_key.get((arch, depth, a)), by_key.get((arch, depth, b))
            if ca is None or cb is None:
                continue
            seeds = sorted(set(ca["seeds"]) & set(cb["seeds"]))
            if not seeds:
                continue
            xa = [ca["test_errors"][ca["seeds"].index(s)] for s in seeds]
            xb = [cb["test_errors"][cb["seeds"].index(s)] for s in seeds]
            stats = paired_comparison(xa, xb, test_size=ca["test_size"])
            comparisons.append(
                {
                    "arch": arch,
                    "depth": depth,
                    "a": a,
                    "b": b,
                    **stats,
                    "seeds": seeds,
                    "metric": "test error"
                    if arch != "segnet"
                    else "pixel error (1 - global accuracy)",
                }
            )
    for comparison, adjusted in zip(comparisons, holm([c["p_paired"] for c in comparisons])):
        comparison["p_holm"] = adjusted
    for comparison, adjusted in zip(comparisons, holm([c["p_wilcoxon"] for c in comparisons])):
        comparison["p_wilcoxon_holm"] = adjusted
    return {
        "data": data.source,
        "test_images": test_size,
        "plan": plan.to_json(),
        "protocol": {
            "mlp": asdict(plan.mlp_protocol),
            "conv": asdict(plan.conv_protocol),
            "segnet": None if plan.segnet is None else asdict(plan.segnet),
        },
        "cells": cells,
        "comparisons": comparisons,
    }
