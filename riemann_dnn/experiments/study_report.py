"""``study.json``, ``study.md`` and ``study.png`` of :func:`~.study.reproduce_study`."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from .records import figure, write_json, write_text

__all__ = ["write_study", "study_markdown", "plot_study"]


def write_study(result: dict, out_dir: Path) -> None:
    """Write the three files into ``out_dir`` and print where."""
    out_dir = Path(out_dir)
    write_json(out_dir / "study.json", result)
    write_text(out_dir / "study.md", study_markdown(result))
    plot_study(result, out_dir / "study.png")


def _p(value) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.3g}"
    )


def _rate(chosen: dict) -> str:
    parts = [f"{chosen['lr']:.2g}"]
    if "other_lr" in chosen:
        parts.append(f"θ {chosen['other_lr']:.2g}")
    if "weight_decay" in chosen:
        parts.append(f"wd {chosen['weight_decay']:.0e}")
    return "/".join(parts)


def study_markdown(result: dict) -> str:
    cells, comparisons = result["cells"], result["comparisons"]
    lines = [
        "# Does the symmetry-invariant update help? Paired study",
        "",
        f"Data: `{result['data']}` ({result['test_images']} test images). Torch threads per "
        f"training process: {result.get('threads')}; jobs: {result.get('jobs')}. "
        f"Wall time per part (s): "
        + (", ".join(f"{k} {v:.0f}" for k, v in result.get("seconds", {}).items()) or "—")
        + ".",
        "",
        "## Comparisons (a − b in test error; paired over seeds; Holm over all rows)",
        "",
        "| arch | depth | a | b | n | mean a − b | 95 % CI (bootstrap) | images /10k | "
        "p (paired t) | p (Wilcoxon) | p Holm |",
        "|---|---:|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        effect = "—" if c["effect_images"] is None else f"{c['effect_images']:+.1f}"
        lines.append(
            f"| {c['arch']} | {c['depth']} | {c['a']} | {c['b']} | {c['n']} | "
            f"{c['mean_diff']:+.4f} | [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | {effect} | "
            f"{_p(c['p_paired'])} | {_p(c['p_wilcoxon'])} | {_p(c['p_holm'])} |"
        )
    lines += [
        "",
        "## Cells",
        "",
        "| arch | depth | method | runs | test error (mean ± std) | chosen rates | "
        "interior | epochs (median) | stops | undone epochs | filter norm (mean) | "
        "cell s |",
        "|---|---:|---|---:|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for c in cells:
        errors = c["test_errors"]
        std = statistics.stdev(errors) if len(errors) > 1 else 0.0
        rates = sorted({_rate(x) for x in c["chosen"]})
        rates_text = ", ".join(rates[:4]) + (" …" if len(rates) > 4 else "")
        stops: dict[str, int] = {}
        for reason in c["stop_reasons"]:
            stops[reason] = stops.get(reason, 0) + 1
        interior = (
            "—"
            if not c["interior"] or None in c["interior"]
            else f"{sum(c['interior'])}/{len(c['interior'])}"
        )
        undone = (
            "—" if c["undone_epochs"] is None else f"{statistics.fmean(c['undone_epochs']):.1f}"
        )
        norms = [statistics.fmean(n) for n in (c["filter_norms"] or []) if n]
        norm = f"{statistics.fmean(norms):.2f}" if norms else "—"
        lines.append(
            f"| {c['arch']} | {c['depth']} | {c['label']} | {len(errors)} | "
            f"{statistics.fmean(errors):.4f} ± {std:.4f} | {rates_text} | {interior} | "
            f"{statistics.median(c['epochs']):g} | "
            + ", ".join(f"{k} {v}" for k, v in sorted(stops.items()))
            + f" | {undone} | {norm} | {c['seconds']:.0f} |"
        )
    lines += ["", "Protocols (exact):", ""]
    for arch, protocol in result["protocol"].items():
        if protocol is not None:
            lines.append(f"- {arch}: " + ", ".join(f"{k}={v}" for k, v in protocol.items()))
    lines += ["", "![study](study.png)", ""]
    return "\n".join(lines)


def plot_study(result: dict, path: Path) -> None:
    """Each comparison's mean difference with its bootstrap CI."""
    comparisons = result["comparisons"]
    with figure(path, figsize=(8, 0.35 * max(len(comparisons), 4) + 1.5), dpi=120) as (_, ax):
        ys = list(range(len(comparisons)))[::-1]
        for y, c in zip(ys, comparisons):
            colour = "C3" if c.get("p_holm", 1) < 0.05 else "C0"
            ax.errorbar(
                [c["mean_diff"]],
                [y],
                xerr=[[c["mean_diff"] - c["ci_low"]], [c["ci_high"] - c["mean_diff"]]],
                fmt="o",
                color=colour,
                capsize=3,
            )
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_yticks(
            ys,
            [f"{c['arch']} d{c['depth']}: {c['a']} − {c['b']} (n={c['n']})" for c in comparisons],
        )
        ax.set_xlabel(
            "mean paired difference in test error (95 % bootstrap CI; red: Holm p < 0.05)"
        )
        ax.set_title("Does the symmetry-invariant update help?")
