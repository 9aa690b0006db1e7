"""The layout of a prepared native kernel (see
:meth:`~riemann_dnn.optim.RiemannianOptimizer._prepare_kernel`): which param groups
qualify, and each parameter as the 2-D rows a row kernel steps -- unit rows (oblique
filters) or plain (Euclidean) rows. Shared by the optimizers' kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..params import Geometry
from ._functional import ROW_KERNEL_DTYPES, takes_row_kernel, work
from ._group import Group, is_euclidean_group

__all__: list[str] = []

GeometryOf = Callable[[torch.Tensor, Group], Geometry]


def row_layout(
    groups: list[Group], geometry_of: GeometryOf
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[bool]] | None:
    """``(params, rows, normalize)``: every parameter of ``groups``, its ``(rows, n)`` view
    and whether its rows are unit-norm (oblique) or plain (Euclidean); ``None`` when a
    group does not qualify (flags off, no parameters, another copies axis, a per-filter
    rate) or a parameter does not (not on the CPU, another dtype, not contiguous, a
    manifold other than unit rows)."""
    params, points, normalize = [], [], []
    for group in groups:
        if (
            group["foreach"] is False
            or group["fused"] is False
            or not group["params"]
            or group["copies"] != groups[0]["copies"]
            or group.get("filter_rate")
        ):
            return None
        euclidean = is_euclidean_group(group)
        for param in group["params"]:
            if (
                param.device.type != "cpu"
                or param.dtype != groups[0]["params"][0].dtype
                or param.dtype not in ROW_KERNEL_DTYPES
                or not param.is_contiguous()
            ):
                return None
            geometry = None if euclidean else geometry_of(param, group)
            if geometry is None or geometry.is_euclidean:
                points.append(plain_rows(param, group["copies"]))
                normalize.append(False)
            elif takes_row_kernel(param, geometry):
                rows = geometry.view(param)
                points.append(rows.reshape(-1, rows.shape[-1]))
                normalize.append(True)
            else:
                return None
            params.append(param)
    return params, points, normalize


def state_layout(
    params: list[torch.Tensor], state: dict, key: str
) -> tuple[list[torch.Tensor], bool] | None:
    """The state tensors ``state[p][key]`` of ``params`` for a kernel: the existing ones
    when every parameter has one of its shape, working dtype and layout; fresh (empty)
    ones, and ``True``, when none has one; else ``None`` (the eager paths take the step)."""
    tensors = [state[p].get(key) if p in state else None for p in params]
    if all(t is None for t in tensors):
        return [torch.empty_like(p, dtype=work(p).dtype) for p in params], True
    for param, tensor in zip(params, tensors):
        if (
            not isinstance(tensor, torch.Tensor)
            or tensor.dtype != work(param).dtype
            or tensor.shape != param.shape
            or tensor.device != param.device
            or not tensor.is_contiguous()
        ):
            return None
    return tensors, False


def plain_rows(param: torch.Tensor, copies: int | None) -> torch.Tensor:
    """A Euclidean parameter as rows for the plain kernel: ``(out, -1)`` (one row per
    copy and filter with copies), or one row for vectors and scalars."""
    if param.numel() == 0:
        return param.view(0, 1)
    if copies is not None:
        return (
            param.view(copies * param.shape[1], -1) if param.ndim >= 3 else param.view(copies, -1)
        )
    return param.view(param.shape[0], -1) if param.ndim >= 2 else param.view(1, -1)
