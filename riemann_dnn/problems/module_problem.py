"""Deprecated: moved to :mod:`riemann_dnn.solvers.module_problem`.

The old path works, with a ``DeprecationWarning``, until the next release.
"""

from .._deprecated import moved_module

__getattr__, __all__ = moved_module(__name__, "riemann_dnn.solvers.module_problem")
