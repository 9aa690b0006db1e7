r"""(a)-(d) of the package docstring measured on one batch: :func:`invariance_report`."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...manifolds import filter_matrix
from ...params import scale_invariant_weights
from .rescaling import (
    Scales,
    loss_and_gradients,
    random_filter_scales,
    rescale_filters,
    unit_filters,
)
from .updates import one_step, riemannian_gradient_at_unit_filters, un_step_from_gradient

__all__ = ["invariance_report"]


def _max_abs(tensors_a: dict[str, torch.Tensor], tensors_b: dict[str, torch.Tensor]) -> float:
    return max(float((tensors_a[n] - tensors_b[n]).detach().abs().max()) for n in tensors_a)


def invariance_report(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    alpha_spread: float = 10.0,
    dtype: torch.dtype = torch.float64,
    *,
    lr: float = 0.1,
    names: Sequence[str] | None = None,
    generator: torch.Generator | int | None = 0,
    scales: Scales | None = None,
) -> dict[str, Any]:
    r"""Measure the rescaling symmetry of ``model`` on the batch ``(x, y)`` in ``dtype``.

    The filters of each scale-invariant weight (``names``; default: the weights that feed a
    BatchNorm) are rescaled by log-uniform factors in ``[1/alpha_spread, alpha_spread]``
    (or by ``scales``), giving :math:`\tilde W_k = \operatorname{Diag}(\alpha^{(k)}) W_k`. The
    model itself is not modified (the checks run on copies converted to ``dtype``).

    Returns a dict with (all maxima over layers and filters):

    - ``loss``, ``loss_rescaled``, ``loss_rel_change`` = :math:`|L(\tilde W) - L(W)|/|L(W)|` (a);
    - ``euclidean_gradient_rel_change`` = :math:`\max_k \|\tilde G_k - G_k\|_F/\|G_k\|_F`
      (the Euclidean gradient is *not* invariant);
    - ``gradient_scaling_max_rel_dev`` = :math:`\max_i \|\alpha_i \tilde g_i - g_i\|/\|g_i\|` (b),
      with ``gradient_ratio`` (per layer: ``alpha`` and :math:`\|\tilde g_i\|/\|g_i\|`);
    - ``riemannian_gradient_max_abs_diff`` (and ``_rel_diff``, relative to the largest entry):
      the UN gradients at the unit-norm filters from :math:`W` and from :math:`\tilde W` (c);
    - ``un_step_max_abs_diff``: one :class:`~riemann_dnn.optim.RiemannianSGD` step (oblique
      filters, ``project_initial=True``) from each parameterisation, all parameters compared;
      ``un_step_from_gradients_max_abs_diff``: Table 1's step on the unit-norm filters using
      the gradients computed at each parameterisation (:func:`un_step_from_gradient`) (c);
    - ``euclidean_step_filter_max_abs_diff``: normalised filters after one Euclidean SGD
      step (``torch.optim.SGD``) from each parameterisation (d), beside ``un_step_size`` and
      ``euclidean_step_size`` (largest change of a normalised filter entry in the step).

    Example::

        report = invariance_report(ArchBN(2), x, y, alpha_spread=10.0, dtype=torch.float64)
        report["loss_rel_change"], report["un_step_max_abs_diff"]
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    base = copy.deepcopy(model).to(dtype=dtype).train()
    x = x.to(dtype=dtype)
    names = list(names) if names is not None else scale_invariant_weights(base, example_input=x)
    if not names:
        raise ValueError(
            "the model has no weight feeding a BatchNorm, so there is no rescaling "
            "symmetry to check; pass names=[...] to choose weights"
        )
    if scales is None:
        scales = random_filter_scales(base, names, spread=alpha_spread, generator=generator)
    rescaled = rescale_filters(base, scales)
    params, params_t = dict(base.named_parameters()), dict(rescaled.named_parameters())

    loss, grads = loss_and_gradients(base, x, y)
    loss_t, grads_t = loss_and_gradients(rescaled, x, y)

    scaling_dev, euclid_change, ratios = {}, {}, {}
    for name in names:
        g, g_t = filter_matrix(grads[name]), filter_matrix(grads_t[name])
        alpha = scales[name].to(device=g.device, dtype=dtype).view(-1, 1)
        g_norm = g.norm(dim=1)
        scaling_dev[name] = float(((alpha * g_t - g).norm(dim=1) / g_norm).max())
        euclid_change[name] = float((g_t - g).norm() / g.norm())
        ratios[name] = {
            "alpha": scales[name].tolist(),
            "ratio": (g_t.norm(dim=1) / g_norm).double().cpu().tolist(),
        }

    rgrad = {n: riemannian_gradient_at_unit_filters(params[n], grads[n]) for n in names}
    rgrad_t = {n: riemannian_gradient_at_unit_filters(params_t[n], grads_t[n]) for n in names}
    rgrad_diff = _max_abs(rgrad, rgrad_t)
    rgrad_scale = max(float(r.abs().max()) for r in rgrad.values())

    table1 = {n: un_step_from_gradient(params[n], grads[n], lr) for n in names}
    table1_t = {n: un_step_from_gradient(params_t[n], grads_t[n], lr) for n in names}

    un, un_t = one_step(base, x, y, "un", lr), one_step(rescaled, x, y, "un", lr)
    un_diff = _max_abs(dict(un.named_parameters()), dict(un_t.named_parameters()))
    sgd, sgd_t = one_step(base, x, y, "bsgd", lr), one_step(rescaled, x, y, "bsgd", lr)
    sgd_p, sgd_tp, un_p = (dict(m.named_parameters()) for m in (sgd, sgd_t, un))
    sgd_filters = {n: unit_filters(sgd_p[n]) for n in names}
    sgd_filters_t = {n: unit_filters(sgd_tp[n]) for n in names}
    start = {n: unit_filters(params[n]) for n in names}

    bn_eps = sorted(
        {float(m.eps) for m in base.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    )
    all_alpha = torch.cat([scales[n] for n in names])
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "bn_eps": bn_eps,
        "batch": int(x.shape[0]),
        "names": names,
        "alpha_spread": float(alpha_spread),
        "alpha_min": float(all_alpha.min()),
        "alpha_max": float(all_alpha.max()),
        "lr": float(lr),
        "loss": loss,
        "loss_rescaled": loss_t,
        "loss_rel_change": abs(loss_t - loss) / abs(loss),
        "euclidean_gradient_rel_change": max(euclid_change.values()),
        "gradient_scaling_max_rel_dev": max(scaling_dev.values()),
        "gradient_scaling_per_layer": scaling_dev,
        "riemannian_gradient_max_abs_diff": rgrad_diff,
        "riemannian_gradient_rel_diff": rgrad_diff / rgrad_scale,
        "un_step_max_abs_diff": un_diff,
        "un_step_from_gradients_max_abs_diff": _max_abs(table1, table1_t),
        "un_step_size": max(float((unit_filters(un_p[n]) - start[n]).abs().max()) for n in names),
        "euclidean_step_filter_max_abs_diff": _max_abs(sgd_filters, sgd_filters_t),
        "euclidean_step_size": max(float((sgd_filters[n] - start[n]).abs().max()) for n in names),
        "gradient_ratio": ratios,
    }
