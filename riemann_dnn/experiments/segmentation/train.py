r"""Train SegNet / SegNet-Basic with UN or B-SGD updates; metrics, checkpoints, reports (§5).

Methods (both use :class:`~riemann_dnn.optim.RiemannianSGD` with the same hyper-parameters and
the same initialisation -- every conv filter a unit-normalised Gaussian):

- ``"un"``: the paper's update; the BN-fed convolutions (found by
  :func:`~riemann_dnn.optim.param_groups`) on the oblique manifold, one unit-norm row per
  output channel; the classifier and BN's scale and shift Euclidean.
- ``"bsgd"``: balanced SGD; every parameter Euclidean.

Loss: pixel-wise cross-entropy :math:`-\sum_p w_{y_p}\log\operatorname{softmax}(z_p)_{y_p} /
\sum_p w_{y_p}` over the labelled pixels (``ignore_index``, CamVid's void, left out), with class
weights :math:`w` by median-frequency balancing of the training labels (default for CamVid;
optional for digit scenes) or none.

Metrics from the confusion matrix :math:`C` (rows: true class, columns: predicted class,
ignored pixels left out):

.. math::

    \text{global} = \frac{\sum_c C_{cc}}{\sum_{ab} C_{ab}},\quad
    \text{class-avg} = \operatorname{mean}_{c:\,n_c>0}\frac{C_{cc}}{n_c},\quad
    \text{mIoU} = \operatorname{mean}_{c:\,u_c>0}\frac{C_{cc}}{u_c},

with :math:`n_c = \sum_b C_{cb}` and :math:`u_c = n_c + \sum_a C_{ac} - C_{cc}`
(a class neither present nor predicted is left out of the means).

:func:`train_segmentation` writes, into its output directory, ``checkpoint.pt`` after every
epoch (model, optimizer, epoch, metrics history, random-generator states; a ``resume`` continues
exactly where it stopped), ``metrics.json``, ``metrics.md`` and ``predictions.png`` (the paper's
Figure 2: rows of input, ground truth and prediction for a few test images).
:func:`compare_methods` runs UN and B-SGD over several seeds, each with a learning rate chosen on
held-out training scenes, and writes ``comparison.json/.md/.png``.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data import (
    SegmentationSet,
)
from ...optim import NonFiniteGradientError, param_groups
from .. import distributed
from .build import (
    build_model,
    build_optimizer,
    class_weights_for,
    load_segmentation_data,
    split_holdout,
)
from .checkpoint import (
    CHECKPOINT,
    CheckpointMismatchError,
    check_resumable,
    load_checkpoint,
    load_trained_model,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from .config import SEGMENTATION_METHODS, SEGMENTATION_MODELS, SegmentationConfig
from .metrics import (
    confusion_matrix,
    evaluate,
    loss_normaliser,
    majority_baseline,
    predict,
    segmentation_metrics,
)
from .report import palette_for, plot_predictions, write_comparison, write_run_report

__all__ = [
    "SEGMENTATION_METHODS",
    "SEGMENTATION_MODELS",
    "SegmentationConfig",
    "SegmentationResult",
    "load_segmentation_data",
    "build_model",
    "build_optimizer",
    "class_weights_for",
    "confusion_matrix",
    "segmentation_metrics",
    "evaluate",
    "predict",
    "train_segmentation",
    "select_learning_rate",
    "compare_methods",
    "load_trained_model",
    "split_holdout",
    "palette_for",
    "plot_predictions",
    "write_run_report",
    "CheckpointMismatchError",
]


@dataclass
class SegmentationResult:
    """What :func:`train_segmentation` returns: the JSON record and the trained model."""

    record: dict[str, Any]
    model: nn.Module


# -- training ---------------------------------------------------------------------------------


def _shuffle_generator(seed: int) -> torch.Generator:
    """The generator of the training order, independent of the initialisation's stream."""
    (state,) = np.random.SeedSequence([seed, 1]).generate_state(1)
    return torch.Generator().manual_seed(int(state))


