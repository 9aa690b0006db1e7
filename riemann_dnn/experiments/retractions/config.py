"""What the retraction bench compares: the manifold families and their retractions, the
ArchBN variants, the step lengths and ``t`` grid of the measurements, and the manifold of a
``p x n`` weight."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...manifolds import Grassmann, Oblique, Stiefel

__all__ = [
    "RETRACTIONS",
    "ARCHBN_VARIANTS",
    "ONE_STEP",
    "DRIFT_STEP",
    "ORDER_TS",
    "ORDER_T_MAX",
    "parse_size",
    "build_manifold",
]

#: Manifold family -> retractions compared (each family's ``retractions`` dict gives the
#: theoretical order of agreement with exp).
RETRACTIONS: dict[str, tuple[str, ...]] = {
    "oblique": ("normalize", "exp"),
    "stiefel": ("qr", "polar", "cayley", "exp"),
    "grassmann": ("qr", "polar", "exp"),
}

#: ArchBN variants trained by the bench: (method, constraint, retraction). "bsgd" is the
#: Euclidean reference. The protocol uses no momentum, so the transport does not matter.
ARCHBN_VARIANTS: tuple[tuple[str, str, str | None], ...] = (
    ("bsgd", "oblique", None),
    ("un", "oblique", "normalize"),
    ("un", "oblique", "exp"),
    ("un", "stiefel", "qr"),
    ("un", "stiefel", "polar"),
    ("un", "stiefel", "cayley"),
    ("un", "stiefel", "exp"),
    ("un", "grassmann", "qr"),
    ("un", "grassmann", "polar"),
    ("un", "grassmann", "exp"),
)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
ONE_STEP = 0.1  # |U|_F / sqrt(p) for the single-call measurement
DRIFT_STEP = 0.01  # |U|_F / sqrt(p) for each of the chained steps
ORDER_TS = tuple(float(t) for t in np.logspace(0, -5, 16))
ORDER_T_MAX = 0.1  # fit only t <= this (the asymptotic regime)


def parse_size(text: str) -> tuple[int, int]:
    """``"64x784"`` -> ``(64, 784)``: ``p`` filters of size ``n``."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        rows, cols = (int(part) for part in parts)
    except ValueError:
        raise ValueError(
            f"size {text!r}: expected ROWSxCOLS (filters x filter size), e.g. 64x784"
        ) from None
    if rows < 1 or cols < 1:
        raise ValueError(f"size {text!r}: both dimensions must be >= 1")
    return rows, cols


def build_manifold(family: str, retraction: str, rows: int, cols: int):
    """The manifold of ``family`` for a ``rows x cols`` weight, or ``None`` when it has
    dimension 0 (Grassmann of a square weight)."""
    low, high = min(rows, cols), max(rows, cols)
    if family == "oblique":
        return Oblique(rows, cols, unit="rows", retraction=retraction)
    if family == "stiefel":
        return Stiefel(high, low, retraction=retraction)
    if family == "grassmann":
        return None if low == high else Grassmann(high, low, retraction=retraction)
    raise ValueError(f"unknown manifold family {family!r}; choose from {sorted(RETRACTIONS)}")


def cells_of(families: Sequence[str], sizes: Sequence[tuple[int, int]]):
    """``(family, retraction, (rows, cols), manifold)`` for every cell with a manifold."""
    for family in families:
        for rows, cols in sizes:
            for retraction in RETRACTIONS[family]:
                manifold = build_manifold(family, retraction, rows, cols)
                if manifold is not None:
                    yield family, retraction, (rows, cols), manifold


def size_name(size: tuple[int, int]) -> str:
    """``"rowsxcols"``, as sizes are written in the reports."""
    return f"{size[0]}x{size[1]}"
