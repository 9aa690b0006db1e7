"""The Table 2 report: per (depth, method) the test errors' mean ± std beside the paper's,
Welch's t-test of UN vs B-SGD per depth, and ``table2.json``, ``table2.md``, ``table2.png``
(written through :mod:`.records`)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from .config import Protocol, quick_protocol
from .methods import METHODS, method_colour
from .stats import welch_t_test

__all__ = ["PAPER_TABLE2", "summarize", "protocol_words", "write_report", "plot_table2"]

#: Table 2 of Badrinarayanan, Mishra & Cipolla (2015): test error, mean ± std over 10 runs.
PAPER_TABLE2 = {
    (2, "bsgd"): (0.0206, 0.0024),
    (2, "un"): (0.0199, 0.0046),
    (4, "bsgd"): (0.0204, 0.0027),
    (4, "un"): (0.0179, 0.0025),
}


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
        rows.append(
            {
                "depth": depth,
                "method": method,
                "label": METHODS[method].label,
                "runs": len(recs),
                "test_errors": errors,
                "mean": mean,
                "std": std,
                "paper_mean": paper[0] if paper else None,
                "paper_std": paper[1] if paper else None,
                "chosen_lrs": [r["chosen_lr"] for r in recs],
                "epochs": [r["epochs"] for r in recs],
                "stop_reasons": [r["stop_reason"] for r in recs],
                "epoch_seconds_per_run": statistics.fmean(per_run_epoch),
            }
        )
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
                "epoch_time_ratio_un_over_bsgd": time_un["epoch_seconds_per_run"]
                / time_b["epoch_seconds_per_run"],
            }
    return {"rows": rows, "un_vs_bsgd": tests}


def _fmt(mean, std, runs: int = 2):
    if mean is None:
        return "—"
    return f"{mean:.4f}" if runs < 2 else f"{mean:.4f} ± {std:.4f}"


def protocol_words(protocol: dict) -> str:
    """The protocol (``asdict`` of a :class:`~.config.Protocol`) in words: quick, full or
    custom, and its epochs, rates, batch size and loss."""
    quick = asdict(quick_protocol())
    full = asdict(Protocol())
    kind = "quick" if protocol == quick else "full (the paper's)" if protocol == full else "custom"
    return (
        f"{kind} protocol: {protocol['selection_epochs']} selection epochs per rate of "
        f"{list(protocol['lr_candidates'])}, {protocol['min_epochs']} to "
        f"{protocol['max_epochs']} training epochs, batch {protocol['batch_size']}, "
        f"{protocol['loss_reduction']} loss"
    )


def write_report(summary: dict, records: list[dict], out_dir: Path, stem: str = "table2") -> None:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out_dir``.

    The title says what was run (``summary["title"]``, default the Table 2 reproduction), the
    header the protocol (quick, full or custom), the grid and the data. Every file goes
    through :mod:`riemann_dnn.experiments.records` (the JSON is strict: a NaN p-value is
    written ``"nan"``)."""
    from .records import write_json, write_text

    out_dir = Path(out_dir)
    write_json(out_dir / f"{stem}.json", summary)
    data = summary.get("data") or (records[0].get("data") if records else None) or "?"
    runs = sorted({r["runs"] for r in summary["rows"]})
    title = summary.get(
        "title", "Table 2 reproduction: ArchBN on MNIST, test error after the last epoch"
    )
    lines = [f"# {title}", ""]
    protocol = summary.get("protocol")
    if protocol:
        lines += [protocol_words(protocol).capitalize() + ".", ""]
    grid = summary.get("grid")
    cells = ", ".join(f"depth {r['depth']} {r['label']}" for r in summary["rows"])
    lines += [
        f"Data: `{data}`. Cells: {cells}; runs per cell: "
        f"{', '.join(map(str, runs))}"
        + (f" (seeds from {grid['seed']})" if grid else "")
        + (". Mean ± sample std over runs." if max(runs) > 1 else "."),
        "",
    ]
    lines += [
        "| depth | method | ours | paper | runs | chosen lr (median) | epochs (median) "
        "| epoch s/run |",
        "|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['depth']} | {row['label']} | {_fmt(row['mean'], row['std'], row['runs'])} "
            f"| {_fmt(row['paper_mean'], row['paper_std'])} | {row['runs']} | "
            f"{statistics.median(row['chosen_lrs']):.0e} | {statistics.median(row['epochs']):g} | "
            f"{row['epoch_seconds_per_run']:.2f} |"
        )
    if summary["un_vs_bsgd"]:
        lines += [
            "",
            "UN vs B-SGD (Welch's t-test, two-sided):",
            "",
            "| depth | mean(UN) − mean(B-SGD) | t | p-value | epoch time UN / B-SGD |",
            "|---:|---:|---:|---:|---:|",
        ]
        for depth, test in summary["un_vs_bsgd"].items():
            lines.append(
                f"| {depth} | {test['mean_difference_un_minus_bsgd']:+.4f} | {test['t']:.2f} | "
                f"{test['p_value']:.3g} | {test['epoch_time_ratio_un_over_bsgd']:.3f} |"
            )
    if protocol:
        lines += ["", "Protocol: " + ", ".join(f"{k}={v}" for k, v in protocol.items())]
    identity = summary.get("identity")
    if identity:
        lines += [
            "",
            f"Execution: device {identity['device']}, {identity['threads']} torch "
            f"thread(s) per training process, {identity['dtype']}, world size "
            f"{identity['world_size']}; data checksum `{identity['data_checksum'][:12]}`.",
        ]
    lines += ["", f"![{stem}]({stem}.png)", ""]
    write_text(out_dir / f"{stem}.md", "\n".join(lines))
    plot_table2(summary, records, out_dir / f"{stem}.png")


