"""A param group of :class:`~riemann_dnn.optim.RiemannianSGD`: the checks of its keys and the
hyper-parameters of its step."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..step import SGDHyperparameters, check_sgd_hyperparameters

__all__: list[str] = []

Group = dict[str, Any]


def check_hyperparameters(group: Group, where: str, *, defaults: bool = False) -> None:
    """Raise ``ValueError`` naming the first bad hyper-parameter of ``group`` (the
    defaults may hold a rate per copy: each group with copies checks its shape)."""
    copies = group.get("copies")
    if copies is not None and not (
        isinstance(copies, int) and not isinstance(copies, bool) and copies >= 1
    ):
        raise ValueError(
            f"RiemannianSGD: copies must be an int >= 1 or None, got {copies!r}{where}"
        )
    lr = group["lr"]
    if defaults and isinstance(lr, torch.Tensor) and lr.ndim == 1:
        copies = lr.shape[0]
    _check_lr(lr, copies, where)
    check_sgd_hyperparameters(
        "RiemannianSGD",
        group["momentum"],
        group["dampening"],
        group["weight_decay"],
        group["nesterov"],
        where=where,
    )


def _check_lr(lr: Any, copies: int | None, where: str) -> None:
    """``lr``: a number, a 0-d tensor, or (groups with ``copies``) one rate per copy."""
    if isinstance(lr, torch.Tensor):
        shapes = [()] if copies is None else [(), (copies,)]
        if tuple(lr.shape) not in shapes or not lr.is_floating_point():
            raise ValueError(
                "RiemannianSGD: a tensor lr must be a floating 0-d tensor"
                + ("" if copies is None else f" or have shape ({copies},), one rate per copy")
                + f", got shape {tuple(lr.shape)} and dtype {lr.dtype}{where}"
            )
        if not torch.compiler.is_compiling() and not bool((torch.isfinite(lr) & (lr >= 0)).all()):
            raise ValueError(f"RiemannianSGD: lr must be finite and >= 0, got {lr}{where}")
        return
    if not (
        isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr >= 0
    ):
        raise ValueError(f"RiemannianSGD: lr must be a finite number >= 0, got {lr!r}{where}")


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
    """A group that names no manifold (or ``"euclidean"``): plain SGD, any shapes."""
    spec = group["manifold"]
    return spec is None or (isinstance(spec, str) and spec.lower() == "euclidean")


def step_hyperparameters(group: Group) -> SGDHyperparameters:
    """The hyper-parameters of the group's step."""
    return SGDHyperparameters(
        group["lr"],
        group["momentum"],
        group["dampening"],
        group["nesterov"],
        group["weight_decay"],
    )
