"""The files of ``riemann-dnn bench stochastic``: ``stochastic.json`` (every curve),
``stochastic.md`` (the tables) and ``stochastic.png`` (optimality gap against passes and
against seconds; test RMSE against passes for matrix completion), all through
:mod:`riemann_dnn.experiments.records`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..records import figure, write_json, write_text

__all__ = ["stochastic_markdown", "write_stochastic_report", "plot_stochastic", "summary_rows"]

_LABELS = {"sgd": "R-SGD", "svrg": "R-SVRG", "srg": "R-SRG"}
_COLOURS = {"sgd": "tab:gray", "svrg": "tab:blue", "srg": "tab:orange"}
_STYLES = {"exp": "-", "qr": "--", "polar": ":"}
_FLOOR = 1e-16


def _fmt(value: Any, spec: str = ".1e") -> str:
    return "—" if value is None else format(value, spec)


def summary_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (solver, retraction, transport): medians over the seeds."""
    groups: dict[tuple, list] = {}
    for run in entry["runs"]:
        groups.setdefault((run["solver"], run["retraction"], run["transport"]), []).append(run)
    rows = []
    for (solver, retraction, transport), runs in groups.items():

        def median(key: str, runs: list = runs) -> Any:
            values = [r[key] for r in runs]
            if any(v is None for v in values):
                return None
            return float(np.median(values))

        rows.append(
            {
                "solver": solver,
                "retraction": retraction,
                "transport": transport,
                "seeds": len(runs),
                "final_gap": median("final_gap"),
                "passes_to_1e-6": median("passes_to_1e-6"),
                "passes_to_1e-10": median("passes_to_1e-10"),
                "rate": median("rate"),
                "final_test_rmse": median("final_test_rmse")
                if "final_test_rmse" in runs[0]
                else None,
                "seconds": float(np.median([r["solve_time"][-1] for r in runs])),
            }
        )
    return rows


def _describe(name: str, entry: dict[str, Any]) -> str:
    d = entry["description"]
    if name == "pca-synthetic":
        return (
            f"PCA on Gr({d['dim']}, {d['rank']}), N = {d['num_samples']:,} synthetic samples with "
            f"the spectrum of `pca_spectrum` (relative eigengap 1 − λ{d['rank'] + 1}/λ{d['rank']}"
            f" = {d['eigengap']}), scaled to mean ‖x‖² = 1"
        )
    if name == "pca-mnist":
        return (
            f"PCA on Gr({d['dim']}, {d['rank']}), the first {d['num_samples']:,} MNIST training "
            f"images ({d['mnist_source']}) as pixel vectors in [0, 1], centred and scaled to "
            f"mean ‖x‖² = 1; "
            f"relative eigengap 1 − λ{d['rank'] + 1}/λ{d['rank']} = {d['eigengap']:.3f}"
        )
    return (
        f"Matrix completion on Gr({d['dim']}, {d['rank']}), N = {d['num_samples']:,} rows of a "
        f"random rank-{d['rank']} matrix, {d['observed_per_row']} observed entries per row "
        f"(oversampling {d['oversampling']}), no noise (f* = 0)"
    )


def _rule(c: dict[str, Any]) -> str:
    grids = (
        f"fixed α ∈ {list(c['vr_steps'])}; (λ0, K in passes) ∈ {[list(s) for s in c['sgd_steps']]}"
    )
    if len(c["vr_steps"]) == 1 and len(c["sgd_steps"]) == 1:
        return f"given, not chosen ({grids}; --full chooses them on grids)."
    return (
        f"chosen per problem and solver over the grid ({grids}) with the polar retraction "
        f"and projection transport: the lowest median final gap (below 1e-12 counts as "
        f"equal), then the fewest passes to 1e-10."
    )


