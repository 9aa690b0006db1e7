"""Non-finite gradients in a :class:`~riemann_dnn.optim.RiemannianOptimizer`: the checks (one fused
pass per device and dtype), the per-copy masks of stacked groups and the errors raised.

The checked modes check every gradient before any weight or state moves, on every path:
``nonfinite="raise"`` then raises :class:`NonFiniteGradientError`, ``nonfinite="skip"``
skips the step (per copy in groups with copies: the bad copies' weights and state are
saved, stepped with zero gradient, and put back). Rows whose update is zero or not finite
although their gradient is finite (a zero filter with zero gradient) keep their value, and
one warning names them. ``nonfinite="unchecked"`` checks nothing first: Euclidean
parameters take non-finite values as ``torch.optim`` writes them, and a manifold row (a
point, on manifolds without unit rows) whose gradient is not finite keeps its value and
state, as a zero update does (:func:`hold_nonfinite_rows` on the eager paths; the native
kernels leave such rows by themselves).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import torch

from ..step.fused import nonfinite_points, point_axes
from ._group import Group, is_euclidean_group

__all__ = ["NonFiniteGradientError"]


class NonFiniteGradientError(FloatingPointError):
    """A gradient holds NaN or inf; the weights were left untouched."""


def gradients_are_finite(groups: list[Group]) -> bool:
    """Whether every gradient in ``groups`` is finite: one fused pass over the
    gradients per (device, dtype) and one host synchronisation per device."""
    buckets: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for group in groups:
        for param in group["params"]:
            grad = param.grad
            if grad is not None and not grad.is_sparse:
                buckets[(grad.device, grad.dtype)].append(grad)
    if not torch.compiler.is_compiling():
        try:
            found: dict[torch.device, torch.Tensor] = {}
            for (device, _), grads in buckets.items():
                if device not in found:
                    found[device] = torch.zeros(1, device=device)
                # GradScaler's kernel: sets found to 1 if any entry is inf/NaN (and
                # multiplies the gradients by 1, which changes no value)
                torch._amp_foreach_non_finite_check_and_unscale_(
                    grads, found[device], torch.ones(1, device=device)
                )
            return not any(bool(flag) for flag in found.values())
        except (RuntimeError, NotImplementedError):  # a backend without that kernel
            pass
    # max |g| is inf or NaN iff g has a non-finite entry (and never overflows)
    return all(
        bool(torch.stack(torch._foreach_norm(grads, ord=math.inf)).isfinite().all())
        for grads in buckets.values()
    )


def bad_copies(groups: list[Group]) -> torch.Tensor | None:
    """The copies (a bool mask) whose gradient holds NaN/inf in any group with copies.

    One summation per gradient and one over their per-copy sums: a copy's total is finite
    whenever all its entries are (a NaN or inf entry makes it NaN or inf), and only when
    some total is not (a bad entry, or an overflow of finite ones) are the gradients
    checked entry by entry.
    """
    grads = [
        param.grad.reshape(param.shape[0], -1)
        for group in groups
        for param in group["params"]
        if param.grad is not None
    ]
    if not grads:
        return None

    device = grads[0].device
    totals = torch.stack([grad.sum(1).to(device, torch.float64) for grad in grads])
    bad = ~torch.isfinite(totals.sum(0))
    if bool(bad.any()):
        bad = torch.zeros_like(bad)
        for grad in grads:
            bad |= ~torch.isfinite(grad).all(1).to(device)
    return bad


def raise_nonfinite(param_groups: list[Group], detail: str = "") -> None:
    """Raise :class:`NonFiniteGradientError` naming every parameter whose gradient holds
    NaN/inf (``detail``: e.g. the bad copies)."""
    bad = [
        f"group {gi} parameter {pi} (shape {tuple(p.shape)})"
        for gi, g in enumerate(param_groups)
        for pi, p in enumerate(g["params"])
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]
    raise NonFiniteGradientError(
        f"non-finite gradient in {', '.join(bad)}{detail}; the weights were not changed. "
        f"Lower the learning rate, check the loss, or pass nonfinite='skip' to skip such "
        f"steps"
    )


def manifold_parameters(groups: list[Group], geometry_of):
    """``(group index, parameter index, parameter, geometry)`` of every parameter with a
    gradient that lies on a manifold (Euclidean groups are passed over without building a
    geometry: a 0-d parameter has none)."""
    for gi, group in enumerate(groups):
        if is_euclidean_group(group):
            continue
        for pi, param in enumerate(group["params"]):
            if param.grad is not None:
                geometry = geometry_of(param, group)
                if not geometry.is_euclidean:
                    yield gi, pi, param, geometry


def warn_degenerate(
    owner: str, param_groups: list[Group], geometry_of, unchecked: bool = False
) -> None:
    """Warn that rows (points) kept their value because their update was zero or not
    finite, naming the parameters that hold zero or non-finite rows; ``unchecked``
    (``nonfinite="unchecked"``): a non-finite gradient may be the cause, and is named."""
    named, bad = [], []
    for gi, pi, param, geometry in manifold_parameters(param_groups, geometry_of):
        point = geometry.view(param.detach())
        rows = point.reshape(-1, point.shape[-1]) if point.ndim > 1 else point.view(1, -1)
        norms = torch.linalg.vector_norm(rows.float(), dim=-1)
        count = int((~(norms > 0) | ~torch.isfinite(norms)).sum())
        if count:
            named.append(f"group {gi} parameter {pi} (shape {tuple(param.shape)}): {count}")
        if unchecked and not bool(torch.isfinite(param.grad).all()):
            bad.append(f"group {gi} parameter {pi}")
    where = f" ({'; '.join(named)} zero or non-finite rows)" if named else ""
    if bad:
        where += f" (non-finite gradient in {', '.join(bad)}; nonfinite='unchecked')"
    warnings.warn(
        f"{owner}: some rows kept their value because their update was zero or not "
        f"finite{where}; a zero filter with a zero gradient is not on its manifold and does "
        f"not move. Re-initialise such filters, or rebuild the optimizer to project them",
        RuntimeWarning,
        stacklevel=6,  # warn_degenerate, _step_all, step, no_grad, torch's step hooks
    )


def freeze_copies(
    groups: list[Group], state: dict, bad: torch.Tensor, state_tensors: tuple[str, ...]
) -> list:
    """Zero the bad copies' gradients and save their weights and state tensors, to be put
    back after the step (a step with zero gradient still renormalises)."""
    kept = []
    for group in groups:
        for param in group["params"]:
            if param.grad is None:
                continue
            mask = bad.to(param.device)
            param.grad[mask] = 0
            kept.append((param, (mask, param[mask].clone())))
            entry = state.get(param, {})
            for key in state_tensors:
                tensor = entry.get(key)
                if isinstance(tensor, torch.Tensor) and tensor.shape[:1] == param.shape[:1]:
                    kept.append((tensor, (mask, tensor[mask].clone())))
    return kept


def hold_nonfinite_rows(groups: list[Group], geometry_of, state: dict, state_tensors) -> list:
    """For ``nonfinite="unchecked"`` on the eager paths: step every manifold row (point)
    whose gradient is not finite with a zero gradient (a masked copy stands in for
    ``.grad`` during the step), and return what :func:`release_rows` puts back after it --
    the gradient, and those rows of the parameter and of its state tensors as they were.
    Empty (one pass over the manifold gradients, one host synchronisation per device) when
    every such gradient is finite."""
    masks = []
    for _, _, param, geometry in manifold_parameters(groups, geometry_of):
        if param.grad.is_sparse:
            continue
        axis = point_axes(geometry.manifold)
        masks.append((param, geometry.view, nonfinite_points(geometry.view(param.grad), axis)))
    flags: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
    for *_, bad in masks:
        flags[bad.device].append(bad.any())
    if not any(bool(torch.stack(found).any()) for found in flags.values()):  # one sync a device
        return []
    held = []
    for param, view, bad in masks:
        if not bool(bad.any()):
            continue
        grad = param.grad
        held.append((param, "grad", view, bad, grad))
        param.grad = view(grad).masked_fill(bad, 0).reshape(grad.shape)
        held.append((param, None, view, bad, view(param.detach()).clone()))
        entry = state.get(param, {})
        for key in state_tensors:
            tensor = entry.get(key)
            if isinstance(tensor, torch.Tensor) and tensor.shape == param.shape:
                held.append((param, key, view, bad, view(tensor).clone()))
    return held


def release_rows(held: list, state: dict) -> None:
    """Put back what :func:`hold_nonfinite_rows` held: each gradient, and the saved rows
    into the parameter and into its state tensors as they are after the step (a step may
    replace them)."""
    for param, key, view, bad, saved in held:
        if key == "grad":
            param.grad = saved
            continue
        tensor = param.detach() if key is None else state.get(param, {}).get(key)
        if tensor is not None:
            target = view(tensor)
            target.copy_(torch.where(bad, saved.to(target.dtype), target))
