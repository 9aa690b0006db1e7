"""The functional form of :class:`~riemann_dnn.optim.RiemannianSGD`: :func:`riemannian_sgd`
and its paths, as ``torch.optim.sgd`` is to ``torch.optim.SGD``.

Parameters are split by geometry: Euclidean ones take ``torch.optim.SGD``'s own kernels;
unit-row (oblique) ones on the CPU take the row-fused kernel
(:func:`riemann_dnn.step.native.oblique_sgd_`); the rest take the shared step
(:func:`riemann_dnn.step.riemannian_sgd_step`), one call per parameter (the single-tensor
reference) or, with ``foreach``, the fused in-place sphere kernel and stacks of
same-shaped parameters (the multi-tensor path). Which manifold takes which path is read
from the facts the manifolds declare (``unit_norm_axis``, ``broadcasts_over_copies``).
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch
from torch.optim.sgd import sgd as _torch_sgd

from ..manifolds import working_dtype
from ..params import Geometry
from ..step import SGDHyperparameters, riemannian_sgd_step, sphere_sgd_step_, unit_norm_axis
from ..step.native import oblique_sgd_

__all__ = ["riemannian_sgd"]


def work(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in its working precision (:func:`~riemann_dnn.manifolds.working_dtype`)."""
    dtype = working_dtype(tensor.dtype)
    return tensor if dtype == tensor.dtype else tensor.to(dtype)


def riemannian_sgd(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor | None],
    geometries: list[Geometry] | None,
    *,
    hp: SGDHyperparameters,
    foreach: bool | None = None,
    maximize: bool = False,
    copies: int | None = None,
    fused: bool | None = None,
    found_nonfinite: torch.Tensor | None = None,
) -> None:
    """Functional form of :class:`RiemannianSGD`: updates ``params`` in place and
    ``momentum_buffers`` (list entries replaced) in place. ``geometries=None`` means every
    parameter is Euclidean. With ``copies``, every tensor has a leading axis of copies,
    ``geometries`` view it as a stack of points, and ``hp.lr`` may be a tensor of one rate
    per copy. Unit-row parameters on the CPU take the row-fused kernel
    (:func:`riemann_dnn.step.native.oblique_sgd_`) unless ``fused`` is ``False``; it
    leaves rows with a non-finite gradient untouched and sets ``found_nonfinite``."""
    if foreach is None:
        foreach = not torch.compiler.is_compiling()
    if geometries is None:
        euclidean, constrained = list(range(len(params))), []
    else:
        euclidean = [i for i, g in enumerate(geometries) if g.is_euclidean]
        constrained = [i for i, g in enumerate(geometries) if not g.is_euclidean]
    per_copy = isinstance(hp.lr, torch.Tensor) and hp.lr.ndim == 1
    if per_copy:  # the shared step, whose formulas broadcast a rate per copy
        constrained, euclidean = euclidean + constrained, []
    if euclidean:
        _euclidean_sgd(params, grads, momentum_buffers, euclidean, hp, foreach, maximize)
    if constrained and foreach and fused is not False:
        rows = [i for i in constrained if takes_row_kernel(params[i], geometries[i])]
        if rows:
            _row_fused_step(
                params, grads, momentum_buffers, geometries, rows, hp, maximize, found_nonfinite
            )
            constrained = [i for i in constrained if i not in set(rows)]
    if constrained:
        if maximize:
            grads = list(grads)
            for i in constrained:
                grads[i] = grads[i].neg()
        step = _multi_tensor_step if foreach else _single_tensor_step
        step(params, grads, momentum_buffers, geometries, constrained, hp)


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


def _row_fused_step(params, grads, bufs, geometries, indices, hp, maximize, found) -> None:
    """:func:`~riemann_dnn.step.native.oblique_sgd_` on the filter-row views."""
    views = [geometries[i].view for i in indices]
    points = [_rows(view(params[i])) for i, view in zip(indices, views)]
    new_bufs = oblique_sgd_(
        points,
        [_rows(view(grads[i])) for i, view in zip(indices, views)],
        [None if bufs[i] is None else _rows(view(bufs[i])) for i, view in zip(indices, views)],
        lr=hp.lr,
        momentum=hp.momentum,
        dampening=hp.dampening,
        nesterov=hp.nesterov,
        weight_decay=hp.weight_decay,
        maximize=maximize,
        found_nonfinite=found,
    )
    for i, buf in zip(indices, new_bufs):
        if buf is not None and bufs[i] is None:
            bufs[i] = buf.reshape(params[i].shape)  # parameter-shaped, as the other paths


