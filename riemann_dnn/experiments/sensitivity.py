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
from dataclasses import asdict, replace
from pathlib import Path

from .config import Protocol, quick_protocol
from .methods import method_colour
from .records import figure, write_json, write_text
from .table2 import check_table, reproduce_table2

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
    quick: bool | None = None,
    **table2_options,
) -> dict:
    """Run :func:`reproduce_table2` for every (batch size, reduction) into
    ``out_dir/batch{B}-{reduction}`` (resumable), then write ``sensitivity.json``,
    ``sensitivity.md`` and ``sensitivity.png`` in ``out_dir``.

    Every combination is checked (options, data, no table of another protocol in its
    directory, no ``sensitivity.json`` of another study in ``out_dir``) before any is
    trained. ``quick`` only labels the report (None: inferred from the epoch counts)."""
    out_dir = Path(out_dir)
    protocol = protocol or Protocol()
    combos = [(b, r) for b in batch_sizes for r in reductions]
    if not combos:
        raise ValueError("give at least one batch size and one reduction")
    plans = {}
    for batch, reduction in combos:
        plans[(batch, reduction)] = dict(
            depths=depths,
            methods=methods,
            runs=runs,
            protocol=replace(protocol, batch_size=batch, loss_reduction=reduction),
            **table2_options,
        )
        reproduce_table2(
            out_dir / f"batch{batch}-{reduction}", check_only=True, **plans[(batch, reduction)]
        )
    study = {
        "protocol": {
            k: v
            for k, v in json.loads(json.dumps(asdict(protocol))).items()
            if k not in ("batch_size", "loss_reduction")
        },
        "options": {k: v for k, v in table2_options.items() if k != "progress"},
    }
    check_table(out_dir / "sensitivity.json", study, what="study")
    cells = []
    for batch, reduction in combos:
        summary = reproduce_table2(
            out_dir / f"batch{batch}-{reduction}", **plans[(batch, reduction)]
        )
        for row in summary["rows"]:
            cells.append(
                {
                    "batch_size": batch,
                    "reduction": reduction,
                    "depth": row["depth"],
                    "method": row["method"],
                    "label": row["label"],
                    "mean": row["mean"],
                    "std": row["std"],
                    "test_errors": row["test_errors"],
                    "chosen_lrs": row["chosen_lrs"],
                    "epochs": row["epochs"],
                    "epoch_seconds_per_run": row["epoch_seconds_per_run"],
                }
            )
        data = summary["data"]
    if quick is None:
        quick = asdict(protocol) == asdict(
            replace(
                quick_protocol(),
                batch_size=protocol.batch_size,
                loss_reduction=protocol.loss_reduction,
            )
        )
    result = {
        "cells": cells,
        "runs": runs,
        "depths": list(depths),
        "methods": list(methods),
        "batch_sizes": list(batch_sizes),
        "reductions": list(reductions),
        "quick": bool(quick),
        "protocol": asdict(protocol),
        "data": data,
        "identity": study,
    }
    write_json(out_dir / "sensitivity.json", result)
    write_text(out_dir / "sensitivity.md", _markdown(result))
    _plot(result, out_dir / "sensitivity.png")
    return result


def _markdown(result: dict) -> str:
    p = result["protocol"]
    kind = (
        "Quick protocol"
        if result["quick"]
        else "Full protocol"
        if (p["selection_epochs"], p["min_epochs"], p["max_epochs"]) == (50, 25, 60)
        else "Custom protocol"
    )
    lines = [
        "# Batch size × loss reduction: the Table 2 protocol's sensitivity"
        + (" (quick protocol)" if result["quick"] else ""),
        "",
        f"{kind}: learning-rate selection over {list(p['lr_candidates'])} "
        f"({p['selection_epochs']} epochs per rate), bold driver, {p['min_epochs']} to "
        f"{p['max_epochs']} training epochs with the stopping rules; "
        f"{result['runs']} run(s) per cell; test error mean ± sample std.",
        "",
        f"Grid: batch sizes {result['batch_sizes']} × reductions {result['reductions']}, "
        f"depths {result['depths']}, methods {result['methods']}. Data: `{result['data']}`.",
        "",
        "| batch | reduction | depth | method | test error | chosen lr (each run) | epochs "
        "(median) | epoch s/run |",
        "|---:|---|---:|---|---|---|---:|---:|",
    ]
    for c in result["cells"]:
        lrs = ", ".join(f"{lr:.0e}" for lr in c["chosen_lrs"])
        error = (
            f"{c['mean']:.4f}"
            if len(c["test_errors"]) < 2
            else f"{c['mean']:.4f} ± {c['std']:.4f}"
        )
        lines.append(
            f"| {c['batch_size']} | {c['reduction']} | {c['depth']} | {c['label']} | "
            f"{error} | {lrs} | {statistics.median(c['epochs']):g} | "
            f"{c['epoch_seconds_per_run']:.2f} |"
        )
    lines += ["", "![sensitivity](sensitivity.png)", ""]
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> None:
    with figure(path, figsize=(8, 4.5), dpi=120) as (_, ax):
        _draw(ax, result)


def _draw(ax, result: dict) -> None:
    cells = result["cells"]
    keys = sorted({(c["reduction"], c["method"], c["depth"]) for c in cells})
    batches = sorted({c["batch_size"] for c in cells})
    width = 0.6 / max(1, len(keys))  # each batch size keeps one slot on a categorical axis
    for index, (reduction, method, depth) in enumerate(keys):
        row = sorted(
            (
                c
                for c in cells
                if (c["reduction"], c["method"], c["depth"]) == (reduction, method, depth)
            ),
            key=lambda c: c["batch_size"],
        )
        offset = (index - (len(keys) - 1) / 2) * width
        ax.errorbar(
            [batches.index(c["batch_size"]) + offset for c in row],
            [c["mean"] for c in row],
            yerr=[c["std"] for c in row],
            capsize=3,
            marker="o",
            linestyle="-" if reduction == "mean" else "--",
            color=method_colour(method),
            label=f"{row[0]['label']} depth {depth}, {reduction} loss",
        )
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlim(-0.5, len(batches) - 0.5)
    ax.set_xlabel("batch size")
    ax.set_ylabel("test error (mean ± std)")
    ax.set_title(
        "Table 2 protocol: batch size × loss reduction" + (" (quick)" if result["quick"] else "")
    )
    ax.legend(fontsize=8)
