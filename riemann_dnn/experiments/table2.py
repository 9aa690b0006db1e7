"""Reproduce Table 2 of the paper: test error of UN vs B-SGD (and plain SGD) on MNIST.

:func:`reproduce_table2` runs the protocol of :mod:`.protocol` for every (depth, method)
and seed -- in worker processes, runs of one (depth, method) trained together as an
ensemble -- skipping runs whose JSON record already exists, then writes ``table2.json``,
``table2.md`` (our mean ± std beside the paper's, Welch's t-test of UN vs B-SGD per depth)
and ``table2.png`` (test errors with error bars; validation-error curves).
"""

from __future__ import annotations

import json
import os
import statistics
import warnings
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from .protocol import (
    METHODS,
    MNISTTensors,
    Protocol,
    RunConfig,
    load_finished,
    progress_total,
    train_runs,
    welch_t_test,
)

__all__ = ["PAPER_TABLE2", "reproduce_table2", "summarize", "write_report"]

#: Table 2 of Badrinarayanan, Mishra & Cipolla (2015): test error, mean ± std over 10 runs.
PAPER_TABLE2 = {
    (2, "bsgd"): (0.0206, 0.0024),
    (2, "un"): (0.0199, 0.0046),
    (4, "bsgd"): (0.0204, 0.0027),
    (4, "un"): (0.0179, 0.0025),
}

_DATA_CACHE: dict[tuple, MNISTTensors] = {}


def _worker(task: tuple) -> list[dict]:
    """Run one ensemble of configs in a worker process."""
    configs, out_dir, data_args, device, threads, queue = task
    import torch

    torch.set_num_threads(threads)
    key = (data_args, device)
    if key not in _DATA_CACHE:
        with warnings.catch_warnings():  # the parent process already warned about the data
            warnings.simplefilter("ignore")
            _DATA_CACHE[key] = MNISTTensors.load(data_args[0], source=data_args[1],
                                                 device=device)
    progress = (lambda n: queue.put(n)) if queue is not None else (lambda n: None)
    return train_runs(configs, _DATA_CACHE[key], Path(out_dir), device=device, progress=progress)


def _tasks(configs: list[RunConfig], jobs: int) -> list[list[RunConfig]]:
    """Group configs into ensembles (same depth/method), split so ``jobs`` workers stay busy."""
    groups: dict[tuple, list[RunConfig]] = defaultdict(list)
    for config in configs:
        groups[(config.depth, config.method)].append(config)
    tasks = list(groups.values())
    while len(tasks) < jobs and any(len(t) > 1 for t in tasks):
        largest = max(tasks, key=len)
        tasks.remove(largest)
        half = len(largest) // 2
        tasks += [largest[:half], largest[half:]]
    return sorted(tasks, key=lambda t: -t[0].depth)  # deepest (slowest) first


