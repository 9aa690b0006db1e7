"""Problem definitions (moving: models to :mod:`riemann_dnn.models`, problems to
:mod:`riemann_dnn.solvers`)."""

from ..models import ArchBN, ConvArchBN, SegNet, SegNetBasic
from ..solvers import (
    ModuleProblem,
    closest_unit_rows,
    closest_unit_rows_solution,
    dominant_eigenvector,
    dominant_eigenvector_solution,
    dominant_subspace,
    dominant_subspace_solution,
)

__all__ = [
    "ArchBN",
    "ConvArchBN",
    "ModuleProblem",
    "SegNet",
    "SegNetBasic",
    "dominant_eigenvector",
    "dominant_eigenvector_solution",
    "dominant_subspace",
    "dominant_subspace_solution",
    "closest_unit_rows",
    "closest_unit_rows_solution",
]
