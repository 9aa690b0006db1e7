"""Which parameter lives on which manifold: the symmetries of a model's weights (found by
following each filter's scale through a forward pass, checked numerically), param groups
built from them, and the :class:`Geometry` that views a parameter tensor as a manifold point.

Used by both doors, :class:`riemann_dnn.optim.RiemannianSGD` and
:class:`riemann_dnn.problems.ModuleProblem`; imports only :mod:`riemann_dnn.manifolds`."""

from .geometry import MANIFOLD_NAMES, Geometry, resolve_geometry
from .groups import (
    Explanation,
    explain,
    param_groups,
    scale_invariant_weights,
    verify_scale_invariance,
)
from .parameter import ManifoldParameter
from .propagation import KINDS, Symmetry, find_symmetries
from .verification import example_batch

__all__ = [
    "param_groups",
    "explain",
    "Explanation",
    "find_symmetries",
    "Symmetry",
    "KINDS",
    "example_batch",
    "scale_invariant_weights",
    "verify_scale_invariance",
    "Geometry",
    "MANIFOLD_NAMES",
    "resolve_geometry",
    "ManifoldParameter",
]