def _move(data: SegmentationSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels on ``device`` when they fit comfortably (< 1 GiB), else on the CPU."""
    size = data.images.element_size() * data.images.nelement() + 8 * data.labels.nelement()
    if device.type != "cpu" and size < 2**30:
        return data.images.to(device), data.labels.to(device)
    return data.images, data.labels


def train_segmentation(
    config: SegmentationConfig,
    out_dir: str | Path,
    *,
    data: tuple[SegmentationSet, SegmentationSet] | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    progress: bool = True,
    figure_images: int = 5,
) -> SegmentationResult:
    """Train one model on ``data`` (default: :func:`load_segmentation_data`) and write the
    checkpoint and reports into ``out_dir``.

    A checkpoint is written after every epoch. With ``resume=True`` an existing checkpoint
    (same configuration except ``epochs``) is loaded and training continues from it with the
    same data order, so the result equals an uninterrupted run; with ``resume=False`` an existing
    checkpoint raises :class:`CheckpointMismatchError` rather than being overwritten.

    Under ``torchrun`` (after :func:`~.distributed.launch_from_env`) one model trains on every
    process: each rank takes its slice of every global batch (the batches of one process),
    BN normalises over the global batch, DDP averages the gradients of the loss of the global
    batch, and :class:`~riemann_dnn.optim.RiemannianSGD` steps on every rank alike. Rank 0
    alone evaluates and writes the checkpoint and reports; a resume reads rank 0's checkpoint
    and broadcasts it, so a kill of any rank is resumed by the same command.

    Returns:
        :class:`SegmentationResult` with the record (config, data description, per-epoch
        history, final test metrics, majority-class baseline, file paths) and the model.
    """
    out = Path(out_dir)
    launch = distributed.current_launch()
    parallel = launch.distributed
    if launch.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    device = torch.device(launch.device if parallel else device)
    if distributed.broadcast_object(ckpt_path.exists()) and not resume:
        raise CheckpointMismatchError(
            f"{str(out)!r} already holds a checkpoint ({CHECKPOINT}); pass resume=True "
            "(--resume) to continue it, or choose another output directory"
        )
    train, test = data if data is not None else load_segmentation_data(config, data_dir=data_dir)
    if train.num_classes != test.num_classes or train.in_channels != test.in_channels:
        raise ValueError(
            f"train ({train.num_classes} classes, {train.in_channels} channels) and "
            f"test ({test.num_classes}, {test.in_channels}) sets do not match"
        )

    model = build_model(config, train.in_channels, train.num_classes).to(device)
    optimizer, constrained = build_optimizer(model, config)
    weights = class_weights_for(config, train)
    ignore = -100 if train.ignore_index is None else train.ignore_index
    loss_fn = nn.CrossEntropyLoss(
        weight=None if weights is None else weights.to(device), ignore_index=ignore
    )
    shuffle = _shuffle_generator(config.seed)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and distributed.broadcast_object(ckpt_path.exists()):
        saved = distributed.broadcast_object(
            load_checkpoint(ckpt_path) if launch.is_main else None
        )
        check_resumable(saved["config"], config, ckpt_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        history = list(saved["history"])
        start_epoch = int(saved["epoch"])
        restore_rng_states(saved["rng"], shuffle)

    train_model = model
    if parallel:
        if config.door != "torch":
            raise ValueError("door='pymanopt' does not run under torchrun; use door='torch'")
        train_model = distributed.prepare_ddp_model(model, launch)
    if config.door == "pymanopt":
        if resume:
            raise CheckpointMismatchError(
                "door='pymanopt' runs all epochs in one solver call and cannot resume; rerun "
                "without resume, or use door='torch'"
            )
        history = _train_pymanopt(config, model, loss_fn, train, test, device, progress)
        save_checkpoint(
            ckpt_path,
            config,
            epoch=len(history),
            model=model,
            optimizer={},
            history=history,
            rng={},
        )
        start_epoch = config.epochs  # nothing left for the torch loop

    images, labels = _move(train, device)
    n = len(train)
    batches = math.ceil(n / config.batch_size)
    remaining = max(config.epochs - start_epoch, 0)
    bar = _progress(remaining * batches, f"{config.name}", progress and launch.is_main)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        order = torch.randperm(n, generator=shuffle)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        _synchronize(device)
        started = time.perf_counter()
        for b in range(batches):
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            if parallel:
                index = distributed.batch_share(index, launch.rank, launch.world_size)
            x = images[index.to(images.device)].to(device, non_blocking=True)
            y = labels[index.to(labels.device)].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with distributed.autocast(device, config.amp):
                logits = train_model(x)
            if parallel:
                loss = _global_batch_loss(loss_fn, logits.float(), y)
                (loss * launch.world_size).backward()  # DDP averages over the ranks
            else:
                loss = loss_fn(logits.float(), y)
                loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double()
            if bar is not None:
                bar.update(1)
                if b % 10 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss):.3f}")
        _synchronize(device)
        seconds = time.perf_counter() - started
        distributed.all_reduce_sum(loss_sum)
        if not launch.is_main:  # rank 0 evaluates and writes
            continue
        test_metrics = evaluate(model, test, loss_fn, batch_size=config.batch_size, device=device)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(loss_sum) / batches,
                "test_loss": test_metrics["loss"],
                "global_accuracy": test_metrics["global_accuracy"],
                "class_accuracy": test_metrics["class_accuracy"],
                "mean_iou": test_metrics["mean_iou"],
                "seconds": seconds,
            }
        )
        save_checkpoint(
            ckpt_path,
            config,
            epoch=epoch + 1,
            model=model,
            optimizer=optimizer.state_dict(),
            history=history,
            rng=rng_states(shuffle),
        )
    if bar is not None:
        bar.close()
    if not launch.is_main:
        return SegmentationResult(distributed.broadcast_object(None), model)

    final = evaluate(model, test, loss_fn, batch_size=config.batch_size, device=device)
    record = {
        "config": config.to_json(),
        "door": config.door,
        "device": str(device),
        "world_size": launch.world_size,
        "rank": launch.rank,
        "data": {
            "train": train.name,
            "test": test.name,
            "train_images": len(train),
            "test_images": len(test),
            "image_shape": list(train.images.shape[1:]),
            "num_classes": train.num_classes,
            "class_names": list(train.class_names),
            "ignore_index": train.ignore_index,
            "class_weights": None if weights is None else [float(w) for w in weights],
        },
        "parameters": {
            "oblique": constrained,
            "count": sum(p.numel() for p in model.parameters()),
            "oblique_count": sum(
                p.numel() for n_, p in model.named_parameters() if n_ in set(constrained)
            ),
        },
        "epochs_done": len(history),
        "history": history,
        "final": final,
        "baseline_majority": majority_baseline(train, test),
        "epoch_seconds_mean": (
            statistics.fmean(h["seconds"] for h in history) if history else float("nan")
        ),
        "files": {"checkpoint": str(ckpt_path)},
    }
    write_run_report(record, model, test, out, figure_images=figure_images, device=device)
    return SegmentationResult(distributed.broadcast_object(record), model)


def _global_batch_loss(
    loss_fn: nn.CrossEntropyLoss, logits: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """This rank's share of the global batch's (weighted, mean-reduced) cross-entropy: its
    summed pixel losses over the normaliser of the whole global batch (all-reduced)."""
    total = loss_fn.__class__(
        weight=loss_fn.weight, ignore_index=loss_fn.ignore_index, reduction="sum"
    )(logits, y)
    norm = torch.tensor(loss_normaliser(loss_fn, y), dtype=torch.float64, device=y.device)
    return total / distributed.all_reduce_sum(norm).to(total.dtype)


# -- the pymanopt door --------------------------------------------------------------------------
def _train_pymanopt(config, model, loss_fn, train, test, device, progress) -> list[dict]:
    """Train ``model`` as a finite-sum problem on the product manifold of its parameters with
    pymanopt-side ``StochasticGradient`` (fixed step ``config.lr``, same momentum, batch size,
    epochs and manifolds as the torch door); returns the per-epoch history."""
    from ...problems.module_problem import ModuleProblem
    from ...solvers import StochasticGradient

    if config.method == "un":
        groups = param_groups(model, manifold="oblique", retraction=config.retraction)
    else:
        groups = [{"params": list(model.parameters()), "manifold": "euclidean"}]
    problem = ModuleProblem(
        model,
        loss_fn,
        (train.images.to(device), train.labels.to(device)),
        groups=groups,
        eval_batch_size=config.batch_size,
    )
    history: list[dict] = []
    clock = {"start": time.perf_counter(), "cost": 0.0, "last": 0}

    def callback(iteration: int, point, stats: dict) -> None:
        if iteration == 0:
            return
        _synchronize(device)
        seconds = time.perf_counter() - clock["start"]
        problem.load_point(point)
        metrics = evaluate(model, test, loss_fn, batch_size=config.batch_size, device=device)
        history.append(
            {
                # train_loss: the solver's estimate on its check batch, not the epoch's mean
                "epoch": len(history) + 1,
                "train_loss": float(stats["cost"]),
                "test_loss": metrics["loss"],
                "global_accuracy": metrics["global_accuracy"],
                "class_accuracy": metrics["class_accuracy"],
                "mean_iou": metrics["mean_iou"],
                "seconds": seconds,
            }
        )
        clock["start"] = time.perf_counter()

    batches = math.ceil(len(train) / config.batch_size)
    solver = StochasticGradient(
        batch_size=config.batch_size,
        max_iterations=None,
        max_epochs=config.epochs,
        max_time=None,
        step_size="fixed",
        initial_step_size=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        check_period=batches,
        check_samples=config.batch_size,
        callback=callback,
        seed=config.seed,
        verbosity=1 if progress else 0,
        progress_bar=progress,
    )
    result = solver.run(problem, initial_point=problem.point_from_model())
    problem.load_point(result.point)
    return history


def _progress(total: int, desc: str, enabled: bool):
    if not enabled or total <= 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- learning-rate selection and the UN vs B-SGD comparison -----------------------------------

_WORKER_DATA: dict[str, tuple[SegmentationSet, SegmentationSet]] = {}


def _init_worker(data: dict[str, tuple[SegmentationSet, SegmentationSet]]) -> None:
    _WORKER_DATA.update(data)


def _run_task(task: tuple) -> dict[str, Any]:
    """One training run: ``(config, out_dir, data_key, device, resume, progress)`` -> its record
    (``{"diverged": True, ...}`` when the gradients became non-finite)."""
    config, out_dir, key, device, resume, progress = task
    try:
        result = train_segmentation(
            config,
            out_dir,
            data=_WORKER_DATA[key],
            device=device,
            resume=resume,
            progress=progress,
            figure_images=0 if key == "selection" else 5,
        )
    except NonFiniteGradientError as err:
        return {"config": config.to_json(), "diverged": True, "error": str(err)}
    record = result.record
    record["diverged"] = not all(math.isfinite(h["train_loss"]) for h in record["history"])
    return record


def _run_tasks(
    tasks: list[tuple],
    data: dict,
    pool,
    log: Callable[[str], None] | None,
    describe: Callable[[dict], str],
) -> list[dict[str, Any]]:
    """Run ``tasks`` in order in this process (``pool`` None) or on the worker processes of
    ``pool`` (see :func:`_worker_pool`); results in task order."""
    if pool is None:
        _WORKER_DATA.clear()
        _WORKER_DATA.update(data)
        results = []
        try:
            for task in tasks:
                results.append(_run_task(task))
                if log:
                    log(describe(results[-1]))
        finally:
            _WORKER_DATA.clear()
        return results
    from concurrent.futures import as_completed

    tasks = [(*task[:5], False) for task in tasks]  # no per-run bars from workers
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    futures = {pool.submit(_run_task, task): i for i, task in enumerate(tasks)}
    for future in as_completed(futures):
        results[futures[future]] = future.result()
        if log:
            log(describe(results[futures[future]]))
    return [r for r in results if r is not None]


@contextlib.contextmanager
def _worker_pool(jobs: int, threads: int | None, data: dict):
    """``None`` for ``jobs <= 1``, else the package's worker pool (:func:`.pool.worker_pool`:
    ``jobs`` spawned processes that die with this one) holding ``data`` and using ``threads``
    torch threads each (default 1)."""
    if jobs <= 1:
        yield None
        return
    from ..pool import worker_pool

    with worker_pool(
        jobs, threads=threads or 1, initializer=_init_worker, initargs=(data,)
    ) as pool:
        yield pool


def _describe(record: dict[str, Any]) -> str:
    config = record["config"]
    name = f"{config['method']}-seed{config['seed']} lr {config['lr']:g}"
    if record.get("diverged"):
        return f"{name}: diverged"
    final = record["final"]
    return (
        f"{name}: global {final['global_accuracy']:.4f}, class-avg "
        f"{final['class_accuracy']:.4f}, mIoU {final['mean_iou']:.4f}, "
        f"{record['epoch_seconds_mean']:.1f} s/epoch ({record['data']['test']})"
    )


def _choose(
    method: str,
    grid: Sequence[float],
    records: list[dict[str, Any]],
    fit: int,
    held: int,
    epochs: int,
) -> dict[str, Any]:
    candidates = []
    for lr, record in zip(grid, records):
        entry: dict[str, Any] = {"lr": float(lr), "diverged": bool(record.get("diverged"))}
        final = record.get("final", {})
        for key in ("mean_iou", "global_accuracy", "class_accuracy"):
            entry[key] = final.get(key, float("nan"))
        candidates.append(entry)
    usable = [c for c in candidates if not c["diverged"] and math.isfinite(c["mean_iou"])]
    if not usable:
        raise RuntimeError(
            f"every learning rate of {list(grid)} diverged for method "
            f"{method!r}; try smaller rates"
        )
    best = max(usable, key=lambda c: c["mean_iou"])
    return {
        "chosen_lr": best["lr"],
        "candidates": candidates,
        "holdout_images": held,
        "fit_images": fit,
        "epochs": epochs,
    }


def select_learning_rate(
    config: SegmentationConfig,
    candidates: Sequence[float],
    train: SegmentationSet,
    out_dir: str | Path,
    *,
    holdout: float | int = 0.2,
    epochs: int | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Pick ``config.method``'s learning rate: train with each candidate on the training scenes
    minus a held-out part (``holdout``: fraction or count, drawn with ``config.data_seed``) for
    ``epochs`` (default ``config.epochs``) with seed ``config.seed``, and take the rate of the
    highest held-out mIoU. Diverged candidates (non-finite gradient or loss) are skipped.

    Returns ``{"chosen_lr", "candidates": [{"lr", "mean_iou", "global_accuracy",
    "class_accuracy", "diverged"}, ...], "holdout_images", "fit_images", "epochs"}``.
    """
    if not candidates:
        raise ValueError("candidates must hold at least one learning rate")
    fit, held = split_holdout(train, holdout, seed=config.data_seed)
    epochs = epochs or config.epochs
    tasks = [
        (
            replace(config, lr=float(lr), epochs=epochs),
            Path(out_dir) / f"{config.method}-lr{lr:g}",
            "selection",
            device,
            resume,
            progress,
        )
        for lr in candidates
    ]
    records = _run_tasks(tasks, {"selection": (fit, held)}, None, None, _describe)
    return _choose(config.method, candidates, records, len(fit), len(held), epochs)


