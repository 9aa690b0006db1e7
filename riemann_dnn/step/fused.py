r"""The Riemannian SGD step on unit-norm filters, fused in place: the fast path.

For (products of) spheres with the ``"normalize"`` retraction and projection transport --
the paper's UN update -- :func:`riemannian_sgd_step` costs about ten passes over the weights
and as many allocations. :func:`sphere_sgd_step_` computes the same update in place in a
handful of kernels. It is the special case of the shared step for these manifolds, used by
``RiemannianSGD``'s foreach path and by the experiments' ensemble trainer; tests check it
against :func:`riemannian_sgd_step` (``tests/step/test_fused_step.py``).

With :math:`c = \langle x, g\rangle` per sphere:

.. math::

    r = g - c\,x,\quad m \leftarrow \mu m + (1 - \tau) r\ (m_0 = r),\quad
    x \leftarrow \frac{x - \lambda d}{\|x - \lambda d\|},\quad
    m \leftarrow m - \langle x, m\rangle x,

:math:`d = m` (or :math:`r + \mu m`); without momentum :math:`x - \lambda r = (1 + \lambda
c)x - \lambda g` (Table 1).
"""

from __future__ import annotations

import torch

from ..manifolds import working_dtype
from .sgd import SGDHyperparameters

__all__ = ["unit_norm_axis", "point_axes", "nonfinite_points", "sphere_sgd_step_"]


def unit_norm_axis(manifold) -> int | tuple[int, ...] | None:
    """The axis along which points of ``manifold`` have unit norm (the manifold's declared
    :attr:`~riemann_dnn.manifolds.EmbeddedManifold.unit_norm_axis`) when its step can take
    :func:`sphere_sgd_step_`: with the ``"normalize"`` retraction and projection transport;
    else ``None``."""
    if (
        getattr(manifold, "retraction_name", None) != "normalize"
        or getattr(manifold, "transport_name", "projection") != "projection"
    ):
        return None
    return getattr(manifold, "unit_norm_axis", None)


def point_axes(manifold) -> int | tuple[int, ...]:
    """The trailing axes of one unit of ``manifold``'s points that a step keeps or moves
    whole: the declared unit-norm axis (a row of an oblique point, a whole sphere), else
    every axis of the point (a Stiefel matrix); negative, so that leading copies axes
    broadcast."""
    axis = getattr(manifold, "unit_norm_axis", None)
    return tuple(range(-len(manifold.point_shape), 0)) if axis is None else axis


def nonfinite_points(t: torch.Tensor, axis: int | tuple[int, ...]) -> torch.Tensor:
    """Where a point of ``t`` (its entries along ``axis``; kept broadcastable) holds inf or
    NaN: its max and min are both finite iff every entry is (both reductions propagate
    NaN). Two reads and no temporary of ``t``'s size, where ``|t|``'s max writes one (on
    the CPU a fresh tensor, page faults included: 33 ms against 4 ms on 3200x4608 floats)."""
    return ~(
        torch.isfinite(t.amax(dim=axis, keepdim=True))
        & torch.isfinite(t.amin(dim=axis, keepdim=True))
    )


def _inner(x: torch.Tensor, y: torch.Tensor, axis) -> torch.Tensor:
    """:math:`\\langle x, y\\rangle` along ``axis``, kept broadcastable."""
    if isinstance(axis, int):
        return torch.linalg.vecdot(x, y, dim=axis).unsqueeze(axis)
    return (x * y).sum(axis, keepdim=True)


