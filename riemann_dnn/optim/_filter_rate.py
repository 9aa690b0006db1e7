"""Per-filter learning rates of Euclidean groups (key ``"filter_rate"``): the rule
:func:`filter_rates`, its check and its step."""

from __future__ import annotations

import torch

from ..step import SGDHyperparameters, riemannian_sgd_step
from ._functional import work
from ._group import Group, is_euclidean_group

__all__ = ["FILTER_RATES", "filter_rates"]

#: Per-filter rates a Euclidean group may take (key ``"filter_rate"``), see :func:`filter_rates`.
FILTER_RATES = ("norm2",)


def check_filter_rate(group: Group, where: str) -> None:
    """A group's ``"filter_rate"``: one of :data:`FILTER_RATES`, in a Euclidean group of
    weights with filters."""
    rule = group.get("filter_rate")
    if rule is None:
        return
    if rule not in FILTER_RATES:
        raise ValueError(
            f"RiemannianSGD: filter_rate must be None or one of {FILTER_RATES}, "
            f"got {rule!r}{where}"
        )
    if not is_euclidean_group(group):
        raise ValueError(
            f"RiemannianSGD: filter_rate={rule!r} is for Euclidean groups, but "
            f"this group is on manifold {group['manifold']!r}{where}; put the "
            f"filters in a Euclidean group or drop 'filter_rate'"
        )
    for position, param in enumerate(group["params"]):
        if param.ndim < (2 if group["copies"] is None else 3):
            raise ValueError(
                f"RiemannianSGD: filter_rate needs weights with filters (rows of "
                f"the weight viewed as (out, -1)); parameter {position} has shape "
                f"{tuple(param.shape)}{where}"
            )


@torch.no_grad()
def filter_rates(
    lr: float | torch.Tensor, param: torch.Tensor, copies: int | None = None
) -> torch.Tensor:
    r"""The per-filter rates of ``"filter_rate": "norm2"``: filter :math:`w_i` (row ``i`` of
    the weight viewed as ``(out, -1)``; per copy with ``copies``) steps with
    :math:`\lambda_i = \lambda \lVert w_i \rVert^2`, the norm taken before the step.

    With BN right after :math:`W x` the loss is invariant to each filter's scale, its gradient
    is orthogonal to the filter and the filter's angular step is
    :math:`\lambda_i \lVert g_i\rVert/\lVert w_i\rVert`; the rate :math:`\lambda\lVert w_i\rVert^2`
    makes that step what it is at :math:`\lVert w_i \rVert = 1` (Hoffer et al. 2018's
    effective-learning-rate control). Returns a tensor shaped to broadcast over ``param``:
    ``(out, 1, ...)``, or ``(copies, out, 1, ...)``.
    """
    lead = 1 if copies is None else 2
    working = work(param)
    norms2 = working.reshape(*param.shape[:lead], -1).pow(2).sum(-1)
    if isinstance(lr, torch.Tensor):
        lr = lr.to(device=param.device, dtype=working.dtype)
        if lr.ndim == 1:  # one rate per copy
            lr = lr.view(-1, 1)
    rates = lr * norms2
    return rates.view(*rates.shape, *([1] * (param.ndim - lead)))


def filter_rate_sgd(params, grads, bufs, group, geometries, hp: SGDHyperparameters) -> None:
    """A Euclidean group with ``"filter_rate"``: the shared step (plain SGD on Euclidean
    space: momentum, dampening, Nesterov, weight decay as ``torch.optim.SGD``) with the rate
    of each filter from :func:`filter_rates`."""
    for i, param in enumerate(params):
        grad = grads[i].neg() if group["maximize"] else grads[i]
        rates = filter_rates(group["lr"], param, group["copies"])
        new_point, new_buf = riemannian_sgd_step(
            geometries[i].manifold, work(param), work(grad), bufs[i], hp._replace(lr=rates)
        )
        param.copy_(new_point)
        bufs[i] = None if new_buf is None else new_buf.to(work(param).dtype)