def stochastic_markdown(results: dict[str, Any]) -> str:
    """The bench as Markdown: per problem, the chosen steps and one row per solver,
    retraction and transport (medians over the seeds; seconds are solve time on this
    machine, without the statistics)."""
    c = results["config"]
    lines = [
        "# Stochastic solvers on finite sums: R-SGD, R-SVRG, R-SRG",
        "",
        f"Batch size {c['batch_size']}, {c['passes']:g} passes over the data, seeds "
        f"{', '.join(map(str, c['seeds']))} (paired: one initial point and one sampling "
        f"stream per seed), device {c['device']}. A pass is N component gradients; R-SVRG "
        f"and R-SRG take m = ⌈N/b⌉ inner iterations and a fixed step, R-SGD "
        f"λ0/(1 + k/K). Steps: {_rule(c)} Rate: slope of log10(gap) per pass where "
        f"1e-12 ≤ gap ≤ 1e-3.",
    ]
    for name, entry in results["problems"].items():
        steps = ", ".join(f"{_LABELS[s]} {v}" for s, v in entry["chosen_step"].items())
        lines += [
            "",
            f"## {name}",
            "",
            _describe(name, entry) + ".",
            "",
            f"Chosen steps: {steps}.",
            "",
        ]
        has_rmse = any(r["final_test_rmse"] is not None for r in summary_rows(entry))
        head = "| solver | retraction | transport | final gap | passes to 1e-6 | passes to 1e-10 | rate (log10/pass) |"
        rule = "|---|---|---|---|---|---|---|"
        if has_rmse:
            head += " test RMSE |"
            rule += "---|"
        lines += [head + " seconds |", rule + "---|"]
        for row in summary_rows(entry):
            cells = [
                _LABELS[row["solver"]],
                row["retraction"],
                row["transport"] or "—",
                _fmt(row["final_gap"]),
                _fmt(row["passes_to_1e-6"], ".1f"),
                _fmt(row["passes_to_1e-10"], ".1f"),
                _fmt(row["rate"], ".3f"),
            ]
            if has_rmse:
                cells.append(_fmt(row["final_test_rmse"], ".2e"))
            cells.append(_fmt(row["seconds"], ".2f"))
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![optimality gap against passes and seconds](stochastic.png)", ""]
    return "\n".join(lines)


def plot_stochastic(results: dict[str, Any], path: str | Path) -> Path:
    """Per problem (a row): optimality gap against passes, against solve seconds, and (matrix
    completion) test RMSE against passes; colour = solver, line style = retraction."""
    names = list(results["problems"])
    with figure(path, len(names), 3, figsize=(15, 3.8 * len(names)), squeeze=False, dpi=100) as (
        fig,
        axes,
    ):
        for row, name in zip(axes, names):
            entry = results["problems"][name]
            seed = results["config"]["seeds"][0]
            for run in entry["runs"]:
                if run["seed"] != seed:
                    continue
                style = dict(
                    color=_COLOURS[run["solver"]],
                    linestyle=_STYLES.get(run["retraction"], "-"),
                    linewidth=1.0,
                )
                gaps = np.maximum(np.array(run["gap"]), _FLOOR)
                row[0].semilogy(run["passes"], gaps, **style)
                row[1].semilogy(run["solve_time"], gaps, **style)
                if "test_rmse" in run:
                    row[2].semilogy(run["passes"], run["test_rmse"], **style)
            row[0].set(xlabel="passes over the data", ylabel="optimality gap", title=name)
            row[1].set(xlabel="solve time [s]", ylabel="optimality gap", title=name)
            if name == "completion":
                row[2].set(xlabel="passes over the data", ylabel="test RMSE", title=name)
            else:
                row[2].axis("off")
            row[0].legend(handles=_legend(), fontsize=7)
        fig.suptitle(
            f"Optimality gap (floored at {_FLOOR:g}), seed {results['config']['seeds'][0]}: "
            "colour = solver, line = retraction (the transports' curves overlap)"
        )
    return Path(path)


def _legend() -> list:
    from matplotlib.lines import Line2D

    solvers = [Line2D([], [], color=c, label=_LABELS[s]) for s, c in _COLOURS.items()]
    lines = [Line2D([], [], color="black", linestyle=ls, label=r) for r, ls in _STYLES.items()]
    return solvers + lines


def write_stochastic_report(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``stochastic.json``, ``stochastic.md`` and ``stochastic.png`` into ``out_dir``."""
    out = Path(out_dir)
    return [
        write_json(out / "stochastic.json", results),
        write_text(out / "stochastic.md", stochastic_markdown(results)),
        plot_stochastic(results, out / "stochastic.png"),
    ]