def reproduce_table2(
    out_dir: str | Path,
    *,
    depths: Sequence[int] = (2, 4),
    methods: Sequence[str] = ("un", "bsgd", "sgd"),
    runs: int = 10,
    seed: int = 0,
    protocol: Protocol | None = None,
    data_dir: str | None = None,
    source: str = "auto",
    device: str = "cpu",
    jobs: int | None = None,
    constraint: str = "oblique",
    retraction: str | None = None,
    progress: bool = True,
    arch: str = "mlp",
    width: int | None = None,
    threads: int | None = None,
) -> dict:
    """Run (or resume) the Table 2 reproduction and write its report; returns the summary.

    ``arch``/``width`` choose the architecture (:data:`~.protocol.ARCHS`; default the
    paper's MLP of width 64); ``threads`` fixes the torch threads of every training process
    (default: this process's, or the cores shared among ``jobs`` workers)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    protocol = protocol or Protocol()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = MNISTTensors.load(data_dir, source=source, device="cpu")  # fail early, clearly
    configs = [
        RunConfig(depth=d, method=m, seed=seed + r, protocol=protocol, constraint=constraint,
                  retraction=retraction, data=data.source, arch=arch,
                  **({} if width is None else {"width": width}))
        for d in depths for m in methods for r in range(runs)
    ]
    todo = [c for c in configs if load_finished(out_dir, c) is None]
    jobs = max(1, jobs or os.cpu_count() or 1)
    tasks = _tasks(todo, jobs)
    if tasks:
        _run_tasks(tasks, out_dir, (data_dir, source), device, jobs, progress, data,
                   threads=threads)
    records = [load_finished(out_dir, c) for c in configs]
    missing = [c.name for c, r in zip(configs, records) if r is None]
    if missing:
        raise RuntimeError(f"runs did not finish: {missing}")
    summary = summarize(records)
    summary["protocol"] = asdict(protocol)
    summary["data"] = data.source
    write_report(summary, records, out_dir)
    return summary


def _run_tasks(tasks, out_dir, data_args, device, jobs, show_progress, data, *,
               threads: int | None = None) -> None:
    from tqdm import tqdm

    total = sum(progress_total(t) for t in tasks)
    bar = tqdm(total=total, desc="table2", unit="epoch", disable=not show_progress)
    if jobs == 1 or len(tasks) == 1:
        import torch

        _DATA_CACHE[(data_args, device)] = data_on(data, device)
        for configs in tasks:
            bar.set_postfix_str(f"depth {configs[0].depth} {configs[0].method}")
            _worker((configs, str(out_dir), data_args, device,
                     threads or torch.get_num_threads(), _BarQueue(bar)))
        bar.close()
        return
    import multiprocessing as mp

    context = mp.get_context("spawn")
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    with context.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [pool.submit(_worker, (t, str(out_dir), data_args, device, threads, queue))
                       for t in tasks]
            while not all(f.done() for f in futures):
                try:
                    bar.update(queue.get(timeout=0.5))
                except Exception:  # noqa: BLE001 - queue.Empty from a manager proxy
                    pass
            for future in futures:
                future.result()  # re-raise a worker's error
    bar.close()


class _BarQueue:
    def __init__(self, bar):
        self.bar = bar

    def put(self, n):
        self.bar.update(n)


def data_on(data: MNISTTensors, device: str) -> MNISTTensors:
    return MNISTTensors(data.train_x.to(device), data.train_y.to(device),
                        data.test_x.to(device), data.test_y.to(device), data.source)


# -- report -----------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(records: list[dict]) -> dict:
    """Per (depth, method): test errors, mean ± std, chosen rates, epochs, epoch time; and
    Welch's t-test of UN vs B-SGD per depth."""
    cells: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for record in records:
        cells[(record["config"]["depth"], record["config"]["method"])].append(record)
    rows = []
    for (depth, method), recs in sorted(cells.items()):
        errors = [r["test_error"] for r in recs]
        mean, std = _mean_std(errors)
        per_run_epoch = [statistics.fmean(r["epoch_seconds"]) / r["ensemble_size"] for r in recs]
        paper = PAPER_TABLE2.get((depth, method))
        rows.append({
            "depth": depth, "method": method, "label": METHODS[method].label,
            "runs": len(recs), "test_errors": errors, "mean": mean, "std": std,
            "paper_mean": paper[0] if paper else None, "paper_std": paper[1] if paper else None,
            "chosen_lrs": [r["chosen_lr"] for r in recs],
            "epochs": [r["epochs"] for r in recs],
            "stop_reasons": [r["stop_reason"] for r in recs],
            "epoch_seconds_per_run": statistics.fmean(per_run_epoch),
        })
    tests = {}
    for depth in sorted({d for d, _ in cells}):
        if (depth, "un") in cells and (depth, "bsgd") in cells:
            un = [r["test_error"] for r in cells[(depth, "un")]]
            bsgd = [r["test_error"] for r in cells[(depth, "bsgd")]]
            time_un = next(r for r in rows if r["depth"] == depth and r["method"] == "un")
            time_b = next(r for r in rows if r["depth"] == depth and r["method"] == "bsgd")
            tests[str(depth)] = {
                **welch_t_test(un, bsgd),
                "mean_difference_un_minus_bsgd": statistics.fmean(un) - statistics.fmean(bsgd),
                "epoch_time_ratio_un_over_bsgd":
                    time_un["epoch_seconds_per_run"] / time_b["epoch_seconds_per_run"],
            }
    return {"rows": rows, "un_vs_bsgd": tests}


