r"""The paper's §2 made visible: the filter-rescaling symmetry of a batch-normalised network.

For a weight :math:`W_k` that feeds a BatchNorm (train mode, batch statistics, ``eps -> 0``)
the loss is invariant to the reparameterisation of eq. (1),
:math:`\tilde W_k = \operatorname{Diag}(\alpha^{(k)}) W_k` with :math:`\alpha^{(k)}_i > 0`.
Consequences, each measured by :func:`invariance_report`:

(a) :math:`L(\tilde W) = L(W)`;
(b) the Euclidean gradient of filter :math:`i` scales as :math:`1/\alpha_i`:
    :math:`\nabla_{\tilde w_i} L = \nabla_{w_i} L / \alpha_i` -- so Euclidean SGD is not
    invariant (a filter made 10x smaller gets a 100x larger relative step);
(c) the UN (Riemannian) gradient is invariant: at the unit-norm representative
    :math:`\hat w_i = w_i/\|w_i\|` it is :math:`\Pi_{\hat w_i}(\|w_i\| \nabla_{w_i} L)`
    (homogeneity of degree -1 gives :math:`\nabla L(\hat w_i) = \|w_i\| \nabla L(w_i)`),
    the same from :math:`W` and from :math:`\tilde W`; hence one UN step (Table 1) lands on the
    same weights from either parameterisation;
(d) one Euclidean step does not: the normalised filters after it differ.

PyTorch's BatchNorm divides by :math:`\sqrt{\sigma^2 + \epsilon}` (``eps = 1e-5``), which breaks
(a)-(b) by about :math:`\epsilon / (2\alpha_i^2 \sigma_i^2)` (relative); the report is made for ``eps`` =
:data:`EXACT_EPS` (the exact symmetry) and for the network's own ``eps``.

:func:`trajectories` trains Euclidean SGD (B-SGD) and UN from ``copies`` rescaled copies of
one network on the same minibatches: the B-SGD copies drift apart, the UN copies coincide up
to rounding. :func:`run_symmetry` does both on real MNIST and :func:`write_report` writes
``symmetry.json``, ``symmetry.md`` and ``symmetry.png``.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..manifolds import Oblique, filter_matrix
from ..models import ArchBN
from ..optim import RiemannianSGD
from ..params import param_groups, scale_invariant_weights
from ..step import SGDHyperparameters, riemannian_sgd_step

__all__ = [
    "random_filter_scales",
    "rescale_filters",
    "EXACT_EPS",
    "set_batchnorm_eps",
    "loss_and_gradients",
    "unit_filters",
    "riemannian_gradient_at_unit_filters",
    "un_step_from_gradient",
    "invariance_report",
    "trajectories",
    "run_symmetry",
    "write_report",
    "plot_symmetry",
]

Scales = dict[str, torch.Tensor]
#: A BatchNorm epsilon below the rounding of any batch variance here (> 1e-30 by far), so the
#: rescaling symmetry is exact; PyTorch refuses ``eps = 0`` in training mode.
EXACT_EPS = 1e-30
_METHOD_LABELS = {"bsgd": "B-SGD (Euclidean SGD)", "un": "UN (Riemannian SGD, oblique)"}


# -- building blocks ---------------------------------------------------------------------------
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


def _max_abs(tensors_a: dict[str, torch.Tensor], tensors_b: dict[str, torch.Tensor]) -> float:
    return max(float((tensors_a[n] - tensors_b[n]).detach().abs().max()) for n in tensors_a)


def _one_step(model: nn.Module, x, y, method: str, lr: float) -> nn.Module:
    """A copy of ``model`` after one training step of ``method`` ("bsgd" or "un")."""
    work = copy.deepcopy(model).train()
    optimizer = _optimizer(work, method, lr, x)
    optimizer.zero_grad()
    F.cross_entropy(work(x), y).backward()
    optimizer.step()
    return work


def _optimizer(model: nn.Module, method: str, lr: float, example_input) -> torch.optim.Optimizer:
    if method == "bsgd":
        return RiemannianSGD(model.parameters(), lr=lr)  # Euclidean: torch.optim.SGD exactly
    if method == "un":
        groups = param_groups(model, manifold="oblique", example_input=example_input, lr=lr)
        return RiemannianSGD(groups, lr=lr, project_initial=True)
    raise ValueError(f"method must be 'bsgd' or 'un', got {method!r}")


# -- (a)-(d): the invariance checks ------------------------------------------------------------
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

    un, un_t = _one_step(base, x, y, "un", lr), _one_step(rescaled, x, y, "un", lr)
    un_diff = _max_abs(dict(un.named_parameters()), dict(un_t.named_parameters()))
    sgd, sgd_t = _one_step(base, x, y, "bsgd", lr), _one_step(rescaled, x, y, "bsgd", lr)
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


# -- trajectories ------------------------------------------------------------------------------
def trajectories(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    copies: int = 3,
    steps: int = 300,
    lr: float = 0.05,
    batch_size: int = 100,
    alpha_spread: float = 10.0,
    methods: Sequence[str] = ("bsgd", "un"),
    seed: int = 0,
    names: Sequence[str] | None = None,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    r"""Train each method from ``copies`` rescaled copies of ``model`` on the same minibatches.

    Copy 0 is ``model`` itself; copy :math:`j \ge 1` has every filter of every scale-invariant
    weight multiplied by a log-uniform factor in ``[1/alpha_spread, alpha_spread]``. Each
    method (``"bsgd"``: ``RiemannianSGD`` with every parameter Euclidean, i.e. SGD; ``"un"``: RiemannianSGD with the
    filters on the oblique manifold) trains every copy for ``steps`` steps of mean cross-entropy
    on minibatches of ``batch_size`` drawn from ``(x, y)`` (reshuffled each pass; the same
    sequence for every copy and method) with the same ``lr``. ``x`` sets dtype and device.

    Returns ``{"alphas": {name: [[...] per copy]}, "methods": {method: record}}``, each record
    with ``loss`` (per copy, the minibatch loss before each step), ``loss_spread`` (per step,
    :math:`\max_j |L^{(j)} - L^{(0)}|`), ``filter_distance`` (per weight, ``steps + 1`` values:
    :math:`\max_j \|\hat W^{(j)} - \hat W^{(0)}\|_F` of the unit-normalised filters, before
    training and after each step), ``final_filter_distance``, ``filter_norm`` (per weight and
    copy, the mean filter norm at the end) and, with ``x_test``, ``test_error`` per copy
    (eval mode).
    """
    for arg, value in (("copies", copies), ("steps", steps), ("batch_size", batch_size)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{arg} must be an int >= 1, got {value!r}")
    if copies < 2:
        raise ValueError(f"copies must be >= 2 to compare trajectories, got {copies}")
    unknown = [m for m in methods if m not in _METHOD_LABELS]
    if unknown or not methods:
        raise ValueError(
            f"methods must be a non-empty subset of {list(_METHOD_LABELS)}, got {list(methods)}"
        )
    if batch_size > x.shape[0]:
        raise ValueError(f"batch_size ({batch_size}) exceeds the {x.shape[0]} training images")
    base = copy.deepcopy(model).to(device=x.device, dtype=x.dtype).train()
    names = (
        list(names)
        if names is not None
        else scale_invariant_weights(base, example_input=x[:batch_size])
    )
    gen = torch.Generator().manual_seed(seed)
    scales = [None] + [
        random_filter_scales(base, names, spread=alpha_spread, generator=gen)
        for _ in range(copies - 1)
    ]
    starts = [base] + [rescale_filters(base, s) for s in scales[1:]]
    order = _batch_order(x.shape[0], steps, batch_size, seed + 1).to(x.device)

    result: dict[str, Any] = {
        "copies": copies,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "alpha_spread": alpha_spread,
        "names": names,
        "seed": seed,
        "dtype": str(x.dtype).replace("torch.", ""),
        "alphas": {
            n: [[1.0] * int(dict(base.named_parameters())[n].shape[0])]
            + [s[n].tolist() for s in scales[1:]]
            for n in names
        },
        "methods": {},
    }
    for method in methods:
        nets = [copy.deepcopy(m) for m in starts]
        optimizers = [_optimizer(net, method, lr, x[:batch_size]) for net in nets]
        # per step: losses of the copies and distances, kept on the device until the end
        losses: list[torch.Tensor] = []
        distance = {n: [_filter_distance(nets, n)] for n in names}
        for step in range(steps):
            batch = order[step]
            xb, yb = x[batch], y[batch]
            step_losses = []
            for net, optimizer in zip(nets, optimizers):
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(xb), yb)
                loss.backward()
                optimizer.step()
                step_losses.append(loss.detach())
            losses.append(torch.stack(step_losses))
            for n in names:
                distance[n].append(_filter_distance(nets, n))
            if progress is not None:
                progress(1)
        losses = torch.stack(losses).double().T.cpu().tolist()  # (copies, steps)
        distance = {n: torch.stack(d).cpu().tolist() for n, d in distance.items()}
        record = {
            "label": _METHOD_LABELS[method],
            "loss": losses,
            "loss_spread": [max(abs(c[i] - losses[0][i]) for c in losses) for i in range(steps)],
            "filter_distance": distance,
            "final_filter_distance": {n: d[-1] for n, d in distance.items()},
            "filter_norm": {
                n: [
                    float(
                        filter_matrix(dict(net.named_parameters())[n].detach()).norm(dim=1).mean()
                    )
                    for net in nets
                ]
                for n in names
            },
        }
        if x_test is not None and y_test is not None:
            record["test_error"] = [_error(net, x_test, y_test) for net in nets]
        result["methods"][method] = record
    return result


def _batch_order(n: int, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """``(steps, batch_size)`` indices: passes over a fresh permutation, each image once per pass."""
    gen = torch.Generator().manual_seed(seed)
    per_pass = n // batch_size
    passes = -(-steps // per_pass)
    perms = [
        torch.randperm(n, generator=gen)[: per_pass * batch_size].view(per_pass, batch_size)
        for _ in range(passes)
    ]
    return torch.cat(perms)[:steps]


@torch.no_grad()
def _filter_distance(nets: Sequence[nn.Module], name: str) -> torch.Tensor:
    r""":math:`\max_j \|\hat W^{(j)} - \hat W^{(0)}\|_F` (float64 0-d tensor on the device)."""
    ref = unit_filters(nets[0].get_parameter(name)).double()
    return torch.stack(
        [(unit_filters(net.get_parameter(name)).double() - ref).norm() for net in nets[1:]]
    ).max()


@torch.no_grad()
def _error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 2000) -> float:
    was = model.training
    model.eval()
    wrong = sum(
        int((model(x[i : i + chunk]).argmax(1) != y[i : i + chunk]).sum())
        for i in range(0, x.shape[0], chunk)
    )
    model.train(was)
    return wrong / x.shape[0]


# -- the command's pipeline --------------------------------------------------------------------
def run_symmetry(
    *,
    depth: int = 2,
    seed: int = 0,
    data_dir: str | Path | None = None,
    source: str = "auto",
    steps: int = 300,
    copies: int = 3,
    lr: float = 0.05,
    batch_size: int = 100,
    alpha_spread: float = 10.0,
    check_batch: int = 500,
    train_images: int | None = None,
    bn_eps: float = 1e-5,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """The whole analysis on real MNIST: :func:`invariance_report` for float32 and float64,
    each with BatchNorm ``eps`` = :data:`EXACT_EPS` and ``eps = bn_eps``, on ``check_batch`` random training
    images; then :func:`trajectories` (network with ``bn_eps``, ``dtype``) on
    ``train_images`` random training images (default: up to 10,000), test error on the test
    images. One ArchBN of
    ``depth`` initialised from ``seed`` is used throughout."""
    from ..data import as_tensors, load_mnist

    for arg, value in (("steps", steps), ("copies", copies), ("batch_size", batch_size)):
        if not (isinstance(value, int) and value >= (2 if arg == "copies" else 1)):
            raise ValueError(
                f"{arg} must be an int >= {2 if arg == 'copies' else 1}, got {value!r}"
            )  # checked before the minutes of work below
    mnist = load_mnist(data_dir, source=source)
    n_train = len(mnist.train_labels)
    if train_images is None:
        train_images = min(10_000, n_train)
    for arg, value, limit in (
        ("check_batch", check_batch, n_train),
        ("train_images", train_images, n_train),
    ):
        if not (isinstance(value, int) and 1 <= value <= limit):
            raise ValueError(
                f"{arg} must be an int in [1, {limit}] (the training images of "
                f"{mnist.source}), got {value!r}"
            )
    gen = torch.Generator().manual_seed(seed)
    check_idx = torch.randperm(n_train, generator=gen)[:check_batch].numpy()
    train_idx = torch.randperm(n_train, generator=gen)[:train_images].numpy()
    x_check, y_check = as_tensors(
        mnist.train_images[check_idx],
        mnist.train_labels[check_idx],
        device=device,
        dtype=torch.float64,
    )
    x_train, y_train = as_tensors(
        mnist.train_images[train_idx], mnist.train_labels[train_idx], device=device, dtype=dtype
    )
    x_test, y_test = as_tensors(mnist.test_images, mnist.test_labels, device=device, dtype=dtype)

    model = ArchBN(
        depth,
        in_features=x_check.shape[1],
        num_classes=mnist.num_classes,
        generator=torch.Generator().manual_seed(seed),
    ).to(device)
    checks = {}
    for eps in sorted({EXACT_EPS, float(bn_eps)}):
        net = set_batchnorm_eps(copy.deepcopy(model), eps)
        for check_dtype in (torch.float32, torch.float64):
            key = f"{str(check_dtype).replace('torch.', '')}, eps={eps:g}"
            checks[key] = invariance_report(
                net, x_check, y_check, alpha_spread, check_dtype, lr=lr, generator=seed + 1
            )
    trained = trajectories(
        set_batchnorm_eps(copy.deepcopy(model), bn_eps),
        x_train,
        y_train,
        copies=copies,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        alpha_spread=alpha_spread,
        seed=seed + 2,
        x_test=x_test,
        y_test=y_test,
        progress=progress,
    )
    return {
        "config": {
            "depth": depth,
            "seed": seed,
            "data": str(mnist.source),
            "steps": steps,
            "copies": copies,
            "lr": lr,
            "batch_size": batch_size,
            "alpha_spread": alpha_spread,
            "check_batch": check_batch,
            "train_images": train_images,
            "bn_eps": bn_eps,
            "dtype": str(dtype).replace("torch.", ""),
            "device": str(device),
            "torch": torch.__version__,
        },
        "invariance": checks,
        "trajectories": trained,
    }


# -- report ------------------------------------------------------------------------------------
_CHECK_ROWS = [
    ("(a) loss: relative change", "loss_rel_change"),
    ("Euclidean gradient: relative change (not invariant)", "euclidean_gradient_rel_change"),
    ("(b) max_i ‖α_i ∇w̃_i − ∇w_i‖ / ‖∇w_i‖", "gradient_scaling_max_rel_dev"),
    ("(c) UN gradient at unit filters: max abs diff", "riemannian_gradient_max_abs_diff"),
    ("(c) UN gradient: relative diff", "riemannian_gradient_rel_diff"),
    ("(c) one RiemannianSGD step: max abs diff", "un_step_max_abs_diff"),
    ("(c) Table 1 step from each gradient: max abs diff", "un_step_from_gradients_max_abs_diff"),
    ("size of the UN step (max abs change)", "un_step_size"),
    (
        "(d) one Euclidean SGD step, normalised filters: max abs diff",
        "euclidean_step_filter_max_abs_diff",
    ),
    ("size of the Euclidean step (max abs change)", "euclidean_step_size"),
]


def _markdown(result: dict[str, Any], png_name: str) -> str:
    cfg, checks, traj = result["config"], result["invariance"], result["trajectories"]
    first = next(iter(checks.values()))
    lines = [
        f"# Filter-rescaling symmetry of ArchBN (depth {cfg['depth']})",
        "",
        f"Data: {cfg['data']}. Seed {cfg['seed']}. Filters of {', '.join(first['names'])} "
        f"rescaled by log-uniform factors in [1/{cfg['alpha_spread']:g}, "
        f"{cfg['alpha_spread']:g}] (drawn: {first['alpha_min']:.3g} to {first['alpha_max']:.3g}); "
        f"batch of {first['batch']} training images, train-mode BatchNorm; steps with lr "
        f"{first['lr']:g}.",
        "",
        "## Invariance checks",
        "",
        "| check | " + " | ".join(checks) + " |",
        "|---|" + "---|" * len(checks),
    ]
    for label, key in _CHECK_ROWS:
        lines.append(f"| {label} | " + " | ".join(f"{c[key]:.2e}" for c in checks.values()) + " |")
    lines += [
        "",
        f"`eps` is BatchNorm's epsilon: with `eps={EXACT_EPS:g}` (PyTorch refuses 0 in training) "
        "the symmetry is exact and every (a)-(c) entry is rounding error; PyTorch's default "
        "`eps=1e-5` breaks it by about eps/(2 α² var(h)) (relative).",
        "",
        f"## Trajectories from {traj['copies']} rescaled copies",
        "",
        f"{traj['steps']} steps, minibatch {traj['batch_size']}, lr {traj['lr']:g}, "
        f"{traj['dtype']}, BatchNorm eps {cfg['bn_eps']:g}; the same minibatches for every copy.",
        "",
        "| method | "
        + " | ".join(
            f"final max_j ‖Ŵ{k + 1}^(j) − Ŵ{k + 1}^(0)‖_F" for k in range(len(traj["names"]))
        )
        + " | max loss spread (last step) | test error per copy |",
        "|---|" + "---|" * (len(traj["names"]) + 2),
    ]
    for rec in traj["methods"].values():
        dists = " | ".join(f"{rec['final_filter_distance'][n]:.2e}" for n in traj["names"])
        errors = ", ".join(f"{e:.4f}" for e in rec.get("test_error", []))
        lines.append(f"| {rec['label']} | {dists} | {rec['loss_spread'][-1]:.2e} | {errors} |")
    lines += ["", f"![symmetry]({png_name})", ""]
    return "\n".join(lines)


def plot_symmetry(result: dict[str, Any], path: str | Path) -> Path:
    """Four panels: |∇w̃_i|/|∇w_i| against α_i (slope −1), loss per step for each copy and
    method, the distance between the copies' normalised W1 (log scale), and the loss spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj = result["trajectories"]
    checks = result["invariance"]
    key = next((k for k in checks if k == f"float64, eps={EXACT_EPS:g}"), next(iter(checks)))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    for name, ratio in checks[key]["gradient_ratio"].items():
        ax.loglog(ratio["alpha"], ratio["ratio"], ".", label=name)
    grid = [checks[key]["alpha_min"], checks[key]["alpha_max"]]
    ax.loglog(grid, [1 / a for a in grid], "k--", lw=1, label="1/α")
    ax.set(
        xlabel="α_i (filter scale)",
        ylabel="‖∇w̃_i‖ / ‖∇w_i‖",
        title=f"(b) Euclidean gradient scales as 1/α ({key})",
    )
    ax.legend(fontsize=8)

    palettes = {"bsgd": plt.cm.Reds, "un": plt.cm.Blues}
    styles = ["-", "--", ":", "-."]
    ax = axes[0, 1]
    window = max(1, traj["steps"] // 30)
    for method, rec in traj["methods"].items():
        for j, loss in enumerate(rec["loss"]):
            shade = palettes[method](0.9 - 0.45 * j / max(1, len(rec["loss"]) - 1))
            ax.plot(
                range(window - 1, len(loss)),
                _running_mean(loss, window),
                color=shade,
                lw=1,
                ls=styles[j % len(styles)],
                label=f"{rec['label']}, copy {j}",
            )
    ax.set(
        xlabel="step",
        ylabel=f"minibatch loss (mean of {window} steps)",
        yscale="log",
        title=f"loss of {traj['copies']} rescaled copies (UN copies overlap)",
    )
    ax.legend(fontsize=7)

    first, floor = traj["names"][0], 1e-17
    colors = {"bsgd": "tab:red", "un": "tab:blue"}
    ax = axes[1, 0]
    for method, rec in traj["methods"].items():
        ax.semilogy(
            [max(d, floor) for d in rec["filter_distance"][first]],
            color=colors[method],
            label=rec["label"],
        )
    ax.set(
        xlabel="step",
        ylabel="max_j ‖Ŵ1^(j) − Ŵ1^(0)‖_F",
        title="distance between the copies' unit-normalised W1",
    )
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    for method, rec in traj["methods"].items():
        ax.semilogy(
            [max(d, floor) for d in rec["loss_spread"]],
            color=colors[method],
            lw=1,
            label=rec["label"],
        )
    ax.set(
        xlabel="step",
        ylabel="max_j |L^(j) − L^(0)|",
        title=f"loss spread between copies (exact 0 drawn at {floor:g})",
    )
    ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"ArchBN depth {result['config']['depth']}: rescaling symmetry (paper §2–3)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _running_mean(values: Sequence[float], window: int) -> list[float]:
    sums = [0.0]
    for v in values:
        sums.append(sums[-1] + v)
    return [(sums[i] - sums[i - window]) / window for i in range(window, len(sums))]


def write_report(
    result: dict[str, Any], out_dir: str | Path, stem: str = "symmetry"
) -> tuple[Path, Path, Path]:
    """Write ``<stem>.json`` (all numbers and the config), ``<stem>.md`` (tables and the
    picture) and ``<stem>.png`` (:func:`plot_symmetry`) into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out / f"{stem}.{ext}" for ext in ("json", "md", "png"))
    json_path.write_text(json.dumps(result, indent=1))
    plot_symmetry(result, png_path)
    md_path.write_text(_markdown(result, png_path.name))
    return json_path, md_path, png_path
