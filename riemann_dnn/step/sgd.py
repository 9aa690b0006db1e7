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

import math
from numbers import Real
from typing import Any, NamedTuple

from pymanopt.manifolds.manifold import Manifold

from ..manifolds import Array

__all__ = ["SGDHyperparameters", "check_sgd_hyperparameters", "riemannian_sgd_step"]


class SGDHyperparameters(NamedTuple):
    """The hyper-parameters of one step (see the module docstring for the formulas)."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


def _expected_number(value: Any, low: float, high: float, high_open: bool) -> str | None:
    """``None`` when ``value`` is a finite real number in ``[low, high]`` (``[low, high)``
    with ``high_open``), else what was expected."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and value >= low and (value < high if high_open else value <= high):
        return None
    bound = "" if high == math.inf else f" and {'<' if high_open else '<='} {high}"
    return f"a finite number >= {low}{bound}"


def check_sgd_hyperparameters(
    owner: str,
    momentum: Any,
    dampening: Any,
    weight_decay: Any,
    nesterov: Any,
    *,
    where: str = "",
    option: bool = False,
    momentum_below: float = math.inf,
    dampening_at_most: float = math.inf,
) -> None:
    """Raise ``ValueError`` naming the first bad hyper-parameter of the step: ``momentum``,
    ``dampening`` and ``weight_decay`` must be finite real numbers >= 0 (momentum
    ``< momentum_below``, dampening ``<= dampening_at_most``), and Nesterov momentum needs
    momentum > 0 and dampening 0. The checks of :class:`~riemann_dnn.optim.RiemannianSGD`
    (no upper bounds, as ``torch.optim.SGD``) and of
    :class:`~riemann_dnn.solvers.StochasticGradient` (momentum < 1, dampening <= 1).

    The message reads ``"{owner}: {name} must be ..., got {value!r}{where}"`` (``"option
    {name}"`` with ``option``).
    """
    label = "option " if option else ""
    limits = {
        "momentum": (momentum, momentum_below, True),
        "dampening": (dampening, dampening_at_most, False),
        "weight_decay": (weight_decay, math.inf, False),
    }
    for name, (value, high, high_open) in limits.items():
        expected = _expected_number(value, 0, high, high_open)
        if expected is not None:
            raise ValueError(f"{owner}: {label}{name} must be {expected}, got {value!r}{where}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            f"{owner}: {label}nesterov=True needs momentum > 0 and dampening 0, got "
            f"momentum={momentum!r}, dampening={dampening!r}{where}; pass momentum=0.9 (say) "
            f"or nesterov=False"
        )


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