def _rows(point: torch.Tensor) -> torch.Tensor:
    """A point of unit rows as ``(rows, n)``, or ``(copies, rows, n)`` for stacked copies."""
    return point if point.ndim <= 3 else point.reshape(-1, *point.shape[-2:])


def _euclidean_sgd(params, grads, bufs, indices, hp, foreach, maximize) -> None:
    """Euclidean parameters: the Riemannian step reduces to ``torch.optim.SGD``'s, whose
    kernels (foreach included) we call directly."""
    sub_bufs = [bufs[i] for i in indices]
    _torch_sgd(
        [params[i] for i in indices],
        [grads[i] for i in indices],
        sub_bufs,
        weight_decay=hp.weight_decay,
        momentum=hp.momentum,
        lr=hp.lr,
        dampening=hp.dampening,
        nesterov=hp.nesterov,
        maximize=maximize,
        foreach=foreach,
    )
    for i, buf in zip(indices, sub_bufs):
        bufs[i] = buf


def _rate_for(hp: SGDHyperparameters, point: torch.Tensor) -> SGDHyperparameters:
    """``hp`` with a per-copy rate (shape ``(copies,)``) shaped to broadcast over
    ``point`` (``(copies, ...)``) in the point's working precision."""
    lr = hp.lr
    if isinstance(lr, torch.Tensor) and lr.ndim == 1:
        lr = lr.to(device=point.device, dtype=work(point).dtype).view(
            -1, *([1] * (point.ndim - 1))
        )
        return hp._replace(lr=lr)
    return hp


def _single_tensor_step(params, grads, bufs, geometries, indices, hp) -> None:
    """The readable reference: one call of the shared step per parameter (per copy on
    manifolds whose formulas do not broadcast over a copies axis)."""
    for i in indices:
        geometry = geometries[i]
        view = geometry.view
        point = view(params[i])
        buf = bufs[i]
        stacked = isinstance(view, functools.partial)
        if stacked and not _broadcasts_over_copies(geometry.manifold):
            new_point, new_buf = _step_each_copy(
                geometry.manifold, point, view(grads[i]), None if buf is None else view(buf), hp
            )
        else:
            new_point, new_buf = riemannian_sgd_step(
                geometry.manifold,
                work(point),
                work(view(grads[i])),
                None if buf is None else view(buf),
                _rate_for(hp, point),
            )
        point.copy_(new_point)
        bufs[i] = _store_buffer(new_buf, params[i], view)


def _step_each_copy(manifold, point, grad, buf, hp):
    """The shared step on each copy ``point[k]`` with its own rate."""
    lr = hp.lr
    points, new_bufs = [], []
    for k in range(point.shape[0]):
        rate = lr[k] if isinstance(lr, torch.Tensor) and lr.ndim == 1 else lr
        x, m = riemannian_sgd_step(
            manifold,
            work(point[k]),
            work(grad[k]),
            None if buf is None else buf[k],
            hp._replace(lr=rate),
        )
        points.append(x)
        new_bufs.append(m)
    return torch.stack(points), (None if new_bufs[0] is None else torch.stack(new_bufs))


def _store_buffer(new_buf, param, view):
    """A parameter-shaped (float32 for half parameters) tensor holding the point-shaped
    buffer ``new_buf``."""
    if new_buf is None:
        return None
    storage = torch.empty_like(param, dtype=work(param).dtype)
    view(storage).copy_(new_buf)
    return storage


def _broadcasts_over_copies(manifold) -> bool:
    """Whether the manifold's formulas broadcast over a leading stack axis (its declared
    ``broadcasts_over_copies``; Sphere's do not: its norms run over the whole array)."""
    return getattr(manifold, "broadcasts_over_copies", False)


