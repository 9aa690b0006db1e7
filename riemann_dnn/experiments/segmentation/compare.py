"""How segmentation methods are compared: each method's learning rate chosen by held-out mIoU
(:func:`select_learning_rate`), then every method trained over several seeds
(:func:`compare_methods`), in this process or side by side on the package's worker pool
(:func:`~riemann_dnn.experiments.pool.worker_pool`), and summarised as mean ± std."""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ...data import SegmentationSet
from ...optim import NonFiniteGradientError
from ..selection import best_candidate
from .build import load_segmentation_data, split_holdout
from .checkpoint import load_trained_model
from .config import SEGMENTATION_METHODS, SegmentationConfig
from .report import write_comparison
from .train import train_segmentation

__all__ = ["select_learning_rate", "compare_methods"]

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


def _selection_tasks(
    configs: Sequence[SegmentationConfig],
    grid: Sequence[float],
    epochs: int,
    out_dir: str | Path,
    device: str | torch.device,
    resume: bool,
    progress: bool,
) -> list[tuple]:
    """The held-out runs of a learning-rate selection, for :func:`_run_task`: each config (a
    method) with each rate of ``grid`` for ``epochs`` epochs, into
    ``out_dir/<method>-lr<rate>``, on the ``"selection"`` data."""
    return [
        (
            replace(config, lr=float(lr), epochs=epochs),
            Path(out_dir) / f"{config.method}-lr{lr:g}",
            "selection",
            device,
            resume,
            progress,
        )
        for config in configs
        for lr in grid
    ]


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
    best = best_candidate(candidates, "mean_iou", maximize=True)
    if best is None:
        raise RuntimeError(
            f"every learning rate of {list(grid)} diverged for method "
            f"{method!r}; try smaller rates"
        )
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
    tasks = _selection_tasks([config], candidates, epochs, out_dir, device, resume, progress)
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
            configs = [replace(base, method=m, seed=seeds[0]) for m in methods]
            tasks = _selection_tasks(
                configs, grid, epochs, out / "selection", device, resume, progress
            )
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
