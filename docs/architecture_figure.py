"""Draw docs/img/architecture.png: the layers of riemann_dnn and the path of one learning rate.

Run ``python docs/architecture_figure.py`` after changing the layout (the figure is committed).
"""

from __future__ import annotations

from pathlib import Path

from riemann_dnn.experiments.records import figure

# (row from the bottom, column, width, name, what it holds); the rows follow the import rules
# of docs/architecture.md (tests/test_layers.py)
BOXES = [
    (
        0,
        0,
        3.9,
        "manifolds/",
        "Euclidean, Sphere, Oblique, Stiefel, Grassmann, Product",
    ),
    (0, 4.1, 1.9, "function, autodiff", "pymanopt backend"),
    (1, 0, 6, "step/", "the one Riemannian SGD step; native/ C kernel, eager fallback"),
    (2, 0, 1.9, "params/", "which weight on which manifold"),
    (2, 2.05, 1.9, "optim/", "RiemannianSGD, BoldDriver"),
    (2, 4.1, 1.9, "problems/", "finite sums, classic"),
    (3, 0, 2.9, "solvers/", "StochasticGradient, ..."),
    (3, 3.1, 1.4, "models/", "ArchBN, SegNet"),
    (3, 4.6, 1.4, "data/", "MNIST, scenes"),
    (
        4,
        0,
        6,
        "experiments/",
        "config, runs, epoch (one loop), protocol (train_runs); table2, study, ...",
    ),
    (5, 0, 6, "cli/", "riemann-dnn: one options module, thin subcommands"),
]

# the learning rate of one run of `reproduce table2`, top to bottom
LR_PATH = [
    "--lr-candidates (floats)",
    "Protocol.lr_candidates",
    "candidate {'lr': r}",
    "rate_tensor: float64 (via float32)",
    "group['lr'] (Ensemble.set_lr)",
    "BoldDriver.rates -> group['lr']",
    "kernel reads group['lr']",
]


def main(path: Path = Path(__file__).parent / "img" / "architecture.png") -> None:
    with figure(path, figsize=(11, 6.2), dpi=110) as (fig, ax):
        from matplotlib.patches import FancyBboxPatch

        for row, col, width, name, text in BOXES:
            ax.add_patch(
                FancyBboxPatch(
                    (col, row), width, 0.8, boxstyle="round,pad=0.02", fc="#e8f0fb", ec="#3465a4"
                )
            )
            ax.text(col + 0.1, row + 0.52, name, weight="bold", fontsize=9.5, va="center")
            ax.text(col + 0.1, row + 0.22, text, fontsize=7.5, va="center", wrap=True)
        ax.annotate(
            "", xy=(6.4, 0.2), xytext=(6.4, 5.6), arrowprops={"arrowstyle": "->", "lw": 1.5}
        )
        ax.text(6.45, 2.9, "imports\npoint\ndown", fontsize=8, style="italic")
        for k, label in enumerate(LR_PATH):
            y = 5.4 - k * 0.85
            ax.text(7.0, y, label, fontsize=8.5, family="monospace", va="center")
            if k:
                ax.annotate(
                    "",
                    xy=(6.95, y + 0.12),
                    xytext=(6.95, y + 0.73),
                    arrowprops={"arrowstyle": "->", "color": "#c4561c"},
                )
        ax.text(7.0, 5.85, "one learning rate, CLI to kernel", fontsize=9, color="#c4561c")
        ax.set_xlim(-0.2, 10.9)
        ax.set_ylim(-0.2, 6.1)
        ax.axis("off")


if __name__ == "__main__":
    main()
