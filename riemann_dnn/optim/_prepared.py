"""The prepared native path of :class:`~riemann_dnn.optim.RiemannianSGD`: a whole step of a
small CPU network as one C call per set of param groups with equal hyper-parameters.

The kernel (:class:`~riemann_dnn.step.native.PreparedStep`) is laid out once over the
groups' tensors -- unit rows (oblique filters) and plain Euclidean rows -- and cached until
the parameters or their momentum buffers change; when a group does not qualify, the whole
step takes the eager paths (:func:`~riemann_dnn.optim.riemannian_sgd`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from ..params import Geometry
from ..step.native import PreparedStep, native_available
from ._functional import ROW_KERNEL_DTYPES, takes_row_kernel, work
from ._group import Group, is_euclidean_group

__all__: list[str] = []

GeometryOf = Callable[[torch.Tensor, Group], Geometry]
Outcome = Literal["stepped", "rows", "skipped"]


class PreparedPath:
    """The prepared steps of an optimizer's param groups, cached (see the module docstring)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, ...], tuple[PreparedStep, bool]] = {}

    def clear(self) -> None:
        """Forget the prepared steps (the eager paths may create or replace buffers)."""
        self._cache.clear()

    def step(
        self,
        groups: list[Group],
        state: dict,
        geometry_of: GeometryOf,
        *,
        skip_nonfinite: bool,
    ) -> Outcome | None:
        """Step every group through :class:`~riemann_dnn.step.native.PreparedStep` calls
        -- one per set of groups with equal hyper-parameters -- when all of them qualify
        (CPU, one dtype, contiguous, Euclidean or unit rows, every gradient present).

        Returns ``None`` (nothing done) when some group does not qualify; ``"skipped"``
        (nothing done) when ``skip_nonfinite`` and a gradient is not finite; ``"rows"`` when
        the kernel left rows with a non-finite gradient untouched and stepped the others;
        else ``"stepped"``. New momentum buffers enter ``state`` when the step runs.
        """
        if not groups or torch.compiler.is_compiling() or not native_available():
            return None
        sets: dict[tuple, list[int]] = {}
        for index, group in enumerate(groups):
            sets.setdefault(_hyperparameters(group), []).append(index)
        calls = []
        for hyper, members in sets.items():
            prepared = self._prepare(
                tuple(members), [groups[i] for i in members], hyper[1] != 0, state, geometry_of
            )
            if prepared is None:
                return None
            grads = prepared.gradient_pointers()
            if grads is None:
                return None
            calls.append((hyper, prepared, grads))
        if skip_nonfinite and not all(prepared.all_finite(grads) for _, prepared, grads in calls):
            return "skipped"
        found = False
        for (
            lr,
            momentum,
            dampening,
            nesterov,
            weight_decay,
            maximize,
            _,
        ), prepared, grads in calls:
            first = prepared.first_step
            if first:  # new buffers enter the state only when the step runs
                for param, buf in zip(prepared.params, prepared.buffers):
                    state[param]["momentum_buffer"] = buf
            found |= prepared(
                grads,
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                nesterov=nesterov,
                weight_decay=weight_decay,
                maximize=maximize,
                first_step=first and momentum != 0,
            )
            prepared.first_step = False
        return "rows" if found else "stepped"

    def _prepare(
        self,
        key: tuple[int, ...],
        groups: list[Group],
        momentum: bool,
        state: dict,
        geometry_of: GeometryOf,
    ) -> PreparedStep | None:
        """The cached prepared step of these groups (rebuilt when their parameters or
        momentum changed), or ``None`` when they do not qualify."""
        params = [p for group in groups for p in group["params"]]
        cached = self._cache.get(key)
        if cached is not None and cached[1] == momentum and cached[0].valid_for(params):
            return cached[0]
        points, normalize = [], []
        for group in groups:
            if (
                group["foreach"] is False
                or group["fused"] is False
                or not group["params"]
                or group["copies"] != groups[0]["copies"]
                or group.get("filter_rate")
            ):
                return None
            euclidean = is_euclidean_group(group)
            for param in group["params"]:
                if (
                    param.device.type != "cpu"
                    or param.dtype != params[0].dtype
                    or param.dtype not in ROW_KERNEL_DTYPES
                    or not param.is_contiguous()
                ):
                    return None
                geometry = None if euclidean else geometry_of(param, group)
                if geometry is None or geometry.is_euclidean:
                    points.append(_plain_rows(param, group["copies"]))
                    normalize.append(False)
                elif takes_row_kernel(param, geometry):
                    rows = geometry.view(param)
                    points.append(rows.reshape(-1, rows.shape[-1]))
                    normalize.append(True)
                else:
                    return None
        buffers, first = [], False
        if momentum:
            buffers = [state[p].get("momentum_buffer") for p in params]
            if all(b is None for b in buffers):
                buffers = [torch.empty_like(p, dtype=work(p).dtype) for p in params]
                first = True
            elif any(b is None or not b.is_contiguous() for b in buffers):
                return None
        prepared = PreparedStep(
            points,
            normalize,
            [b.view(x.shape) for b, x in zip(buffers, points)] if momentum else None,
            params=params,
            copies=groups[0]["copies"] or 1,
        )
        prepared.first_step, prepared.buffers = first, buffers
        self._cache[key] = (prepared, momentum)
        return prepared


def _hyperparameters(group: Group) -> tuple:
    """The group's step hyper-parameters, hashable (a rate per copy as a tuple), and its
    copies: groups with equal ones share one native call."""
    lr = group["lr"]
    if isinstance(lr, torch.Tensor):
        lr = float(lr) if lr.ndim == 0 else tuple(lr.tolist())
    return (
        lr,
        group["momentum"],
        group["dampening"],
        group["nesterov"],
        group["weight_decay"],
        group["maximize"],
        group["copies"],
    )


def _plain_rows(param: torch.Tensor, copies: int | None) -> torch.Tensor:
    """A Euclidean parameter as rows for the plain kernel: ``(out, -1)`` (one row per
    copy and filter with copies), or one row for vectors and scalars."""
    if copies is not None:
        return (
            param.view(copies * param.shape[1], -1) if param.ndim >= 3 else param.view(copies, -1)
        )
    return param.view(param.shape[0], -1) if param.ndim >= 2 else param.view(1, -1)
