r"""The two updates compared: UN (Riemannian SGD with the filters on the oblique manifold,
whose gradient and step at the unit-norm filters do not depend on the parameterisation) and
B-SGD (Euclidean SGD, which does)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...manifolds import Oblique, filter_matrix
from ...optim import RiemannianSGD
from ...params import param_groups
from ...step import SGDHyperparameters, riemannian_sgd_step
from ..methods import METHODS

__all__ = [
    "METHOD_LABELS",
    "method_optimizer",
    "one_step",
    "riemannian_gradient_at_unit_filters",
    "un_step_from_gradient",
]

# the two methods the analysis compares, labelled as everywhere else (experiments.methods)
METHOD_LABELS = {name: METHODS[name].label for name in ("bsgd", "un")}


def riemannian_gradient_at_unit_filters(weight: torch.Tensor, egrad: torch.Tensor) -> torch.Tensor:
    r"""The UN gradient at the unit-norm representative, from the Euclidean gradient ``egrad``
    at any parameterisation ``weight``:
    :math:`\Pi_{\hat W}(D G) = D G - \operatorname{Diag}(\operatorname{diag}(D G \hat W^T))\hat W`,
    :math:`D = \operatorname{Diag}(\|w_i\|)`, using :math:`\nabla L(\hat w_i) = \|w_i\|\nabla L(w_i)`
    (valid when the loss is invariant to rescaling the filters). Shape ``(out, -1)``."""
    rows = filter_matrix(weight.detach().contiguous())
    norms = rows.norm(dim=1, keepdim=True)
    point = rows / norms
    manifold = Oblique.for_filters(tuple(weight.shape))
    return manifold.euclidean_to_riemannian_gradient(
        point, norms * filter_matrix(egrad.contiguous())
    )


def un_step_from_gradient(weight: torch.Tensor, egrad: torch.Tensor, lr: float) -> torch.Tensor:
    r"""Table 1's step on the unit-norm representative, from the Euclidean gradient at
    ``weight``: the shared step :func:`~riemann_dnn.step.riemannian_sgd_step` at
    :math:`\hat W` with the gradient :math:`D G` there, i.e.
    :math:`\operatorname{Orth}(\hat W - \lambda\,\Pi_{\hat W}(D G))`. Shape ``(out, -1)``."""
    rows = filter_matrix(weight.detach().contiguous())
    norms = rows.norm(dim=1, keepdim=True)
    manifold = Oblique.for_filters(tuple(weight.shape))
    new_point, _ = riemannian_sgd_step(
        manifold,
        rows / norms,
        norms * filter_matrix(egrad.contiguous()),
        None,
        SGDHyperparameters(lr),
    )
    return new_point


def one_step(model: nn.Module, x, y, method: str, lr: float) -> nn.Module:
    """A copy of ``model`` after one training step of ``method`` ("bsgd" or "un")."""
    work = copy.deepcopy(model).train()
    optimizer = method_optimizer(work, method, lr, x)
    optimizer.zero_grad()
    F.cross_entropy(work(x), y).backward()
    optimizer.step()
    return work


def method_optimizer(
    model: nn.Module, method: str, lr: float, example_input
) -> torch.optim.Optimizer:
    """The optimizer of ``method`` on ``model``: B-SGD (every weight Euclidean) or UN (the
    BN-fed weights on the oblique manifold, found on ``example_input``)."""
    if method == "bsgd":
        return RiemannianSGD(model.parameters(), lr=lr)  # Euclidean: torch.optim.SGD exactly
    if method == "un":
        groups = param_groups(model, manifold="oblique", example_input=example_input, lr=lr)
        return RiemannianSGD(groups, lr=lr, project_initial=True)
    raise ValueError(f"method must be 'bsgd' or 'un', got {method!r}")
