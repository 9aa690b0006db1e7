"""The bench's report: ``retractions.json`` and ``retractions.md`` (tables), and the plots
(:mod:`.plots`), written through :mod:`riemann_dnn.experiments.records`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..records import write_json, write_text
from .order import format_order
from .plots import plot_retractions

__all__ = ["retraction_markdown", "write_retraction_report"]


def _fmt_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def retraction_markdown(results: dict[str, Any], *, images: str = "") -> str:
    """The report as Markdown tables (``images``: the path prefix of the PNG files)."""
    config, machine = results["config"], results["machine"]
    lines = [
        "# Retractions: cost, accuracy, effect on training"
        + (
            " (full bench)"
            if config.get("full")
            else " (quick bench; --full for the whole)"
            if "full" in config
            else ""
        ),
        "",
        f"Sizes {', '.join(config['sizes'])}; dtypes {', '.join(config['dtypes'])}; "
        f"manifolds {', '.join(config['families'])}; {config['steps']} chained drift steps"
        + ("; ArchBN trained" if results.get("archbn") else "; no ArchBN training")
        + ".",
        "",
        f"Device `{config['device']}`"
        + (f" ({machine['gpu']})" if "gpu" in machine else "")
        + f", torch {machine['torch']}, {machine['torch_threads']} torch threads, "
        f"{machine['processor']} ({machine.get('cpu_count', '?')} CPUs); total "
        f"{results.get('seconds', 0):.0f} s.",
        "",
        "## Time per call and distance from the manifold",
        "",
        f"Median over repeats after a warm-up call (budget {config['budget_s']} s per cell); "
        "×: ratio to the cheapest retraction of the same manifold, size and dtype (same run). "
        f"Violation: `constraint_violation` after one call with ‖U‖ = "
        f"{config['one_step_per_filter']}·√p.",
        "",
    ]
    sizes, dtypes = config["sizes"], config["dtypes"]
    header = (
        "| manifold | retraction | " + " | ".join(f"{s} {d}" for s in sizes for d in dtypes) + " |"
    )
    lines += [header, "|---|---|" + "---:|" * (len(sizes) * len(dtypes))]
    timing = results["timing"]
    keys = list(dict.fromkeys((r["family"], r["retraction"]) for r in timing))
    for family, retraction in keys:
        cells = []
        for size in sizes:
            for dtype in dtypes:
                row = next(
                    (
                        r
                        for r in timing
                        if (r["family"], r["retraction"], r["size"], r["dtype"])
                        == (family, retraction, size, dtype)
                    ),
                    None,
                )
                cells.append(
                    "—"
                    if row is None
                    else f"{_fmt_seconds(row['seconds'])} ×{row['ratio_to_cheapest']:.2f}"
                    f" ({row['violation_one_call']:.0e})"
                )
        lines.append(f"| {family} | {retraction} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cells: median time ×ratio (violation after one call); repeats per cell: "
        f"{min(r['repeats'] for r in timing)}–{max(r['repeats'] for r in timing)}."
        if timing
        else "",
    ]
    if results["orders"]:
        lines += [
            "",
            f"## Agreement with exp (float64, size {config['order_size']})",
            "",
            "e(t) = ‖R(x, tv) − exp(x, tv)‖ (Grassmann: subspace distance), ‖v‖ = √p; "
            f"slope of log e vs log t over t ≤ {config['order_t_max']} with e above "
            "rounding (10³·ε·√p). Order = slope − 1.",
            "",
            "| manifold | retraction | theory order | measured order | slope | fit t range"
            " (points) |",
            "|---|---|---:|---:|---:|---|",
        ]
        for row in results["orders"]:
            rng = (
                "exp itself"
                if math.isinf(float(row["slope"]))
                else (f"{row['fit_t_min']:.0e} – {row['fit_t_max']:.0e} ({row['fit_points']})")
            )
            lines.append(
                f"| {row['family']} | {row['retraction']} | "
                f"{format_order(row['theory_order'])} | {format_order(row['order'])} | "
                f"{format_order(row['slope'])} | {rng} |"
            )
    if results["drift"]:
        marks = sorted({int(k) for r in results["drift"] for k in r["curve"]})
        lines += [
            "",
            "## Drift from the manifold in float32",
            "",
            f"`constraint_violation` after k chained steps, ‖U‖ = "
            f"{config['drift_step_per_filter']}·√p each, fresh random direction.",
            "",
            "| manifold | retraction | size | start | "
            + " | ".join(f"k = {k:,}" for k in marks)
            + " |",
            "|---|---|---|---:|" + "---:|" * len(marks),
        ]
        for row in results["drift"]:
            cells = [
                f"{row['curve'][str(k)]:.1e}" if str(k) in row["curve"] else "—" for k in marks
            ]
            lines.append(
                f"| {row['family']} | {row['retraction']} | {row['size']} | "
                f"{row['violation_start']:.1e} | " + " | ".join(cells) + " |"
            )
    archbn = results.get("archbn")
    if archbn:
        protocol = archbn["protocol"]
        lines += [
            "",
            "## ArchBN (depth 2), quick protocol",
            "",
            f"Data `{archbn['data']}`; {protocol['selection_epochs']} selection epochs per "
            f"rate candidate, {protocol['min_epochs']}–{protocol['max_epochs']} training "
            "epochs, bold driver, no momentum; runs trained together as one ensemble.",
            "",
            "| constraint | retraction | test error (mean ± std) | runs | chosen lr | "
            "epochs | epoch s (ensemble) |",
            "|---|---|---|---:|---|---|---:|",
        ]
        for row in archbn["rows"]:
            lines.append(
                f"| {row['constraint']} | {row['retraction'] or '— (B-SGD)'} | "
                f"{row['mean']:.4f} ± {row['std']:.4f} | {row['runs']} | "
                f"{', '.join(f'{lr:.0e}' for lr in row['chosen_lrs'])} | "
                f"{', '.join(str(e) for e in row['epochs'])} | {row['epoch_seconds']:.2f} |"
            )
    lines += [
        "",
        f"![time vs size]({images}retractions_time.png)",
        "",
        f"![error vs t]({images}retractions_order.png)",
        "",
    ]
    if results["drift"]:
        lines += [f"![drift]({images}retractions_drift.png)", ""]
    return "\n".join(lines)


def write_retraction_report(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``retractions.json`` (strict JSON: non-finite numbers as ``"inf"``/``"nan"``,
    read back by :func:`~riemann_dnn.experiments.records.read_json`), ``retractions.md`` and
    the PNG plots (:func:`~.plots.plot_retractions`) into ``out_dir``; returns the paths
    written."""
    out = Path(out_dir)
    paths = [
        write_json(out / "retractions.json", results),
        write_text(out / "retractions.md", retraction_markdown(results)),
    ]
    return paths + plot_retractions(results, out)
