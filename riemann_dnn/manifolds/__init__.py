"""Manifolds on numpy arrays and torch tensors (CPU or GPU), drop-in for pymanopt's.

Each class subclasses :class:`pymanopt.manifolds.manifold.Manifold`, takes the same
constructor arguments as pymanopt's class of the same name, and adds a choice of
retraction by name (``retraction=...``) and torch support (points stay on their device).
"""

from . import _array
from ._array import namespace as array_namespace
from ._array import working_dtype
from .base import TRANSPORTS, EmbeddedManifold
from .euclidean import Euclidean
from .grassmann import Grassmann
from .oblique import Oblique, filter_matrix
from .product import Product
from .sphere import Sphere
from .stiefel import Stiefel

#: The arrays every manifold method takes and returns, a ``numpy.ndarray`` or a
#: ``torch.Tensor`` (any device, any floating dtype; a list of them on a ``Product``). An
#: alias of ``typing.Any`` for type checkers; methods return the kind, dtype and device they
#: got.
Array = _array.Array

__all__ = [
    "Array",
    "working_dtype",
    "array_namespace",
    "EmbeddedManifold",
    "Euclidean",
    "Sphere",
    "Oblique",
    "Stiefel",
    "Grassmann",
    "Product",
    "filter_matrix",
    "TRANSPORTS",
]