def sphere_sgd_step_(
    x: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor | None,
    axis,
    hp: SGDHyperparameters,
    *,
    maximize: bool = False,
    found: torch.Tensor | None = None,
) -> torch.Tensor | None:
    r"""The shared step on unit-norm ``x`` (norms along ``axis``), in place.

    Updates ``x`` (and ``m``) in place and returns the momentum buffer (a new tensor on
    the first momentum step, ``None`` without momentum). ``hp.lr`` may be a float or a
    tensor broadcastable against the per-sphere inner products (one rate per stacked copy).
    ``maximize`` steps along ``+g`` (the step of ``-g``).

    A float rate above 1 (and, without momentum, any tensor rate) scales the update
    :math:`x - \lambda d` by :math:`1/\max(1, \lambda)` before normalising, so that a huge
    rate cannot overflow; the normalised result is the same. A sphere whose update is zero
    (a zero point with zero gradient and momentum) keeps its value, zero, and sets
    ``found`` (a one-element tensor) to 1.
    """
    lr, mu, tau = hp.lr, hp.momentum, hp.dampening
    scalar = not isinstance(lr, torch.Tensor)
    if maximize:
        g = g.neg()
        if hp.weight_decay != 0:
            g.add_(x, alpha=hp.weight_decay)
    elif hp.weight_decay != 0:
        g = g.add(x, alpha=hp.weight_decay)
    c = _inner(x, g, axis)
    if mu == 0:
        if scalar and lr <= 1:
            x.addcmul_(x, c, value=lr).add_(g, alpha=-lr)
        elif scalar:  # (x + lr (c x - g)) / lr
            x.mul_(c.add_(1 / lr)).add_(g, alpha=-1)
        else:  # ((1 + lr c) x - lr g) / max(1, lr)
            scale = lr.clamp(min=1)
            x.mul_(c.mul_(lr / scale).add_(scale.reciprocal())).addcmul_(g, lr / scale, value=-1)
    else:
        if m is None:  # first step: the Riemannian gradient itself
            m = torch.addcmul(g, x, c, value=-1)
        else:
            m.mul_(mu).add_(g, alpha=1 - tau).addcmul_(x, c, value=tau - 1)
        direction = m if not hp.nesterov else torch.addcmul(g, x, c, value=-1).add_(m, alpha=mu)
        if scalar and lr <= 1:
            x.add_(direction, alpha=-lr)
        elif scalar:
            x.mul_(1 / lr).sub_(direction)
        else:
            x.addcmul_(direction, lr, value=-1)
    # multiplying by the reciprocal norms is cheaper than dividing on CPUs; a zero update
    # (a zero row with a zero gradient and momentum) stays zero, its value before the step
    inverse = torch.linalg.vector_norm(x, dim=axis, keepdim=True).reciprocal_()
    zero = torch.isinf(inverse)
    x.mul_(inverse.masked_fill_(zero, 0))
    if found is not None:
        flag = zero.any().to(device=found.device, dtype=found.dtype)
        torch.maximum(found, flag, out=found)
    if mu != 0:  # vector transport by projection onto the new tangent space
        m.addcmul_(x, _inner(x, m, axis), value=-1)
    return m


def _row_rates(lr: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> float | torch.Tensor:
    """The rates ``lr`` (1-D, one per block of consecutive rows) as a float or a tensor
    broadcastable against ``x``'s per-row inner products."""
    if lr.numel() == 1 and lr.device.type == "cpu":
        return float(lr)
    rows = x.numel() // x.shape[-1]
    rates = lr.to(device=x.device, dtype=dtype).reshape(-1)
    return rates.repeat_interleave(rows // rates.numel()).view(*x.shape[:-1], 1)


def oblique_sgd_eager_(
    points: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    lr: torch.Tensor,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    maximize: bool,
    first_step: bool,
    found_nonfinite: torch.Tensor,
) -> None:
    """The row-oblique step (unit rows along the last axis) on lists of tensors, in place:
    the eager torch implementation of ``riemann_dnn::oblique_sgd_`` (the native kernel's
    fallback and reference; see :func:`riemann_dnn.step.native.oblique_sgd_`).

    ``momentum_buffers`` is empty without momentum, else one buffer per point (float32 for
    float16/bfloat16 points), overwritten when ``first_step``. ``lr`` is 1-D: row block
    ``k`` (of ``rows // len(lr)`` consecutive rows) takes ``lr[k]``. A row whose gradient is
    not finite, or whose update is zero, is left untouched (a fresh buffer row is zero) and
    ``found_nonfinite`` is set to 1; half points are stepped in float32.
    """
    hp = SGDHyperparameters(0.0, momentum, dampening, nesterov, weight_decay)
    bufs = momentum_buffers if momentum != 0 else [None] * len(points)
    for x, g, m in zip(points, grads, bufs):
        work = working_dtype(x.dtype)
        xw, gw = x.to(work), g.to(work)
        bad = nonfinite_points(g, -1).squeeze(-1)
        any_bad = bool(bad.any())
        if any_bad:
            kept_x = xw[bad].clone()
            kept_m = None if m is None or first_step else m[bad].clone()
            gw = gw.masked_fill(bad.unsqueeze(-1), 0)
            found_nonfinite.fill_(1)
        step = hp._replace(lr=_row_rates(lr, x, work))
        new_m = sphere_sgd_step_(
            xw, gw, None if first_step else m, -1, step, maximize=maximize, found=found_nonfinite
        )
        if m is not None and first_step:
            m.copy_(new_m)
        if any_bad:
            xw[bad] = kept_x
            if m is not None:
                m[bad] = 0 if kept_m is None else kept_m
        if xw is not x:
            x.copy_(xw)
