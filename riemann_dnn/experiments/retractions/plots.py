"""The bench's plots: time against size, :math:`e(t)` against :math:`t`, drift against steps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..records import figure
from .order import format_order

__all__ = ["plot_retractions"]

_STYLE = {"normalize": "o-", "exp": "s-", "qr": "^-", "polar": "v-", "cayley": "D-"}


def plot_retractions(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``retractions_time.png`` (time per call against size, per manifold),
    ``retractions_order.png`` (:math:`e(t)` against :math:`t`, shaded: the fitted range) and,
    when the drift was measured, ``retractions_drift.png`` into ``out_dir``; returns the
    paths."""
    out = Path(out_dir)
    families = list(dict.fromkeys(r["family"] for r in results["timing"]))
    sizes = list(results["config"]["sizes"])
    panels = max(len(families), 1)
    paths = [out / "retractions_time.png", out / "retractions_order.png"]
    with figure(paths[0], 1, panels, figsize=(5 * panels, 4), squeeze=False, dpi=110) as (
        fig,
        axes,
    ):
        for ax, family in zip(axes[0], families):
            _time_panel(ax, family, [r for r in results["timing"] if r["family"] == family], sizes)
        fig.suptitle(f"Retraction time vs size ({results['config']['device']})")

    with figure(paths[1], 1, panels, figsize=(5 * panels, 4), squeeze=False, dpi=110) as (
        fig,
        axes,
    ):
        for ax, family in zip(axes[0], families):
            _order_panel(ax, [r for r in results["orders"] if r["family"] == family])
            ax.set_title(f"{family} (float64, {results['config']['order_size']})")
        fig.suptitle("Agreement with the exponential map (shaded: fitted range)")

    if results["drift"]:
        paths.append(out / "retractions_drift.png")
        with figure(paths[-1], figsize=(6.5, 4.5), dpi=110) as (_, ax):
            _drift_panel(ax, results["drift"])
    return paths


def _time_panel(ax, family: str, rows: list[dict[str, Any]], sizes: list[str]) -> None:
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


def _order_panel(ax, rows: list[dict[str, Any]]) -> None:
    for row in rows:
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
            label=f"{row['retraction']}: slope {format_order(slope)} "
            f"(order {format_order(theory)} → {format_order(theory + 1)})",
        )
        if np.isfinite(slope):
            ax.axvspan(row["fit_t_min"], row["fit_t_max"], alpha=0.04, color="k")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("d(R(x, tv), exp(x, tv))")
    ax.legend(fontsize=7)


def _drift_panel(ax, drift: list[dict[str, Any]]) -> None:
    for index, row in enumerate(drift):
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
