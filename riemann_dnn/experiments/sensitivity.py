"""How batch size and loss reduction change the Table 2 protocol's outcome.

The paper states neither its minibatch size nor whether the minibatch loss is the mean or
the sum of per-image losses, yet together they fix what its learning-rate grid
{1e-2, ..., 1e-5} means: with the sum, a step moves ``batch`` times further than with the
mean. :func:`batch_reduction_study` runs the protocol (learning-rate selection included)
for each combination and tabulates test error, chosen rate and cost side by side.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from .protocol import Protocol
from .table2 import reproduce_table2

__all__ = ["batch_reduction_study"]


def batch_reduction_study(
    out_dir: str | Path,
    *,
    batch_sizes: Sequence[int] = (10, 32, 100),
    reductions: Sequence[str] = ("mean", "sum"),
    depths: Sequence[int] = (4,),
    methods: Sequence[str] = ("un", "bsgd"),
    runs: int = 3,
    protocol: Protocol | None = None,
    **table2_options,
) -> dict:
    """Run :func:`reproduce_table2` for every (batch size, reduction) into
    ``out_dir/batch{B}-{reduction}`` (resumable), then write ``sensitivity.json``,
    ``sensitivity.md`` and ``sensitivity.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    protocol = protocol or Protocol()
    cells = []
    for batch in batch_sizes:
        for reduction in reductions:
            sub = out_dir / f"batch{batch}-{reduction}"
            summary = reproduce_table2(
                sub, depths=depths, methods=methods, runs=runs,
                protocol=replace(protocol, batch_size=batch, loss_reduction=reduction),
                **table2_options)
            for row in summary["rows"]:
                cells.append({
                    "batch_size": batch, "reduction": reduction, "depth": row["depth"],
                    "method": row["method"], "label": row["label"], "mean": row["mean"],
                    "std": row["std"], "test_errors": row["test_errors"],
                    "chosen_lrs": row["chosen_lrs"], "epochs": row["epochs"],
                    "epoch_seconds_per_run": row["epoch_seconds_per_run"],
                })
    result = {"cells": cells, "runs": runs, "depths": list(depths), "methods": list(methods)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sensitivity.json").write_text(json.dumps(result, indent=1))
    (out_dir / "sensitivity.md").write_text(_markdown(result))
    _plot(result, out_dir / "sensitivity.png")
    return result


def _markdown(result: dict) -> str:
    lines = [
        "# Batch size × loss reduction: the Table 2 protocol's sensitivity",
        "",
        f"Full protocol (learning-rate selection over the paper's grid, bold driver, stopping "
        f"rules), {result['runs']} runs per cell; test error mean ± sample std.",
        "",
        "| batch | reduction | depth | method | test error | chosen lr (each run) | epochs "
        "(median) | epoch s/run |",
        "|---:|---|---:|---|---|---|---:|---:|",
    ]
    for c in result["cells"]:
        lrs = ", ".join(f"{lr:.0e}" for lr in c["chosen_lrs"])
        lines.append(
            f"| {c['batch_size']} | {c['reduction']} | {c['depth']} | {c['label']} | "
            f"{c['mean']:.4f} ± {c['std']:.4f} | {lrs} | {statistics.median(c['epochs']):g} | "
            f"{c['epoch_seconds_per_run']:.2f} |")
    lines += ["", "![sensitivity](sensitivity.png)", ""]
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result["cells"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    keys = sorted({(c["reduction"], c["method"], c["depth"]) for c in cells})
    for index, (reduction, method, depth) in enumerate(keys):
        row = sorted((c for c in cells if (c["reduction"], c["method"], c["depth"])
                      == (reduction, method, depth)), key=lambda c: c["batch_size"])
        ax.errorbar([c["batch_size"] * (1 + 0.03 * index) for c in row],
                    [c["mean"] for c in row], yerr=[c["std"] for c in row], capsize=3,
                    marker="o", linestyle="-" if reduction == "mean" else "--",
                    color="C0" if method == "un" else "C1" if method == "bsgd" else "C2",
                    label=f"{row[0]['label']} depth {depth}, {reduction} loss")
    ax.set_xscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("test error (mean ± std)")
    ax.set_title("Table 2 protocol: batch size × loss reduction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
