"""Helpers shared by the optimizers' functional forms (see
:func:`~riemann_dnn.optim.riemannian_sgd`): working precision, which parameters take the
row-fused kernel, rates per copy, and parameter-shaped state tensors. Which manifold takes
which path is read from the facts the manifolds declare (``unit_norm_axis``,
``broadcasts_over_copies``).
"""

from __future__ import annotations

import torch

from ..manifolds import working_dtype
from ..params import Geometry
from ..step import unit_norm_axis

__all__: list[str] = []


def work(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in its working precision (:func:`~riemann_dnn.manifolds.working_dtype`)."""
    dtype = working_dtype(tensor.dtype)
    return tensor if dtype == tensor.dtype else tensor.to(dtype)


def takes_row_kernel(param: torch.Tensor, geometry: Geometry) -> bool:
    """Unit rows (oblique filters), the normalize retraction, projection transport, on the
    CPU: the row-fused kernel's case."""
    return (
        param.device.type == "cpu"
        and unit_norm_axis(geometry.manifold) == -1
        and param.dtype in ROW_KERNEL_DTYPES
    )


#: The dtypes the row-fused kernel takes (it steps half points in float32 itself).
ROW_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: The dtypes the in-place sphere kernel takes: it steps in the point's own dtype, so half
#: points take the shared step in their working precision instead.
SPHERE_KERNEL_DTYPES = (torch.float32, torch.float64)


def rate_for(hp, point: torch.Tensor):
    """``hp`` with a per-copy rate (shape ``(copies,)``) shaped to broadcast over
    ``point`` (``(copies, ...)``) in the point's working precision."""
    lr = hp.lr
    if isinstance(lr, torch.Tensor) and lr.ndim == 1:
        lr = lr.to(device=point.device, dtype=work(point).dtype).view(
            -1, *([1] * (point.ndim - 1))
        )
        return hp._replace(lr=lr)
    return hp


def store_buffer(new_buf, param, view):
    """A parameter-shaped (float32 for half parameters) tensor holding the point-shaped
    buffer ``new_buf``."""
    if new_buf is None:
        return None
    storage = torch.empty_like(param, dtype=work(param).dtype)
    view(storage).copy_(new_buf)
    return storage


def broadcasts_over_copies(manifold) -> bool:
    """Whether the manifold's formulas broadcast over a leading stack axis (its declared
    ``broadcasts_over_copies``; Sphere's do not: its norms run over the whole array)."""
    return getattr(manifold, "broadcasts_over_copies", False)
