r"""The Riemannian SGD step: written once, used by ``RiemannianSGD`` and ``StochasticGradient``.

For a point :math:`x` on a manifold :math:`\mathcal{M}` with Euclidean gradient :math:`g`,
learning rate :math:`\lambda`, momentum :math:`\mu`, dampening :math:`\tau` and weight decay
:math:`\omega`:

.. math::

    r &= P_x(g + \omega x)                          && \text{Riemannian gradient}\\
    m &= \begin{cases} r & \text{first step}\\ \mu m + (1 - \tau) r & \text{otherwise}\end{cases}
        && \text{momentum, a tangent vector at } x\\
    d &= r + \mu m \text{ (Nesterov) or } m\\
    x^+ &= R_x(-\lambda d)                          && \text{retraction}\\
    m^+ &= \mathcal{T}_{x \to x^+}(m)               && \text{vector transport}

The momentum lives in the tangent space: it is built from Riemannian gradients only (the
first buffer is :math:`r`, not :math:`g`) and carried to the new tangent space by
``manifold.transport`` after each step: projection :math:`P_{x^+}(m)` by default, or
parallel transport along the geodesic for manifolds built with ``transport="parallel"``. With :math:`\mu = 0` and the ``"normalize"`` retraction on
``Oblique(..., unit="rows")`` this is exactly Table 1 of Badrinarayanan et al. (2015):
:math:`W \leftarrow \operatorname{rownormalize}(W - \lambda(G - \operatorname{Diag}(\operatorname{diag}(GW^T))W))`.
On ``Euclidean`` it is plain (momentum) SGD.

The functions here are pure (they return new arrays) and accept numpy arrays or torch
tensors; applied to a stack of same-shaped points (leading batch axis) they update every
point at once on the manifolds whose formulas broadcast over leading axes (those that
declare ``broadcasts_over_copies``: Euclidean, Oblique, Stiefel, Grassmann -- not Sphere,
whose norms run over the whole array), which is how the optimizer's foreach path batches
its work.
"""

from __future__ import annotations

from typing import NamedTuple

from pymanopt.manifolds.manifold import Manifold

from ..manifolds import Array

__all__ = ["SGDHyperparameters", "riemannian_sgd_step"]


class SGDHyperparameters(NamedTuple):
    """The hyper-parameters of one step (see the module docstring for the formulas)."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


def riemannian_sgd_step(
    manifold: Manifold,
    point: Array,
    euclidean_gradient: Array,
    momentum_buffer: Array | None,
    hp: SGDHyperparameters,
) -> tuple[Array, Array | None]:
    """One Riemannian SGD step on ``manifold``; returns ``(new_point, new_momentum_buffer)``.

    ``momentum_buffer`` is ``None`` on the first step (or without momentum); the returned
    buffer is a tangent vector at ``new_point`` (``None`` when ``hp.momentum == 0``).
    """
    gradient = euclidean_gradient
    if hp.weight_decay != 0:
        gradient = gradient + hp.weight_decay * point
    direction = manifold.euclidean_to_riemannian_gradient(point, gradient)
    if hp.momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = direction
        else:
            momentum_buffer = hp.momentum * momentum_buffer + (1 - hp.dampening) * direction
        if hp.nesterov:
            direction = direction + hp.momentum * momentum_buffer
        else:
            direction = momentum_buffer
    new_point = manifold.retraction(point, -hp.lr * direction)
    if hp.momentum == 0:
        return new_point, None
    return new_point, manifold.transport(point, new_point, momentum_buffer)
