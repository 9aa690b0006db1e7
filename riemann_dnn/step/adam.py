r"""The Riemannian Adam step (Bécigneul & Ganea, ICLR 2019), written once.

For a point :math:`x` with Euclidean gradient :math:`g` (:math:`-g` with ``maximize``),
step :math:`t`, learning rate :math:`\lambda`, betas :math:`\beta_1, \beta_2`, ``eps``
:math:`\epsilon` and weight decay :math:`\omega`:

.. math::

    r &= P_x(g + \omega x)                                     && \text{Riemannian gradient (coupled decay)}\\
    m &\leftarrow \beta_1 m + (1 - \beta_1) r                  && \text{first moment, tangent at } x\\
    v &\leftarrow \beta_2 v + (1 - \beta_2) \langle r, r\rangle_x && \text{second moment, per component}\\
    \hat v &= \max(\hat v, v) \text{ (amsgrad) or } v\\
    d &= \frac{m}{\sqrt{\hat v}/\sqrt{1-\beta_2^t} + \epsilon}\\
    x^+ &= R_x\Big(-\frac{\lambda}{1-\beta_1^t}\, d\Big)       && \text{retraction}\\
    m &\leftarrow \mathcal{T}_{x \to x^+}(m)                   && \text{vector transport}

:math:`m` and :math:`v` start at zero. The second moment is a scalar per *component* of the
manifold (:func:`second_moment_axes`): one per unit-norm row of ``Oblique(..., unit="rows")``,
one per point of ``Sphere``, ``Stiefel`` and ``Grassmann`` (per factor for ``k > 1``), and
elementwise on ``Euclidean`` -- where the step is ``torch.optim.Adam``'s. This is
``geoopt.optim.RiemannianAdam``'s update (``component_inner``); the denominator is formed
in ``torch.optim.Adam``'s order.

**Weight decay.** Coupled (``torch.optim.Adam``'s ``weight_decay``): :math:`\omega x` is
added to the Euclidean gradient before the projection, as geoopt does. Decoupled (AdamW,
``decoupled_weight_decay=True``): the step is taken along :math:`d + \omega\,
\operatorname{grad} \tfrac12\|x\|^2 = d + \omega P_x(x)`, which on ``Euclidean`` is AdamW's
:math:`x \leftarrow x(1 - \lambda\omega) - \dots` and on every manifold whose points have a
fixed norm (sphere, oblique, Stiefel, Grassmann) is *zero*: the norm the decay would shrink
is fixed by the constraint. For the scale-invariant weights these manifolds host, Euclidean
decay's only effect is to raise the effective step size, which the Riemannian step sets
directly through :math:`\lambda`. (Coupled decay vanishes there too, up to rounding, since
:math:`P_x(x) = 0`.)

:func:`riemannian_adam_step` is the readable reference: pure (it returns new arrays),
numpy or torch, any manifold with ``projection``/``retraction``/``transport``.
:func:`sphere_adam_step_` is its in-place special case for unit-norm spheres with the
``"normalize"`` retraction and projection transport (the paper's UN weights), and
:func:`oblique_adam_eager_` runs it on lists of unit-row tensors: the eager kernel behind
the native op ``riemann_dnn::oblique_adam_``
(:func:`riemann_dnn.step.native.oblique_adam_`).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, NamedTuple

import torch
from pymanopt.manifolds.manifold import Manifold

from ..manifolds import Array, array_namespace, working_dtype
from .fused import nonfinite_points

__all__ = [
    "AdamHyperparameters",
    "AdamState",
    "check_adam_hyperparameters",
    "second_moment_axes",
    "riemannian_adam_step",
    "sphere_adam_step_",
    "checked_sphere_adam_step_",
    "oblique_adam_eager_",
]

Axis = int | tuple[int, ...] | None


class AdamHyperparameters(NamedTuple):
    """The hyper-parameters of one Adam step (see the module docstring for the formulas)."""

    lr: float | torch.Tensor
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    decoupled_weight_decay: bool = False


class AdamState(NamedTuple):
    """The state of one point: the first moment (a tangent vector at the point), the
    second moment (one value per component, :func:`second_moment_axes`) and, with
    amsgrad, the largest second moment so far."""

    exp_avg: Array
    exp_avg_sq: Array
    max_exp_avg_sq: Array | None = None


def check_adam_hyperparameters(
    owner: str, betas: Any, eps: Any, weight_decay: Any, *, where: str = ""
) -> None:
    """Raise ``ValueError`` naming the first bad hyper-parameter: ``betas`` a pair of
    finite numbers in ``[0, 1)``, ``eps`` and ``weight_decay`` finite numbers ``>= 0``
    (``torch.optim.Adam``'s ranges). The message starts as ``torch.optim.Adam``'s (e.g.
    ``"{owner}: Invalid beta parameter at index 0: 1.0"``) and says what is expected."""
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}{where}")
    for index, beta in enumerate(betas):
        if not (_finite(beta) and 0 <= beta < 1):
            raise ValueError(
                f"{owner}: Invalid beta parameter at index {index}: {beta!r}{where}; "
                f"betas[{index}] must be a finite number in [0, 1)"
            )
    for name, label, value in (
        ("eps", "epsilon", eps),
        ("weight_decay", "weight_decay", weight_decay),
    ):
        if not (_finite(value) and value >= 0):
            raise ValueError(
                f"{owner}: Invalid {label} value: {value!r}{where}; {name} must be a finite "
                f"number >= 0"
            )


def _finite(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def second_moment_axes(manifold: Manifold) -> Axis | str:
    """The axes over which :math:`\\langle r, r\\rangle_x` is summed into one second-moment
    value, read from the manifold's declared facts: ``"elementwise"`` on flat manifolds
    (``is_flat``: Adam's own second moment), the unit-norm axis of spheres
    (``unit_norm_axis``: each row of an oblique point, the whole array of a sphere), the
    last two axes of matrices with orthonormal columns (Stiefel, Grassmann: one value per
    factor), else every axis of the point."""
    if getattr(manifold, "is_flat", False):
        return "elementwise"
    axis = getattr(manifold, "unit_norm_axis", None)
    if axis is not None:
        return axis
    if getattr(manifold, "orthonormal_columns", False):
        return (-2, -1)
    return tuple(range(-len(manifold.point_shape), 0))


def component_inner(manifold: Manifold, vector: Array, axes: Axis | str | None = None) -> Array:
    r""":math:`\langle u, u\rangle_x` per component of ``manifold`` (the embedded trace
    metric), kept broadcastable against ``vector``; ``u * u`` on flat manifolds."""
    axes = second_moment_axes(manifold) if axes is None else axes
    if axes == "elementwise":
        return vector * vector
    return array_namespace(vector).sum(vector * vector, axis=axes, keepdims=True)


def riemannian_adam_step(
    manifold: Manifold,
    point: Array,
    euclidean_gradient: Array,
    state: AdamState | None,
    step: int,
    hp: AdamHyperparameters,
    *,
    maximize: bool = False,
) -> tuple[Array, AdamState]:
    """One Riemannian Adam step on ``manifold`` (the module docstring's formulas);
    returns ``(new_point, new_state)``.

    ``state`` is ``None`` on the first step (zero moments); ``step`` counts the steps
    taken with this one (1 on the first). ``hp.lr`` may be a tensor broadcastable against
    the point (e.g. one rate per stacked copy). Works on stacks of points (leading axes)
    on manifolds that declare ``broadcasts_over_copies``.
    """
    xp = array_namespace(point, euclidean_gradient)
    beta1, beta2 = hp.betas
    gradient = -euclidean_gradient if maximize else euclidean_gradient
    if hp.weight_decay != 0 and not hp.decoupled_weight_decay:
        gradient = gradient + hp.weight_decay * point
    rgrad = manifold.euclidean_to_riemannian_gradient(point, gradient)
    square = component_inner(manifold, rgrad)
    if state is None:
        state = AdamState(xp.zeros_like(rgrad), xp.zeros_like(square))
    exp_avg = beta1 * state.exp_avg + (1 - beta1) * rgrad
    exp_avg_sq = beta2 * state.exp_avg_sq + (1 - beta2) * square
    max_exp_avg_sq = None
    used = exp_avg_sq
    if hp.amsgrad:
        previous = state.max_exp_avg_sq
        max_exp_avg_sq = exp_avg_sq if previous is None else xp.maximum(previous, exp_avg_sq)
        used = max_exp_avg_sq
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    direction = exp_avg / (xp.sqrt(used) / bias_correction2_sqrt + hp.eps)
    if hp.weight_decay != 0 and hp.decoupled_weight_decay:
        direction = direction + hp.weight_decay * bias_correction1 * (
            manifold.euclidean_to_riemannian_gradient(point, point)
        )
    new_point = manifold.retraction(point, -(hp.lr / bias_correction1) * direction)
    new_exp_avg = manifold.transport(point, new_point, exp_avg)
    return new_point, AdamState(new_exp_avg, exp_avg_sq, max_exp_avg_sq)


def _inner(x: torch.Tensor, y: torch.Tensor, axis) -> torch.Tensor:
    """:math:`\\langle x, y\\rangle` along ``axis``, kept broadcastable."""
    if isinstance(axis, int):
        return torch.linalg.vecdot(x, y, dim=axis).unsqueeze(axis)
    return (x * y).sum(axis, keepdim=True)


def sphere_adam_step_(
    x: torch.Tensor,
    g: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    max_exp_avg_sq: torch.Tensor | None,
    axis,
    step: float,
    hp: AdamHyperparameters,
    *,
    maximize: bool = False,
) -> None:
    r""":func:`riemannian_adam_step` on unit-norm ``x`` (norms along ``axis``) with the
    ``"normalize"`` retraction and projection transport, in place.

    ``exp_avg`` (``x``'s shape) and ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad;
    ``x``'s shape reduced to 1 along ``axis``) are the state, zero before the first step,
    updated in place; ``step`` counts this step. ``hp.lr`` may be a float or a tensor
    broadcastable against the per-sphere values (one rate per stacked copy or per row).
    Decoupled weight decay does nothing here (:math:`P_x(x) = 0`).

    With :math:`a = \lambda / ((1 - \beta_1^t)(\sqrt{\hat v}/\sqrt{1 - \beta_2^t} +
    \epsilon))` per sphere, the new point is :math:`u / \|u\|` with :math:`u = (x - a m) /
    \max(1, a)` -- the same direction, scaled so that a huge rate cannot overflow -- and
    :math:`m \leftarrow m - \langle x^+, m\rangle x^+`.
    """
    beta1, beta2 = hp.betas
    if maximize:
        g = g.neg()
        if hp.weight_decay != 0 and not hp.decoupled_weight_decay:
            g.add_(x, alpha=hp.weight_decay)
    elif hp.weight_decay != 0 and not hp.decoupled_weight_decay:
        g = g.add(x, alpha=hp.weight_decay)
    rgrad = g.addcmul(x, _inner(x, g, axis), value=-1)
    exp_avg.mul_(beta1).add_(rgrad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).add_(_inner(rgrad, rgrad, axis), alpha=1 - beta2)
    used = exp_avg_sq
    if hp.amsgrad:
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        used = max_exp_avg_sq
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    rate = (used.sqrt() / bias_correction2_sqrt).add_(hp.eps).reciprocal_()
    rate.mul_(hp.lr / bias_correction1)
    scale = rate.clamp(min=1).reciprocal_()  # 1 / max(1, a)
    x.mul_(scale).addcmul_(exp_avg, rate.mul_(scale), value=-1)
    # multiplying by the reciprocal norms is cheaper than dividing on CPUs
    x.mul_(torch.linalg.vector_norm(x, dim=axis, keepdim=True).reciprocal_())
    exp_avg.addcmul_(x, _inner(x, exp_avg, axis), value=-1)


def checked_sphere_adam_step_(
    x: torch.Tensor,
    g: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    max_exp_avg_sq: torch.Tensor | None,
    axis,
    step: float,
    hp: AdamHyperparameters,
    *,
    maximize: bool = False,
) -> bool:
    """:func:`sphere_adam_step_` in the point's working precision (float32 for half
    points), keeping every sphere whose gradient or new value is not finite -- e.g. a zero
    row, which is not on the sphere -- untouched, state included. Returns whether some
    sphere was kept. The state tensors are in the working precision."""
    work = working_dtype(x.dtype)
    xw, gw = x.to(work), g.to(work)
    if xw is x:
        xw = xw.clone()  # x keeps the old point until the new spheres are checked
    state = (
        (exp_avg, exp_avg_sq) if max_exp_avg_sq is None else (exp_avg, exp_avg_sq, max_exp_avg_sq)
    )
    kept = [t.clone() for t in state]
    bad = nonfinite_points(gw, axis)
    if bool(bad.any()):
        gw = gw.masked_fill(bad, 0)
    sphere_adam_step_(xw, gw, *state[:2], max_exp_avg_sq, axis, step, hp, maximize=maximize)
    for t in (xw, exp_avg, exp_avg_sq):
        bad |= nonfinite_points(t, axis)
    any_bad = bool(bad.any())
    if any_bad:
        xw.copy_(torch.where(bad, x.to(work), xw))
        for tensor, old in zip(state, kept):
            tensor.copy_(torch.where(bad, old, tensor))
    x.copy_(xw)
    return any_bad


def _row_rates(lr: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> float | torch.Tensor:
    """The rates ``lr`` (1-D, one per block of consecutive rows of ``x``) as a float or a
    tensor broadcastable against ``x``'s per-row values."""
    if lr.numel() == 1 and lr.device.type == "cpu":
        return float(lr)
    rows = x.numel() // x.shape[-1]
    rates = lr.to(device=x.device, dtype=dtype).reshape(-1)
    return rates.repeat_interleave(rows // rates.numel()).view(*x.shape[:-1], 1)


def oblique_adam_eager_(
    points: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    max_exp_avg_sqs: list[torch.Tensor],
    steps: list[float],
    lr: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    decoupled_weight_decay: bool,
    maximize: bool,
    found_nonfinite: torch.Tensor,
) -> None:
    """The Adam step on unit rows (along the last axis) of lists of tensors, in place: the
    eager torch implementation of ``riemann_dnn::oblique_adam_`` (the native kernel's
    fallback and reference; see :func:`riemann_dnn.step.native.oblique_adam_`).

    ``exp_avgs`` are point-shaped, ``exp_avg_sqs`` (and ``max_exp_avg_sqs`` with amsgrad;
    else empty) have one value per row (shape ``(*rows, 1)``), all float32 for
    float16/bfloat16 points. ``steps[i]`` counts this step of point ``i``. ``lr`` is 1-D:
    row block ``k`` (of ``rows // len(lr)`` consecutive rows) takes ``lr[k]``. A row whose
    gradient (or new point) is not finite is left untouched, state included, and
    ``found_nonfinite`` is set to 1; half points are stepped in float32.
    """
    hp = AdamHyperparameters(
        0.0, (beta1, beta2), eps, weight_decay, amsgrad, decoupled_weight_decay
    )
    maxima = max_exp_avg_sqs if amsgrad else [None] * len(points)
    for x, g, m, v, vmax, step in zip(points, grads, exp_avgs, exp_avg_sqs, maxima, steps):
        rates = _row_rates(lr, x, working_dtype(x.dtype))
        step_hp = hp._replace(lr=rates)
        if checked_sphere_adam_step_(x, g, m, v, vmax, -1, step, step_hp, maximize=maximize):
            found_nonfinite.fill_(1)
