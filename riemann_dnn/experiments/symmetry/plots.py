"""The analysis' picture: :func:`plot_symmetry`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .rescaling import EXACT_EPS

__all__ = ["plot_symmetry"]


def plot_symmetry(result: dict[str, Any], path: str | Path) -> Path:
    """Four panels: |∇w̃_i|/|∇w_i| against α_i (slope −1), loss per step for each copy and
    method, the distance between the copies' normalised W1 (log scale), and the loss spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj = result["trajectories"]
    checks = result["invariance"]
    key = next((k for k in checks if k == f"float64, eps={EXACT_EPS:g}"), next(iter(checks)))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    for name, ratio in checks[key]["gradient_ratio"].items():
        ax.loglog(ratio["alpha"], ratio["ratio"], ".", label=name)
    grid = [checks[key]["alpha_min"], checks[key]["alpha_max"]]
    ax.loglog(grid, [1 / a for a in grid], "k--", lw=1, label="1/α")
    ax.set(
        xlabel="α_i (filter scale)",
        ylabel="‖∇w̃_i‖ / ‖∇w_i‖",
        title=f"(b) Euclidean gradient scales as 1/α ({key})",
    )
    ax.legend(fontsize=8)

    palettes = {"bsgd": plt.cm.Reds, "un": plt.cm.Blues}
    styles = ["-", "--", ":", "-."]
    ax = axes[0, 1]
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

    first, floor = traj["names"][0], 1e-17
    colors = {"bsgd": "tab:red", "un": "tab:blue"}
    ax = axes[1, 0]
    for method, rec in traj["methods"].items():
        ax.semilogy(
            [max(d, floor) for d in rec["filter_distance"][first]],
            color=colors[method],
            label=rec["label"],
        )
    ax.set(
        xlabel="step",
        ylabel="max_j ‖Ŵ1^(j) − Ŵ1^(0)‖_F",
        title="distance between the copies' unit-normalised W1",
    )
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    for method, rec in traj["methods"].items():
        ax.semilogy(
            [max(d, floor) for d in rec["loss_spread"]],
            color=colors[method],
            lw=1,
            label=rec["label"],
        )
    ax.set(
        xlabel="step",
        ylabel="max_j |L^(j) − L^(0)|",
        title=f"loss spread between copies (exact 0 drawn at {floor:g})",
    )
    ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"ArchBN depth {result['config']['depth']}: rescaling symmetry (paper §2–3)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _running_mean(values: Sequence[float], window: int) -> list[float]:
    sums = [0.0]
    for v in values:
        sums.append(sums[-1] + v)
    return [(sums[i] - sums[i - window]) / window for i in range(window, len(sums))]
