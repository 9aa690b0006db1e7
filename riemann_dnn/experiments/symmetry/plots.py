"""The analysis' picture: :func:`plot_symmetry`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..records import figure
from .rescaling import EXACT_EPS

__all__ = ["plot_symmetry"]


def plot_symmetry(result: dict[str, Any], path: str | Path) -> Path:
    """Four panels: |∇w̃_i|/|∇w_i| against α_i (slope −1), loss per step for each copy and
    method, the distance between the copies' normalised W1 (log scale), and the loss spread."""
    traj = result["trajectories"]
    checks = result["invariance"]
    key = next((k for k in checks if k == f"float64, eps={EXACT_EPS:g}"), next(iter(checks)))
    with figure(path, 2, 2, figsize=(11, 8), dpi=110) as (fig, axes):
        _gradient_panel(axes[0, 0], checks[key], key)
        _loss_panel(axes[0, 1], traj)
        _distance_panel(axes[1, 0], traj)
        _spread_panel(axes[1, 1], traj)
        fig.suptitle(f"ArchBN depth {result['config']['depth']}: rescaling symmetry (paper §2–3)")
    return Path(path)


_COLORS = {"bsgd": "tab:red", "un": "tab:blue"}
_FLOOR = 1e-17  # an exact 0 on a log axis


def _gradient_panel(ax, check: dict[str, Any], key: str) -> None:
    for name, ratio in check["gradient_ratio"].items():
        ax.loglog(ratio["alpha"], ratio["ratio"], ".", label=name)
    grid = [check["alpha_min"], check["alpha_max"]]
    ax.loglog(grid, [1 / a for a in grid], "k--", lw=1, label="1/α")
    ax.set(
        xlabel="α_i (filter scale)",
        ylabel="‖∇w̃_i‖ / ‖∇w_i‖",
        title=f"(b) Euclidean gradient scales as 1/α ({key})",
    )
    ax.legend(fontsize=8)


def _loss_panel(ax, traj: dict[str, Any]) -> None:
    from matplotlib import colormaps

    palettes = {"bsgd": colormaps["Reds"], "un": colormaps["Blues"]}
    styles = ["-", "--", ":", "-."]
    window = max(1, traj["steps"] // 30)
    for method, rec in traj["methods"].items():
        for j, loss in enumerate(rec["loss"]):
            shade = palettes[method](0.9 - 0.45 * j / max(1, len(rec["loss"]) - 1))
            ax.plot(
                range(window - 1, len(loss)),
                _running_mean(loss, window),
                color=shade,
                lw=1,
                ls=styles[j % len(styles)],
                label=f"{rec['label']}, copy {j}",
            )
    ax.set(
        xlabel="step",
        ylabel=f"minibatch loss (mean of {window} steps)",
        yscale="log",
        title=f"loss of {traj['copies']} rescaled copies (UN copies overlap)",
    )
    ax.legend(fontsize=7)


def _distance_panel(ax, traj: dict[str, Any]) -> None:
    first = traj["names"][0]
    for method, rec in traj["methods"].items():
        ax.semilogy(
            [max(d, _FLOOR) for d in rec["filter_distance"][first]],
            color=_COLORS[method],
            label=rec["label"],
        )
    ax.set(
        xlabel="step",
        ylabel="max_j ‖Ŵ1^(j) − Ŵ1^(0)‖_F",
        title="distance between the copies' unit-normalised W1",
    )
    ax.legend(fontsize=8)


def _spread_panel(ax, traj: dict[str, Any]) -> None:
    for method, rec in traj["methods"].items():
        ax.semilogy(
            [max(d, _FLOOR) for d in rec["loss_spread"]],
            color=_COLORS[method],
            lw=1,
            label=rec["label"],
        )
    ax.set(
        xlabel="step",
        ylabel="max_j |L^(j) − L^(0)|",
        title=f"loss spread between copies (exact 0 drawn at {_FLOOR:g})",
    )
    ax.legend(fontsize=8, loc="best")


def _running_mean(values: Sequence[float], window: int) -> list[float]:
    sums = [0.0]
    for v in values:
        sums.append(sums[-1] + v)
    return [(sums[i] - sums[i - window]) / window for i in range(window, len(sums))]
