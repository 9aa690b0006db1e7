"""Deprecated: the models moved to :mod:`riemann_dnn.models`, ``ModuleProblem`` and the
classic problems to :mod:`riemann_dnn.solvers`. These paths work, with a
``DeprecationWarning``, until the next release."""

from .._deprecated import moved_names

_HOMES = {
    "ArchBN": "riemann_dnn.models",
    "ConvArchBN": "riemann_dnn.models",
    "SegNet": "riemann_dnn.models",
    "SegNetBasic": "riemann_dnn.models",
    "ModuleProblem": "riemann_dnn.solvers",
    "dominant_eigenvector": "riemann_dnn.solvers",
    "dominant_eigenvector_solution": "riemann_dnn.solvers",
    "dominant_subspace": "riemann_dnn.solvers",
    "dominant_subspace_solution": "riemann_dnn.solvers",
    "closest_unit_rows": "riemann_dnn.solvers",
    "closest_unit_rows_solution": "riemann_dnn.solvers",
}

__all__ = list(_HOMES)
__getattr__ = moved_names(__name__, _HOMES)