def compare_methods(
    base: SegmentationConfig,
    out_dir: str | Path,
    *,
    methods: Sequence[str] = ("un", "bsgd"),
    seeds: Sequence[int] = (0, 1, 2),
    lr_grid: Sequence[float] | None = None,
    holdout: float | int = 0.2,
    selection_epochs: int | None = None,
    data: tuple[SegmentationSet, SegmentationSet] | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    progress: bool = True,
    jobs: int = 1,
    threads: int | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """UN vs B-SGD (or any ``methods``) over ``seeds``.

    1. Learning-rate selection (when ``lr_grid`` holds several rates; default ``[base.lr]``):
       for each method and rate, train with seed ``seeds[0]`` for ``selection_epochs``
       (default ``base.epochs``) on the training scenes minus ``holdout`` of them and score the
       held-out mIoU; each method takes its best rate (see :func:`select_learning_rate`).
    2. For each seed and method (interleaved, so both methods train under the same machine
       load), a full run with the chosen rate, evaluated on the test set.

    ``jobs > 1`` runs the trainings in that many worker processes (``threads`` torch threads
    each; e.g. ``jobs=2, threads=1`` on 2 cores trains UN and B-SGD of one seed side by side).
    Writes ``selection/``, ``runs/<method>-seed<S>/`` and ``comparison.json``,
    ``comparison.md``, ``comparison.png`` (rows: input, ground truth, each method's prediction
    by its ``seeds[0]`` model) into ``out_dir`` and returns the summary.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not seeds or not methods:
        raise ValueError(
            f"need at least one method and one seed; got methods={methods!r}, seeds={seeds!r}"
        )
    train, test = data if data is not None else load_segmentation_data(base, data_dir=data_dir)
    grid = [float(lr) for lr in (lr_grid or [base.lr])]
    data_sets = {"final": (train, test)}
    if len(grid) > 1:
        data_sets["selection"] = split_holdout(train, holdout, seed=base.data_seed)
    with _worker_pool(jobs, threads, data_sets) as pool:
        selections: dict[str, Any] = {}
        if len(grid) > 1:
            fit, held = data_sets["selection"]
            epochs = selection_epochs or base.epochs
            tasks = [
                (
                    replace(base, method=m, seed=seeds[0], lr=lr, epochs=epochs),
                    out / "selection" / f"{m}-lr{lr:g}",
                    "selection",
                    device,
                    resume,
                    progress,
                )
                for m in methods
                for lr in grid
            ]
            records = _run_tasks(tasks, data_sets, pool, log, _describe)
            for i, method in enumerate(methods):
                selections[method] = _choose(
                    method,
                    grid,
                    records[i * len(grid) : (i + 1) * len(grid)],
                    len(fit),
                    len(held),
                    epochs,
                )
                if log:
                    scores = ", ".join(
                        f"{c['lr']:g}: "
                        + ("diverged" if c["diverged"] else f"{c['mean_iou']:.4f}")
                        for c in selections[method]["candidates"]
                    )
                    log(
                        f"{method}: held-out mIoU by lr {{{scores}}} -> lr "
                        f"{selections[method]['chosen_lr']:g}"
                    )
        else:
            selections = {
                m: {"chosen_lr": grid[0], "candidates": [], "epochs": 0} for m in methods
            }
        tasks = []
        for seed in seeds:
            for method in methods:
                config = replace(
                    base, method=method, seed=seed, lr=selections[method]["chosen_lr"]
                )
                tasks.append(
                    (config, out / "runs" / config.name, "final", device, resume, progress)
                )
        results = _run_tasks(tasks, data_sets, pool, log, _describe)
    records: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for record in results:
        if record.get("diverged"):
            raise RuntimeError(f"run {record['config']} diverged at the chosen learning rate")
        records[record["config"]["method"]].append(record)
    models = {
        m: load_trained_model(out / "runs" / f"{m}-seed{seeds[0]}", device=device) for m in methods
    }
    summary = _summarize(base, records, selections, train, test, holdout, jobs)
    write_comparison(summary, models, test, out, device=device)
    return summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _summarize(base, records, selections, train, test, holdout, jobs) -> dict[str, Any]:
    rows = []
    for method, recs in records.items():
        row: dict[str, Any] = {
            "method": method,
            "label": SEGMENTATION_METHODS[method],
            "runs": len(recs),
            "lr": selections[method]["chosen_lr"],
        }
        for key in ("global_accuracy", "class_accuracy", "mean_iou"):
            values = [r["final"][key] for r in recs]
            mean, std = _mean_std(values)
            row[key] = {"values": values, "mean": mean, "std": std}
        row["epoch_seconds"] = statistics.fmean(r["epoch_seconds_mean"] for r in recs)
        rows.append(row)
    by_method = {r["method"]: r for r in rows}
    ratio = None
    if "un" in by_method and "bsgd" in by_method:
        ratio = by_method["un"]["epoch_seconds"] / by_method["bsgd"]["epoch_seconds"]
    first = next(iter(records.values()))
    return {
        "config": {k: v for k, v in base.to_json().items() if k not in ("method", "seed", "lr")},
        "seeds": [r["config"]["seed"] for r in first],
        "jobs": jobs,
        "data": first[0]["data"],
        "rows": rows,
        "epoch_time_ratio_un_over_bsgd": ratio,
        "selection": {**selections, "holdout": holdout},
        "baseline_majority": first[0]["baseline_majority"],
        "parameters": records["un"][0]["parameters"]
        if "un" in records
        else first[0]["parameters"],
        "train_images": len(train),
        "test_images": len(test),
    }
