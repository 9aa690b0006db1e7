r"""The symmetry itself: positive per-filter factors, the rescaled network
:math:`\tilde W_k = \operatorname{Diag}(\alpha^{(k)}) W_k` (eq. (1)), BatchNorm's ``eps`` (which
breaks it) and the loss and Euclidean gradients of a network in train mode."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...manifolds import filter_matrix

__all__ = [
    "EXACT_EPS",
    "random_filter_scales",
    "rescale_filters",
    "set_batchnorm_eps",
    "loss_and_gradients",
    "unit_filters",
]

Scales = dict[str, torch.Tensor]
#: A BatchNorm epsilon below the rounding of any batch variance here (> 1e-30 by far), so the
#: rescaling symmetry is exact; PyTorch refuses ``eps = 0`` in training mode.
EXACT_EPS = 1e-30


def random_filter_scales(
    model: nn.Module,
    names: Sequence[str],
    *,
    spread: float = 10.0,
    generator: torch.Generator | None = None,
) -> Scales:
    r"""One positive factor per filter of each named weight, log-uniform in
    :math:`[1/\text{spread}, \text{spread}]`: :math:`\alpha_i = \text{spread}^{u_i}`,
    :math:`u_i \sim U[-1, 1]` (float64, CPU)."""
    if not (isinstance(spread, (int, float)) and math.isfinite(spread) and spread >= 1):
        raise ValueError(
            f"spread (alpha_spread) must be a finite number >= 1, got {spread!r}; "
            f"factors are drawn log-uniformly in [1/spread, spread]"
        )
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(
            f"names: the model has no parameters {missing}; choose among {sorted(params)}"
        )
    scales = {}
    for name in names:
        u = 2 * torch.rand(params[name].shape[0], generator=generator, dtype=torch.float64) - 1
        scales[name] = float(spread) ** u
    return scales


def rescale_filters(model: nn.Module, scales: Scales) -> nn.Module:
    r"""A deep copy of ``model`` with :math:`W \leftarrow \operatorname{Diag}(\alpha) W` for each
    ``name -> alpha`` of ``scales`` (eq. (1); filter :math:`i` = row :math:`i` of
    ``W.view(out, -1)``)."""
    out = copy.deepcopy(model)
    params = dict(out.named_parameters())
    with torch.no_grad():
        for name, alpha in scales.items():
            weight = params[name]
            shape = (weight.shape[0],) + (1,) * (weight.ndim - 1)
            weight.mul_(alpha.to(device=weight.device, dtype=weight.dtype).view(shape))
    return out


def set_batchnorm_eps(model: nn.Module, eps: float) -> nn.Module:
    """Set ``eps`` of every BatchNorm of ``model`` (in place; returns ``model``).
    :data:`EXACT_EPS` (PyTorch refuses ``eps = 0`` in training) makes the rescaling symmetry
    exact up to rounding."""
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(
            f"eps must be > 0 (PyTorch's BatchNorm refuses 0 in training), got "
            f"{eps!r}; use EXACT_EPS = {EXACT_EPS:g} for the exact symmetry"
        )
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = float(eps)
    return model


def loss_and_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Sequence[str] | None = None
) -> tuple[float, dict[str, torch.Tensor]]:
    """Mean cross-entropy of ``model`` in train mode (BatchNorm on batch statistics) and its
    Euclidean gradients (all parameters, or ``names``). Runs on a copy: the model's running
    statistics and ``.grad`` are left untouched."""
    work = copy.deepcopy(model).train()
    params = dict(work.named_parameters())
    chosen = list(names) if names is not None else list(params)
    loss = F.cross_entropy(work(x), y)
    grads = torch.autograd.grad(loss, [params[n] for n in chosen])
    return float(loss.detach()), dict(zip(chosen, grads))


def unit_filters(weight: torch.Tensor) -> torch.Tensor:
    r"""The unit-norm representative :math:`\hat W = \operatorname{Diag}(\|w_i\|)^{-1} W` as an
    ``(out, -1)`` matrix (a new tensor)."""
    rows = filter_matrix(weight.detach().contiguous())
    return rows / rows.norm(dim=1, keepdim=True)
