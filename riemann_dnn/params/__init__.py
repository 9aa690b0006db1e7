"""Which parameter lives on which manifold: param groups by rule (BatchNorm-fed weights on the
oblique manifold), and the :class:`Geometry` that views a parameter tensor as a manifold point.

Used by both doors, :class:`riemann_dnn.optim.RiemannianSGD` and
:class:`riemann_dnn.solvers.ModuleProblem`; imports only :mod:`riemann_dnn.manifolds`."""

from .geometry import MANIFOLD_NAMES, Geometry, resolve_geometry
from .groups import param_groups, scale_invariant_weights, verify_scale_invariance
from .parameter import ManifoldParameter

__all__ = [
    "param_groups",
    "scale_invariant_weights",
    "verify_scale_invariance",
    "Geometry",
    "MANIFOLD_NAMES",
    "resolve_geometry",
    "ManifoldParameter",
]
