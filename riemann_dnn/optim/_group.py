"""A param group of a :class:`~riemann_dnn.optim.RiemannianOptimizer`: the checks every
optimizer shares (the rate, the copies axis) and the facts read from a group's keys."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__: list[str] = []

Group = dict[str, Any]


def check_copies_value(owner: str, copies: Any, where: str) -> None:
    """``copies``: ``None`` or an int >= 1."""
    if copies is not None and not (
        isinstance(copies, int) and not isinstance(copies, bool) and copies >= 1
    ):
        raise ValueError(f"{owner}: copies must be an int >= 1 or None, got {copies!r}{where}")


def check_lr(owner: str, lr: Any, copies: int | None, where: str) -> None:
    """``lr``: a number >= 0, a one-element tensor (any shape, as ``torch.optim``), or (groups
    with ``copies``) a 1-D tensor of one rate per copy."""
    if isinstance(lr, torch.Tensor):
        per_copy = copies is not None and tuple(lr.shape) == (copies,)
        if not lr.is_floating_point() or not (lr.numel() == 1 or per_copy):
            raise ValueError(
                f"{owner}: a tensor lr must be a floating tensor of one element"
                + ("" if copies is None else f" or of shape ({copies},), one rate per copy")
                + f", got shape {tuple(lr.shape)} and dtype {lr.dtype}{where}"
            )
        if not torch.compiler.is_compiling() and not bool((torch.isfinite(lr) & (lr >= 0)).all()):
            raise ValueError(f"{owner}: lr must be finite and >= 0, got {lr}{where}")
        return
    if not (
        isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr >= 0
    ):
        raise ValueError(f"{owner}: lr must be a finite number >= 0, got {lr!r}{where}")


def check_copies(index: int, group: Group, param_groups: list[Group]) -> None:
    """Every tensor of a group with ``copies`` has that leading axis, and every group with
    copies holds the same number."""
    copies = group["copies"]
    if copies is None:
        return
    for position, param in enumerate(group["params"]):
        if param.ndim < 1 or param.shape[0] != copies:
            raise ValueError(
                f"param group {index}, parameter {position}: the group has copies="
                f"{copies}, so every tensor needs a leading axis of {copies} copies, but "
                f"this one has shape {tuple(param.shape)}; stack the copies with "
                f"torch.func.stack_module_state or drop 'copies'"
            )
    others = {g["copies"] for g in param_groups if g["copies"] is not None}
    if len(others) > 1:
        raise ValueError(
            f"param group {index}: copies={copies}, but another group has copies="
            f"{sorted(others - {copies})}; all groups with copies must hold the same "
            f"number of copies"
        )


def is_euclidean_group(group: Group) -> bool:
    """A group that names no manifold (or ``"euclidean"``) and holds no parameter carrying
    its own manifold: the Euclidean step, any shapes."""
    spec = group["manifold"]
    if spec is not None and not (isinstance(spec, str) and spec.lower() == "euclidean"):
        return False
    return spec is not None or not any(carries_manifold(p) for p in group["params"])


def carries_manifold(param: torch.Tensor) -> bool:
    """Whether ``param`` carries its own manifold (a
    :class:`~riemann_dnn.params.ManifoldParameter`), read when its group names none."""
    return getattr(param, "manifold", None) is not None


def scalar_rate(lr: float | torch.Tensor) -> float | torch.Tensor:
    """A one-element tensor rate as a 0-d tensor (``torch.optim``'s ``_to_scalar``); a rate
    per copy and numbers unchanged."""
    if isinstance(lr, torch.Tensor) and lr.ndim != 0 and lr.numel() == 1:
        return lr.reshape(())
    return lr
