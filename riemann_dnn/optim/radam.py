"""``RiemannianAdam``: Adam with each parameter on its manifold, and its functional form
:func:`riemannian_adam`, as ``torch.optim.adam`` holds ``Adam`` and ``adam``.

The step is Bécigneul & Ganea's (ICLR 2019), written once in :mod:`riemann_dnn.step.adam`.
Parameters are split by geometry: Euclidean ones take ``torch.optim.Adam``'s own kernels
(so they equal ``torch.optim.Adam``/``AdamW`` bit for bit, flag for flag); unit-norm ones
(oblique rows, spheres) on the CPU take the row-fused kernel
(:func:`riemann_dnn.step.native.oblique_adam_`) or, elsewhere, the in-place sphere kernel;
the rest take the shared reference step, one call per parameter.
"""

from __future__ import annotations

import functools

import torch
from torch.optim.adam import adam as _torch_adam

from ..manifolds import working_dtype
from ..params import Geometry
from ..step.adam import (
    AdamHyperparameters,
    AdamState,
    riemannian_adam_step,
    sphere_adam_step_,
)
from ..step.fused import unit_norm_axis
from ..step.native import oblique_adam_

__all__ = ["riemannian_adam"]

#: The dtypes the row-fused kernel takes (it steps half points in float32 itself).
ROW_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def riemannian_adam(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    max_exp_avg_sqs: list[torch.Tensor],
    state_steps: list[torch.Tensor],
    geometries: list[Geometry] | None,
    *,
    hp: AdamHyperparameters,
    foreach: bool | None = None,
    fused: bool | None = None,
    maximize: bool = False,
    found_nonfinite: torch.Tensor | None = None,
) -> None:
    """Functional form of :class:`RiemannianAdam`: updates ``params`` and the state lists'
    tensors in place (``state_steps`` counted up by one).

    ``geometries=None`` means every parameter is Euclidean. The state of a Euclidean
    parameter is ``torch.optim.Adam``'s; that of a constrained one has ``exp_avg`` shaped
    as the parameter and ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad) one value per
    component of its point (:func:`~riemann_dnn.step.adam.second_moment_axes`: the point
    view's shape with the component axes of size 1), all in the working precision
    (float32 for half parameters). ``max_exp_avg_sqs`` is ``[]`` without amsgrad.

    With stacked copies (geometries whose view keeps a leading copies axis), ``hp.lr`` may
    be a tensor of one rate per copy; Euclidean parameters then take
    ``torch.optim.Adam``'s single-tensor arithmetic with a rate per copy. ``foreach`` and
    ``fused`` are passed to ``torch.optim.adam.adam`` for the Euclidean parameters; for the
    constrained ones, ``fused=False`` or ``foreach=False`` avoids the row-fused kernel and
    ``foreach=False`` takes the reference step. Unit-norm rows left untouched by the
    row-fused kernel (a non-finite gradient) set ``found_nonfinite``.
    """
    if not params:
        return
    maxima = max_exp_avg_sqs if hp.amsgrad else [None] * len(params)
    euclidean = [i for i in range(len(params)) if geometries is None or geometries[i].is_euclidean]
    constrained = [i for i in range(len(params)) if i not in set(euclidean)]
    per_copy = isinstance(hp.lr, torch.Tensor) and hp.lr.ndim == 1
    if euclidean and per_copy:
        _euclidean_adam_per_copy(
            params, grads, exp_avgs, exp_avg_sqs, maxima, state_steps, euclidean, hp, maximize
        )
    elif euclidean:
        pick = lambda values: [values[i] for i in euclidean]  # noqa: E731
        _torch_adam(
            pick(params),
            pick(grads),
            pick(exp_avgs),
            pick(exp_avg_sqs),
            pick(max_exp_avg_sqs) if hp.amsgrad else [],
            pick(state_steps),
            foreach=foreach,
            fused=fused,
            decoupled_weight_decay=hp.decoupled_weight_decay,
            amsgrad=hp.amsgrad,
            beta1=hp.betas[0],
            beta2=hp.betas[1],
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            eps=hp.eps,
            maximize=maximize,
        )
    if not constrained:
        return
    for i in constrained:
        state_steps[i] += 1
    rows = []
    if foreach is not False and fused is not False:
        rows = [i for i in constrained if _row_view(params[i], geometries[i]) is not None]
    if rows:
        views = [_row_view(params[i], geometries[i]) for i in rows]
        oblique_adam_(
            [view(params[i]) for i, view in zip(rows, views)],
            [view(grads[i]) for i, view in zip(rows, views)],
            [view(exp_avgs[i]) for i, view in zip(rows, views)],
            [_moment_rows(exp_avg_sqs[i], view(params[i])) for i, view in zip(rows, views)],
            [_moment_rows(maxima[i], view(params[i])) for i, view in zip(rows, views)]
            if hp.amsgrad
            else [],
            [state_steps[i] for i in rows],
            lr=hp.lr,
            betas=hp.betas,
            eps=hp.eps,
            weight_decay=hp.weight_decay,
            amsgrad=hp.amsgrad,
            decoupled_weight_decay=hp.decoupled_weight_decay,
            maximize=maximize,
            found_nonfinite=found_nonfinite,
        )
    for i in constrained:
        if i in rows:
            continue
        geometry = geometries[i]
        axis = unit_norm_axis(geometry.manifold)
        point = geometry.view(params[i])
        if (
            foreach is not False
            and axis is not None
            and params[i].dtype
            in (
                torch.float32,
                torch.float64,
            )
        ):
            sphere_adam_step_(
                point,
                geometry.view(grads[i]),
                geometry.view(exp_avgs[i]),
                exp_avg_sqs[i],
                maxima[i],
                axis,
                float(state_steps[i]),
                hp._replace(lr=_rate_for(hp.lr, point)),
                maximize=maximize,
            )
        else:
            _reference_step(
                params[i],
                grads[i],
                exp_avgs[i],
                exp_avg_sqs[i],
                maxima[i],
                float(state_steps[i]),
                geometry,
                hp,
                maximize,
            )