def _stack_spheres(device: torch.device) -> bool:
    """Whether same-shaped spheres are stacked for :func:`~riemann_dnn.step.sphere_sgd_step_`: on accelerators,
    where a step is bound by kernel launches, one stacked call beats a call per tensor
    despite the copies; on CPUs, in-place steps per tensor (no copies) are faster."""
    return device.type != "cpu"


def _fused_sphere_steps(params, grads, bufs, geometries, members, axis, hp) -> None:
    """:func:`~riemann_dnn.step.sphere_sgd_step_` on parameters with equal geometry keys: in place per tensor,
    or on one stack of them (:func:`_stack_spheres`)."""
    view = geometries[members[0]].view
    have_buf = [bufs[i] is not None for i in members]
    if isinstance(view, functools.partial):  # stacked copies: a rate per copy
        hp = _rate_for(hp, view(params[members[0]]))
    if (
        len(members) == 1
        or not _stack_spheres(params[members[0]].device)
        or (any(have_buf) and not all(have_buf))
    ):
        for i in members:
            buf = bufs[i]
            new_buf = sphere_sgd_step_(
                view(params[i]), view(grads[i]), None if buf is None else view(buf), axis, hp
            )
            if buf is None and new_buf is not None:
                bufs[i] = new_buf.reshape(params[i].shape)  # parameter-shaped
        return
    points = [view(params[i]) for i in members]
    x = torch.stack(points)
    m = torch.stack([view(bufs[i]) for i in members]) if all(have_buf) else None
    new_buf = sphere_sgd_step_(x, torch.stack([view(grads[i]) for i in members]), m, axis, hp)
    torch._foreach_copy_(points, list(x.unbind(0)))
    if m is not None:
        torch._foreach_copy_([view(bufs[i]) for i in members], list(m.unbind(0)))
    elif new_buf is not None:
        for i, buf in zip(members, new_buf.unbind(0)):
            bufs[i] = buf.reshape(params[i].shape)


def _multi_tensor_step(params, grads, bufs, geometries, indices, hp) -> None:
    """The fast path. Spheres and oblique filters with the normalize retraction (the
    paper's UN update) in float32/float64 take the fused in-place kernel
    :func:`~riemann_dnn.step.sphere_sgd_step_`, a handful of kernels per tensor (per stack
    of same-shaped tensors on accelerators); other same-shaped parameters on the same
    manifold are stacked and stepped by one call of the shared step (on manifolds whose
    formulas broadcast over a leading axis)."""
    spheres: dict[tuple, list[int]] = defaultdict(list)
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i in indices:
        param, geometry = params[i], geometries[i]
        axis = unit_norm_axis(geometry.manifold)
        if axis is not None and param.dtype in SPHERE_KERNEL_DTYPES:
            spheres[(param.device, param.dtype, geometry.key, axis)].append(i)
        elif _broadcasts_over_copies(geometry.manifold):
            buckets[(param.device, param.dtype, geometry.key)].append(i)
        else:
            _single_tensor_step(params, grads, bufs, geometries, [i], hp)
    for (*_, axis), members in spheres.items():
        _fused_sphere_steps(params, grads, bufs, geometries, members, axis, hp)
    for members in buckets.values():
        have_buf = [bufs[i] is not None for i in members]
        if len(members) == 1 or (any(have_buf) and not all(have_buf)):
            _single_tensor_step(params, grads, bufs, geometries, members, hp)
            continue
        geometry = geometries[members[0]]
        view = geometry.view
        points = [view(params[i]) for i in members]
        stacked_buf = torch.stack([view(bufs[i]) for i in members]) if all(have_buf) else None
        new_points, new_buf = riemannian_sgd_step(
            geometry.manifold,
            work(torch.stack(points)),
            work(torch.stack([view(grads[i]) for i in members])),
            stacked_buf,
            hp,
        )
        torch._foreach_copy_(points, list(new_points.unbind(0)))
        if new_buf is not None:
            if all(have_buf):
                torch._foreach_copy_([view(bufs[i]) for i in members], list(new_buf.unbind(0)))
            else:
                for i, buf in zip(members, new_buf.unbind(0)):
                    bufs[i] = _store_buffer(buf, params[i], view)
