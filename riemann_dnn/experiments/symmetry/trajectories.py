"""B-SGD and UN trained from rescaled copies of one network on the same minibatches:
:func:`trajectories`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...manifolds import filter_matrix
from ...params import scale_invariant_weights
from .rescaling import random_filter_scales, rescale_filters, unit_filters
from .updates import METHOD_LABELS, method_optimizer

__all__ = ["trajectories"]


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
    unknown = [m for m in methods if m not in METHOD_LABELS]
    if unknown or not methods:
        raise ValueError(
            f"methods must be a non-empty subset of {list(METHOD_LABELS)}, got {list(methods)}"
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
        optimizers = [method_optimizer(net, method, lr, x[:batch_size]) for net in nets]
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
            "label": METHOD_LABELS[method],
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