def _row_view(param: torch.Tensor, geometry: Geometry):
    """A map from ``param`` (or a same-shaped tensor) to its unit-norm rows, ``(rows, n)``
    or ``(copies, rows, n)``, when the row-fused kernel can step it (CPU; unit norms along
    the last axis or over the whole point; the normalize retraction and projection
    transport); else ``None``."""
    if param.device.type != "cpu" or param.dtype not in ROW_KERNEL_DTYPES:
        return None
    axis = unit_norm_axis(geometry.manifold)
    if axis is None:
        return None
    view = geometry.view
    stacked = isinstance(view, functools.partial)
    ndim = len(geometry.manifold.point_shape)
    if axis == -1 or axis == ndim - 1:
        keep = -1
    elif isinstance(axis, tuple) and sorted(a % ndim for a in axis) == list(range(ndim)):
        keep = ndim  # the whole point is one row
    else:
        return None

    def rows(tensor: torch.Tensor) -> torch.Tensor:
        point = view(tensor)
        lead = point.shape[:1] if stacked else ()
        if keep == -1:
            inner = point.shape[len(lead) :]
            return point.reshape(*lead, -1, inner[-1])
        return point.reshape(*lead, 1, -1)

    return rows


def _moment_rows(moment: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A per-row second moment viewed as ``(*rows.shape[:-1], 1)``."""
    return moment.view(*rows.shape[:-1], 1)


def _rate_for(lr, point: torch.Tensor):
    """A rate per copy (shape ``(copies,)``) shaped to broadcast over ``point``
    ``(copies, ...)`` in the point's working precision; other rates unchanged."""
    if isinstance(lr, torch.Tensor) and lr.ndim == 1:
        dtype = working_dtype(point.dtype)
        return lr.to(device=point.device, dtype=dtype).view(-1, *([1] * (point.ndim - 1)))
    return lr


def _reference_step(
    param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, geometry, hp, maximize
) -> None:
    """The readable reference: the shared step on the parameter's point (per copy on
    manifolds whose formulas do not broadcast over a copies axis), written back in place."""
    view, manifold = geometry.view, geometry.manifold
    work = working_dtype(param.dtype)
    point, gradient, moment = view(param), view(grad), view(exp_avg)
    stacked = isinstance(view, functools.partial)
    if stacked and not getattr(manifold, "broadcasts_over_copies", False):
        pieces = [
            (
                point[k],
                gradient[k],
                moment[k],
                exp_avg_sq[k],
                None if max_exp_avg_sq is None else max_exp_avg_sq[k],
                hp.lr[k] if isinstance(hp.lr, torch.Tensor) and hp.lr.ndim == 1 else hp.lr,
            )
            for k in range(point.shape[0])
        ]
    else:
        pieces = [(point, gradient, moment, exp_avg_sq, max_exp_avg_sq, _rate_for(hp.lr, point))]
    for x, g, m, v, vmax, lr in pieces:
        new_point, state = riemannian_adam_step(
            manifold,
            x.to(work),
            g.to(work),
            AdamState(m, v, vmax),
            step,
            hp._replace(lr=lr),
            maximize=maximize,
        )
        x.copy_(new_point)
        m.copy_(state.exp_avg)
        v.copy_(state.exp_avg_sq)
        if vmax is not None:
            vmax.copy_(state.max_exp_avg_sq)


def _euclidean_adam_per_copy(
    params, grads, exp_avgs, exp_avg_sqs, maxima, state_steps, indices, hp, maximize
) -> None:
    """``torch.optim.Adam``'s single-tensor step, in its order of roundings, with one rate
    per copy (the leading axis): copy ``k`` equals ``torch.optim.Adam`` run with
    ``lr[k]``."""
    beta1, beta2 = hp.betas
    rates = hp.lr.detach().to(device="cpu", dtype=torch.float64)
    for i in indices:
        param, exp_avg, exp_avg_sq = params[i], exp_avgs[i], exp_avg_sqs[i]
        grad = grads[i] if not maximize else -grads[i]
        state_steps[i] += 1
        step = float(state_steps[i])
        if hp.weight_decay != 0:
            if hp.decoupled_weight_decay:
                param.mul_(_per_copy(1 - rates * hp.weight_decay, param))
            else:
                grad = grad.add(param, alpha=hp.weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if hp.amsgrad:
            torch.maximum(maxima[i], exp_avg_sq, out=maxima[i])
            denom = (maxima[i].sqrt() / bias_correction2_sqrt).add_(hp.eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(hp.eps)
        # addcdiv_(t1, t2, value=s) is t1 * s / t2 + param, with s in the param's dtype
        param.addcdiv_(exp_avg * _per_copy(-(rates / bias_correction1), param), denom)


def _per_copy(values: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Per-copy scalars (float64) in ``param``'s dtype, broadcastable over its copies."""
    shape = (-1,) + (1,) * (param.ndim - 1)
    return values.to(device=param.device, dtype=param.dtype).view(shape)
