"""Problem definitions: ArchBN, SegNet and SegNet-Basic, the generic module adapter (any ``nn.Module`` as a pymanopt
finite-sum problem), and classic problems with closed-form optima."""

from ..models import ArchBN, ConvArchBN, SegNet, SegNetBasic
from .classic import (
    closest_unit_rows,
    closest_unit_rows_solution,
    dominant_eigenvector,
    dominant_eigenvector_solution,
    dominant_subspace,
    dominant_subspace_solution,
)
from .module_problem import ModuleProblem

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
