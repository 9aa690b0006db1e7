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

from ..manifolds import Oblique, Sphere
from .sgd import SGDHyperparameters

__all__ = ["unit_norm_axis", "sphere_sgd_step_"]


def unit_norm_axis(manifold) -> int | tuple[int, ...] | None:
    """The axis along which points of ``manifold`` have unit norm when its step can take
    :func:`sphere_sgd_step_` (Sphere/Oblique, normalize retraction, projection
    transport); else ``None``."""
    if getattr(manifold, "retraction_name", None) != "normalize" or getattr(
            manifold, "transport_name", "projection") != "projection":
        return None
    if type(manifold) is Oblique:
        return -1 if manifold.unit == "rows" else -2
    if type(manifold) is Sphere:
        return tuple(range(-len(manifold.point_shape), 0))
    return None


def _inner(x: torch.Tensor, y: torch.Tensor, axis) -> torch.Tensor:
    """:math:`\\langle x, y\\rangle` along ``axis``, kept broadcastable."""
    if isinstance(axis, int):
        return torch.linalg.vecdot(x, y, dim=axis).unsqueeze(axis)
    return (x * y).sum(axis, keepdim=True)


def sphere_sgd_step_(x: torch.Tensor, g: torch.Tensor, m: torch.Tensor | None, axis,
                     hp: SGDHyperparameters) -> torch.Tensor | None:
    """The shared step on unit-norm ``x`` (norms along ``axis``), in place.

    Updates ``x`` (and ``m``) in place and returns the momentum buffer (a new tensor on
    the first momentum step, ``None`` without momentum). ``hp.lr`` may be a float or a
    tensor broadcastable against the per-sphere inner products (one rate per stacked copy).
    """
    lr, mu, tau = hp.lr, hp.momentum, hp.dampening
    scalar = not isinstance(lr, torch.Tensor)
    if hp.weight_decay != 0:
        g = g.add(x, alpha=hp.weight_decay)
    c = _inner(x, g, axis)
    if mu == 0:
        if scalar:
            x.addcmul_(x, c, value=lr).add_(g, alpha=-lr)
        else:
            x.mul_(c.mul_(lr).add_(1)).addcmul_(g, lr, value=-1)
    else:
        if m is None:  # first step: the Riemannian gradient itself
            m = torch.addcmul(g, x, c, value=-1)
        else:
            m.mul_(mu).add_(g, alpha=1 - tau).addcmul_(x, c, value=tau - 1)
        direction = m if not hp.nesterov else torch.addcmul(g, x, c, value=-1).add_(m, alpha=mu)
        if scalar:
            x.add_(direction, alpha=-lr)
        else:
            x.addcmul_(direction, lr, value=-1)
    # multiplying by the reciprocal norms is cheaper than dividing on CPUs
    x.mul_(torch.linalg.vector_norm(x, dim=axis, keepdim=True).reciprocal_())
    if mu != 0:  # vector transport by projection onto the new tangent space
        m.addcmul_(x, _inner(x, m, axis), value=-1)
    return m
