"""The row-fused native kernel of the paper's UN update (the fast path of RiemannianSGD).

:func:`oblique_sgd_` steps lists of unit-row weights in place through the torch op
``riemann_dnn::oblique_sgd_``: a C kernel (``oblique_sgd.c``) compiled at first use and
cached per user (``build.py``), or the eager torch step where it cannot run.
:class:`PreparedStep` is the same kernel laid out once over fixed tensors -- unit rows and
plain (Euclidean) ones -- so that a whole step of a small network is one C call:
:class:`~riemann_dnn.optim.RiemannianSGD` steps CPU models through it. See
``docs/kernels.md`` for the design, the measured costs and the CUDA plan.
:func:`oblique_adam_` is Riemannian Adam on unit rows, the same way
(``riemann_dnn::oblique_adam_``, ``oblique_adam.c``).
"""

from .adam_ops import (
    FiniteCheck,
    PreparedAdamRows,
    adam_native_available,
    adam_native_unavailable_reason,
    all_finite,
    oblique_adam_,
)
from .build import cache_dir
from .ops import (
    NONFINITE,
    PreparedStep,
    native_available,
    native_unavailable_reason,
    oblique_sgd_,
)

__all__ = [
    "oblique_sgd_",
    "NONFINITE",
    "PreparedStep",
    "native_available",
    "native_unavailable_reason",
    "cache_dir",
    "oblique_adam_",
    "PreparedAdamRows",
    "FiniteCheck",
    "all_finite",
    "adam_native_available",
    "adam_native_unavailable_reason",
]
