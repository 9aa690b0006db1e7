"""Manifolds on numpy arrays and torch tensors (CPU or GPU), drop-in for pymanopt's.

Each class subclasses :class:`pymanopt.manifolds.manifold.Manifold`, takes the same
constructor arguments as pymanopt's class of the same name, and adds a choice of
retraction by name (``retraction=...``) and torch support (points stay on their device).
"""

from .base import EmbeddedManifold
from .euclidean import Euclidean
from .grassmann import Grassmann
from .oblique import Oblique, filter_matrix
from .product import Product
from .sphere import Sphere
from .stiefel import Stiefel

__all__ = [
    "EmbeddedManifold",
    "Euclidean",
    "Sphere",
    "Oblique",
    "Stiefel",
    "Grassmann",
    "Product",
    "filter_matrix",
]
