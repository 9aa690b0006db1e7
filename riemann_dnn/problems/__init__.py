"""Problem definitions: classic problems with closed-form optima (and, later, ArchBN, SegNet)."""

from .classic import (
    closest_unit_rows,
    closest_unit_rows_solution,
    dominant_eigenvector,
    dominant_eigenvector_solution,
    dominant_subspace,
    dominant_subspace_solution,
)

__all__ = [
    "dominant_eigenvector",
    "dominant_eigenvector_solution",
    "dominant_subspace",
    "dominant_subspace_solution",
    "closest_unit_rows",
    "closest_unit_rows_solution",
]
