"""Deprecated: moved to :mod:`riemann_dnn.models.segnet`.

The old path works, with a ``DeprecationWarning``, until the next release.
"""

from .._deprecated import moved_module

__getattr__, __all__ = moved_module(__name__, "riemann_dnn.models.segnet")