def plot_table2(summary: dict, records: list[dict], path: Path) -> None:
    """Test error per method and depth (ours with std bars, the paper's as markers), and the
    mean validation-error curve of each (depth, method)."""
    from .records import figure

    rows = summary["rows"]
    with figure(path, 1, 2, figsize=(12, 4.5), dpi=120) as (_, (ax_bar, ax_curve)):
        labels = [f"d{r['depth']} {r['label']}" for r in rows]
        xs = range(len(rows))
        ax_bar.bar(
            xs,
            [r["mean"] for r in rows],
            yerr=[r["std"] for r in rows],
            capsize=4,
            color=[method_colour(r["method"]) for r in rows],
            alpha=0.8,
            label="ours (mean ± std)",
        )
        paper = [(x, r["paper_mean"], r["paper_std"]) for x, r in zip(xs, rows) if r["paper_mean"]]
        if paper:
            ax_bar.errorbar(
                [p[0] for p in paper],
                [p[1] for p in paper],
                yerr=[p[2] for p in paper],
                fmt="k_",
                markersize=18,
                capsize=4,
                label="paper",
            )
        for x, r in zip(xs, rows):
            ax_bar.scatter([x] * len(r["test_errors"]), r["test_errors"], s=8, color="k", zorder=3)
        ax_bar.set_xticks(list(xs), labels, rotation=20)
        ax_bar.set_ylabel("test error")
        ax_bar.set_title("Table 2: test error after the last epoch")
        ax_bar.legend()
        curves: dict[tuple, list[list[float]]] = defaultdict(list)
        for record in records:
            curves[(record["config"]["depth"], record["config"]["method"])].append(
                record["curves"]["val_error"]
            )
        for (depth, method), group in sorted(curves.items()):
            length = max(len(c) for c in group)
            mean = [statistics.fmean(c[i] for c in group if len(c) > i) for i in range(length)]
            ax_curve.plot(
                range(1, length + 1),
                mean,
                label=f"depth {depth} {METHODS[method].label}",
                linestyle="-" if depth == 2 else "--",
                color=method_colour(method),
            )
        ax_curve.set_xlabel("epoch (full training)")
        ax_curve.set_ylabel("validation error (mean over runs)")
        ax_curve.set_yscale("log")
        ax_curve.set_title("Validation error during training")
        ax_curve.legend()