def _fmt(mean, std):
    return "—" if mean is None else f"{mean:.4f} ± {std:.4f}"


def write_report(summary: dict, records: list[dict], out_dir: Path, stem: str = "table2") -> None:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    (out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    lines = [
        "# Table 2 reproduction: ArchBN on MNIST, test error after the last epoch",
        "",
        f"Data: `{summary.get('data', '?')}`. Runs per cell: "
        f"{sorted({r['runs'] for r in summary['rows']})}. Mean ± sample std over runs.",
        "",
        "| depth | method | ours | paper | runs | chosen lr (median) | epochs (median) "
        "| epoch s/run |",
        "|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['depth']} | {row['label']} | {_fmt(row['mean'], row['std'])} | "
            f"{_fmt(row['paper_mean'], row['paper_std'])} | {row['runs']} | "
            f"{statistics.median(row['chosen_lrs']):.0e} | {statistics.median(row['epochs']):g} | "
            f"{row['epoch_seconds_per_run']:.2f} |"
        )
    if summary["un_vs_bsgd"]:
        lines += ["", "UN vs B-SGD (Welch's t-test, two-sided):", "",
                  "| depth | mean(UN) − mean(B-SGD) | t | p-value | epoch time UN / B-SGD |",
                  "|---:|---:|---:|---:|---:|"]
        for depth, test in summary["un_vs_bsgd"].items():
            lines.append(
                f"| {depth} | {test['mean_difference_un_minus_bsgd']:+.4f} | {test['t']:.2f} | "
                f"{test['p_value']:.3g} | {test['epoch_time_ratio_un_over_bsgd']:.3f} |")
    protocol = summary.get("protocol")
    if protocol:
        lines += ["", "Protocol: " + ", ".join(f"{k}={v}" for k, v in protocol.items())]
    lines += ["", f"![{stem}]({stem}.png)", ""]
    (out_dir / f"{stem}.md").write_text("\n".join(lines))
    plot_table2(summary, records, out_dir / f"{stem}.png")


def plot_table2(summary: dict, records: list[dict], path: Path) -> None:
    """Test error per method and depth (ours with std bars, the paper's as markers), and the
    mean validation-error curve of each (depth, method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    fig, (ax_bar, ax_curve) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"d{r['depth']} {r['label']}" for r in rows]
    xs = range(len(rows))
    ax_bar.bar(xs, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], capsize=4,
               color=["C0" if r["method"] == "un" else "C1" if r["method"] == "bsgd" else "C2"
                      for r in rows], alpha=0.8, label="ours (mean ± std)")
    paper = [(x, r["paper_mean"], r["paper_std"]) for x, r in zip(xs, rows) if r["paper_mean"]]
    if paper:
        ax_bar.errorbar([p[0] for p in paper], [p[1] for p in paper], yerr=[p[2] for p in paper],
                        fmt="k_", markersize=18, capsize=4, label="paper")
    for x, r in zip(xs, rows):
        ax_bar.scatter([x] * len(r["test_errors"]), r["test_errors"], s=8, color="k", zorder=3)
    ax_bar.set_xticks(list(xs), labels, rotation=20)
    ax_bar.set_ylabel("test error")
    ax_bar.set_title("Table 2: test error after the last epoch")
    ax_bar.legend()
    curves: dict[tuple, list[list[float]]] = defaultdict(list)
    for record in records:
        curves[(record["config"]["depth"], record["config"]["method"])].append(
            record["curves"]["val_error"])
    for (depth, method), group in sorted(curves.items()):
        length = max(len(c) for c in group)
        mean = [statistics.fmean(c[i] for c in group if len(c) > i) for i in range(length)]
        ax_curve.plot(range(1, length + 1), mean, label=f"depth {depth} {METHODS[method].label}",
                      linestyle="-" if depth == 2 else "--",
                      color="C0" if method == "un" else "C1" if method == "bsgd" else "C2")
    ax_curve.set_xlabel("epoch (full training)")
    ax_curve.set_ylabel("validation error (mean over runs)")
    ax_curve.set_yscale("log")
    ax_curve.set_title("Validation error during training")
    ax_curve.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
