"""The bench's plots: time against size, :math:`e(t)` against :math:`t`, drift against steps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .order import _fmt_order

_STYLE = {"normalize": "o-", "exp": "s-", "qr": "^-", "polar": "v-", "cayley": "D-"}


def _plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r["family"] for r in results["timing"]))
    sizes = list(results["config"]["sizes"])
    paths = []
    fig, axes = plt.subplots(
        1, max(len(families), 1), figsize=(5 * max(len(families), 1), 4), squeeze=False
    )
    for ax, family in zip(axes[0], families):
        rows = [r for r in results["timing"] if r["family"] == family]
        for retraction in dict.fromkeys(r["retraction"] for r in rows):
            for dtype, fill in (("float32", "full"), ("float64", "none")):
                pts = [
                    (sizes.index(r["size"]), r["seconds"])
                    for r in rows
                    if r["retraction"] == retraction and r["dtype"] == dtype
                ]
                if pts:
                    ax.plot(
                        *zip(*sorted(pts)),
                        _STYLE.get(retraction, "o-"),
                        fillstyle=fill,
                        color=f"C{list(_STYLE).index(retraction)}",
                        label=f"{retraction} {dtype}",
                    )
        ax.set_xticks(range(len(sizes)), [s.replace("x", "×") for s in sizes])
        ax.set_yscale("log")
        ax.set_xlabel("weight p×n (p filters of size n)")
        ax.set_ylabel("seconds per call (median)")
        ax.set_title(f"{family}")
        ax.legend(fontsize=7)
    fig.suptitle(f"Retraction time vs size ({results['config']['device']})")
    fig.tight_layout()
    paths.append(out / "retractions_time.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(
        1, max(len(families), 1), figsize=(5 * max(len(families), 1), 4), squeeze=False
    )
    for ax, family in zip(axes[0], families):
        for row in (r for r in results["orders"] if r["family"] == family):
            ts, errors = np.array(row["ts"]), np.array(row["errors"])
            slope, theory = float(row["slope"]), float(row["theory_order"])
            if math.isinf(slope):
                continue
            positive = errors > 0
            ax.plot(
                ts[positive],
                errors[positive],
                _STYLE.get(row["retraction"], "o-"),
                color=f"C{list(_STYLE).index(row['retraction'])}",
                label=f"{row['retraction']}: slope {_fmt_order(slope)} "
                f"(order {_fmt_order(theory)} → {_fmt_order(theory + 1)})",
            )
            if np.isfinite(slope):
                ax.axvspan(row["fit_t_min"], row["fit_t_max"], alpha=0.04, color="k")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_ylabel("d(R(x, tv), exp(x, tv))")
        ax.set_title(f"{family} (float64, {results['config']['order_size']})")
        ax.legend(fontsize=7)
    fig.suptitle("Agreement with the exponential map (shaded: fitted range)")
    fig.tight_layout()
    paths.append(out / "retractions_order.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if results["drift"]:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for index, row in enumerate(results["drift"]):
            pts = sorted((int(k), max(v, 1e-12)) for k, v in row["curve"].items())
            ax.plot(
                *zip(*pts),
                _STYLE.get(row["retraction"], "o-"),
                color=f"C{index % 10}",
                label=f"{row['family']} {row['retraction']} ({row['size']})",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("chained steps k (float32)")
        ax.set_ylabel("constraint violation")
        ax.set_title("Drift from the manifold")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "retractions_drift.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
