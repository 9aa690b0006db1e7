r"""``RiemannianAdam``: Adam with each parameter on its manifold, and its functional form
:func:`riemannian_adam`, as ``torch/optim/adam.py`` holds ``Adam`` and ``adam``.

The step is Bécigneul & Ganea's (ICLR 2019), written once in :mod:`riemann_dnn.step.adam`.
Parameters are split by geometry: Euclidean ones take ``torch.optim.Adam``'s own kernels
(so they equal ``torch.optim.Adam``/``AdamW`` bit for bit, flag for flag); unit-norm ones
(oblique rows, spheres) on the CPU take the row-fused kernel
(:func:`riemann_dnn.step.native.oblique_adam_`) or, elsewhere, the in-place sphere kernel;
the rest take the shared reference step, one call per parameter. What every Riemannian
optimizer shares (groups naming manifolds, placement, stacked copies, non-finite
gradients, state dicts, the prepared-kernel cache) is
:class:`~riemann_dnn.optim.RiemannianOptimizer`.
"""

from __future__ import annotations

import ctypes
import functools
import operator
from collections.abc import Hashable, Iterable
from typing import Any, Literal

import torch
from torch.optim.adam import adam as _torch_adam
from torch.optim.optimizer import _get_scalar_dtype, _to_scalar

from ..manifolds import working_dtype
from ..params import Geometry
from ..step.adam import (
    AdamHyperparameters,
    AdamState,
    check_adam_hyperparameters,
    checked_sphere_adam_step_,
    riemannian_adam_step,
    second_moment_axes,
)
from ..step.fused import nonfinite_points, point_axes, unit_norm_axis
from ..step.native import FiniteCheck, PreparedAdamRows, adam_native_available, oblique_adam_
from ._functional import ROW_KERNEL_DTYPES, rate_for
from ._group import Group, is_euclidean_group, scalar_rate
from .optimizer import RiemannianOptimizer

__all__ = ["RiemannianAdam", "RiemannianAdamW", "riemannian_adam"]


class RiemannianAdam(RiemannianOptimizer):
    r"""Riemannian Adam (Bécigneul & Ganea, ICLR 2019), with amsgrad and decoupled weight
    decay (AdamW).

    Each param group names the manifold its parameters live on (``"manifold"``: e.g.
    ``"oblique"`` -- every filter, i.e. row of the weight viewed as ``(out, -1)``, of unit
    norm -- ``"sphere"``, ``"stiefel"``, or a manifold object; default: the manifold a
    :class:`~riemann_dnn.params.ManifoldParameter` carries, else Euclidean). For a
    parameter :math:`x` with gradient :math:`g` (:math:`-g` with ``maximize``), at step
    :math:`t`:

    .. math::

        r = P_x(g + \omega x),\quad m \leftarrow \beta_1 m + (1-\beta_1) r,\quad
        v \leftarrow \beta_2 v + (1-\beta_2) \langle r, r\rangle_x,\\
        x \leftarrow R_x\Big(-\frac{\lambda}{1-\beta_1^t}\,
        \frac{m}{\sqrt{\hat v}/\sqrt{1-\beta_2^t} + \epsilon}\Big),\quad
        m \leftarrow \mathcal{T}_{x\to x^+}(m)

    with :math:`\hat v = v` (or its running maximum with ``amsgrad``). The first moment
    lives in the tangent space and is carried to the new point by the manifold's vector
    transport; the second moment is one value per component of the manifold -- per
    filter (row) on ``"oblique"``, per point on spheres and Stiefel -- and elementwise on
    Euclidean parameters, which follow ``torch.optim.Adam`` (``AdamW`` with
    ``decoupled_weight_decay``) bit for bit. See :mod:`riemann_dnn.step.adam` for the
    formulas and for what decoupled weight decay means on a manifold (nothing, on the
    fixed-norm ones: the norm it would shrink is fixed by the constraint).

    Groups, stacked copies (``"copies": n``, a rate per copy), non-finite gradients and
    state dicts are those of :class:`~riemann_dnn.optim.RiemannianOptimizer`. The state of
    a constrained parameter holds ``exp_avg`` (parameter-shaped) and ``exp_avg_sq`` (and
    ``max_exp_avg_sq``) with one value per component: shape ``(out, 1)`` for an oblique
    weight with ``out`` filters; float32 for half-precision parameters. The step count
    ``t`` is one per parameter, so with copies it is shared: a copy whose step
    ``nonfinite="skip"`` skipped keeps its weights and moments, but its count still
    advances, and its later bias corrections are those of one step further on than a
    separate optimizer's would be.

    Args:
        params: parameters or param groups (dicts with ``"params"`` and optionally
            ``"manifold"``, ``"retraction"``, ``"copies"`` and any hyper-parameter below).
        lr: the learning rate: a number or a one-element tensor, or in groups with copies
            a tensor of one rate per copy.
        betas, eps, weight_decay, amsgrad, maximize: as in ``torch.optim.Adam``.
        decoupled_weight_decay: AdamW's decay, :math:`x \leftarrow x(1 - \lambda\omega)`
            on Euclidean parameters (:class:`RiemannianAdamW` sets it).
        manifold, retraction, copies: defaults for groups that set none.
        foreach, fused: ``torch.optim.Adam``'s flags, for the Euclidean parameters (same
            kernels, same numbers). For unit-norm parameters (``"oblique"``, ``"sphere"``
            with the normalize retraction) on the CPU the default is the row-fused native
            kernel (:func:`riemann_dnn.step.native.oblique_adam_`, compiled at first use;
            the eager kernel with one notice where no C compiler is found); ``fused=False``
            takes the in-place torch kernel, ``foreach=False`` the reference step.
        nonfinite, project_initial: see :class:`~riemann_dnn.optim.RiemannianOptimizer`.

    Example::

        groups = riemann_dnn.params.param_groups(model)  # BN-fed weights -> "oblique"
        opt = RiemannianAdam(groups, lr=1e-3)
    """

    name = "RiemannianAdam"
    state_tensors = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float | torch.Tensor, float | torch.Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
        manifold: Any = None,
        retraction: str | None = None,
        copies: int | None = None,
        foreach: bool | None = None,
        fused: bool | None = None,
        nonfinite: Literal["raise", "skip", "unchecked"] = "raise",
        project_initial: bool = True,
    ):
        if fused and foreach:
            raise RuntimeError(f"{self.name}: `fused` and `foreach` cannot be `True` together.")
        if isinstance(betas, (tuple, list)) and len(betas) == 2:
            betas = tuple(map(_to_scalar, betas))
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            manifold=manifold,
            retraction=retraction,
            copies=copies,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults, nonfinite=nonfinite, project_initial=project_initial)

    # -- the base's hooks -----------------------------------------------------------------
    def _check_hyperparameters(self, group: Group, where: str) -> None:
        lr, betas, foreach = group["lr"], group["betas"], group["foreach"]
        if isinstance(lr, torch.Tensor) and lr.numel() == 1 and foreach:
            raise ValueError(
                f"{self.name}: lr as a Tensor is not supported for capturable=False and "
                f"foreach=True{where}; pass a float lr, or foreach=None"
            )
        if isinstance(betas, (tuple, list)) and len(betas) == 2:
            tensors = [isinstance(b, torch.Tensor) for b in betas]
            if any(tensors) and not all(tensors):
                raise ValueError(
                    f"{self.name}: betas must be either both floats or both Tensors, got "
                    f"{betas!r}{where}"
                )
            if all(tensors):
                if foreach:
                    raise ValueError(
                        f"{self.name}: betas[0] as a Tensor is not supported for "
                        f"capturable=False and foreach=True{where}; pass floats"
                    )
                if any(b.numel() != 1 for b in betas):
                    raise ValueError(f"{self.name}: Tensor betas must be 1-element{where}")
                betas = tuple(float(b) for b in betas)
        check_adam_hyperparameters(
            self.name, betas, group["eps"], group["weight_decay"], where=where
        )

    def _step_group(self, group: Group, found: torch.Tensor) -> None:
        params = []
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError(f"{self.name} does not support sparse gradients")
            params.append(param)
        if not params:
            return
        geometries = self.geometries(params, group)
        states = [
            self._state_of(p, None if geometries is None else geometries[i], group)
            for i, p in enumerate(params)
        ]
        riemannian_adam(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
            [s["step"] for s in states],
            geometries,
            hp=_hyperparameters(group),
            foreach=group["foreach"],
            fused=group["fused"],
            maximize=group["maximize"],
            found_nonfinite=found,
        )

    def _state_shapes(self, param: torch.Tensor, group: Group) -> dict[str, tuple[int, ...]]:
        """Those :func:`_fresh_state` gives: a parameter-shaped first moment; the second
        moment parameter-shaped, or one value per component of a constrained parameter."""
        geometry = None if is_euclidean_group(group) else self.geometry(param, group)
        constrained = geometry is not None and not geometry.is_euclidean
        second = _second_moment_shape(param, geometry) if constrained else param.shape
        return {key: param.shape if key == "exp_avg" else second for key in self.state_tensors}

    def _state_of(self, param: torch.Tensor, geometry: Geometry | None, group: Group):
        """The parameter's state, initialised (zero moments) on its first step. Moments of
        another dtype or device (the parameter's changed since) are converted and stored
        back (:meth:`state_tensor`)."""
        state = self.state[param]
        if "step" not in state:
            state.update(_fresh_state(param, geometry, group))
        elif group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = state["exp_avg_sq"].clone()
        keep = None if self._state_in_working_precision(param, group) else param.dtype
        for key in self.state_tensors:
            self.state_tensor(param, key, keep)
        return state

    def _kernel_key(self, group: Group) -> Hashable | None:
        """Groups with equal hyper-parameters and flags share one prepared kernel; ``None``
        where the native kernel cannot run or the group turns it off."""
        if group["foreach"] is False or group["fused"] is False or not adam_native_available():
            return None
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            lr = float(lr) if lr.numel() == 1 else tuple(lr.tolist())
        return (
            lr,
            tuple(float(b) for b in group["betas"]),
            group["eps"],
            group["weight_decay"],
            group["amsgrad"],
            group["decoupled_weight_decay"],
            group["maximize"],
            group["copies"],
            group["foreach"],
            group["fused"],
        )

    def _prepare_kernel(self, groups: list[Group]) -> _AdamKernel | None:
        return _AdamKernel.prepare(groups, self.geometry, self.state)

    def _state_in_working_precision(self, param: torch.Tensor, group: Group) -> bool:
        """Constrained parameters only: Euclidean ones keep ``torch.optim.Adam``'s state, in
        the parameter's dtype."""
        return not (is_euclidean_group(group) or self.geometry(param, group).is_euclidean)


class RiemannianAdamW(RiemannianAdam):
    """:class:`RiemannianAdam` with decoupled weight decay, default ``weight_decay=1e-2``:
    what ``torch.optim.AdamW`` is to ``torch.optim.Adam``, so that code written for
    ``AdamW`` (and its default decay) ports by changing the class name. Its Euclidean
    parameters equal ``torch.optim.AdamW``'s bit for bit."""

    name = "RiemannianAdamW"

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float | torch.Tensor, float | torch.Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        **kwargs: Any,
    ):
        kwargs.setdefault("decoupled_weight_decay", True)
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **kwargs)


def _hyperparameters(group: Group) -> AdamHyperparameters:
    """The hyper-parameters of the group's step."""
    return AdamHyperparameters(
        scalar_rate(group["lr"]),
        tuple(group["betas"]),
        group["eps"],
        group["weight_decay"],
        group["amsgrad"],
        group["decoupled_weight_decay"],
    )


def _fresh_state(param: torch.Tensor, geometry: Geometry | None, group: Group) -> dict:
    """Zero state: ``torch.optim.Adam``'s for Euclidean parameters; for constrained ones a
    parameter-shaped first moment and one second-moment value per component, in the
    working precision, with the step count on the CPU."""
    if geometry is None or geometry.is_euclidean:
        fused = group["fused"]
        step = (
            torch.zeros((), dtype=_get_scalar_dtype(is_fused=fused), device=param.device)
            if fused
            else torch.tensor(0.0, dtype=_get_scalar_dtype())
        )
        zeros = [torch.zeros_like(param, memory_format=torch.preserve_format) for _ in range(3)]
    else:
        step = torch.tensor(0.0, dtype=_get_scalar_dtype())
        dtype = working_dtype(param.dtype)
        moment = _second_moment_shape(param, geometry)
        zeros = [
            torch.zeros(param.shape, dtype=dtype, device=param.device),
            torch.zeros(moment, dtype=dtype, device=param.device),
            torch.zeros(moment, dtype=dtype, device=param.device),
        ]
    state = {"step": step, "exp_avg": zeros[0], "exp_avg_sq": zeros[1]}
    if group["amsgrad"]:
        state["max_exp_avg_sq"] = zeros[2]
    return state


def _second_moment_shape(param: torch.Tensor, geometry: Geometry) -> tuple[int, ...]:
    """The shape of a constrained parameter's second moment: its point view's shape with
    the component axes (:func:`~riemann_dnn.step.adam.second_moment_axes`) of size 1."""
    shape = geometry.view(torch.empty(param.shape, device="meta")).shape
    axes = second_moment_axes(geometry.manifold)
    axes = (axes,) if isinstance(axes, int) else axes
    ndim = len(shape)
    return tuple(1 if d - ndim in axes else size for d, size in enumerate(shape))


def _usable_state(param: torch.Tensor, entry: dict, geometry: Geometry | None, group: Group):
    """Whether ``entry`` holds the state :func:`_fresh_state` would make (shapes, dtypes,
    device, contiguous), so that a prepared kernel can step it in place."""
    fresh = _fresh_state(param.to("meta"), geometry, group)
    for key, like in fresh.items():
        value = entry.get(key)
        if not isinstance(value, torch.Tensor):
            return False
        if key == "step":
            if value.numel() != 1:
                return False
            continue
        if (
            value.shape != like.shape
            or value.dtype != like.dtype
            or value.device != param.device
            or not value.is_contiguous()
        ):
            return False
    return True


def _pack_steps(states: list[dict]) -> torch.Tensor | None:
    """One tensor holding the step counts of ``states`` (in order), whose entries become
    their ``"step"`` tensors (0-d views), so that one ``add_`` counts a step of all of
    them; ``None`` (the counts left as they are) when they differ in dtype or device."""
    counts = [entry["step"] for entry in states]
    if not counts or len({(c.dtype, c.device) for c in counts}) != 1:
        return None
    packed = torch.stack([c.reshape(()) for c in counts])
    for entry, view in zip(states, packed.unbind()):
        entry["step"] = view
    return packed


class _AdamKernel:
    """RiemannianAdam's :class:`~riemann_dnn.optim.optimizer.PreparedKernel` over a set of
    groups: Euclidean parameters through ``torch.optim.Adam``'s functional (the groups'
    flags), unit-row ones through one call of
    :class:`~riemann_dnn.step.native.PreparedAdamRows`."""

    def __init__(self, params, euclidean, rows, states, fresh, copies):
        self.params = params
        self.euclidean, self.rows = euclidean, rows  # indices into params
        self.states = states
        self.amsgrad = "max_exp_avg_sq" in states[0]
        self._addresses = [p.data_ptr() for p in params]
        self._layout = [(p.dtype, p.shape) for p in params]
        self._finite = FiniteCheck(params)
        self._grad_ptrs = (ctypes.c_void_p * len(rows))()
        self._counts = _pack_steps([states[i] for i in [*euclidean, *rows]])
        self._row_counts = None if self._counts is None else self._counts[len(euclidean) :]
        # new entries (fresh state, packed counts) enter the optimizer's state at the step
        self._unpublished = fresh or self._counts is not None
        self._row_steps = [states[i]["step"] for i in rows]
        # torch.optim.Adam(fused=True)'s op, called with the lists it would build: per
        # dtype, the members and their params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps
        members: dict[torch.dtype, list[int]] = {}
        for i in euclidean:
            members.setdefault(params[i].dtype, []).append(i)
        self._buckets = [
            (
                indices,
                [params[i] for i in indices],
                *([states[i][key] for i in indices] for key in ("exp_avg", "exp_avg_sq")),
                [states[i]["max_exp_avg_sq"] for i in indices] if self.amsgrad else [],
                [states[i]["step"] for i in indices],
            )
            for indices in members.values()
        ]
        self._fused_steps = [states[i]["step"] for i in euclidean] + self._row_steps
        self._rows = None
        if rows:
            points, moments, firsts, maxima = [], [], [], []
            for i, geometry in rows.items():
                view = _row_view(params[i], geometry)
                point = view(params[i])
                points.append(point.reshape(-1, point.shape[-1]))
                firsts.append(view(states[i]["exp_avg"]).reshape(points[-1].shape))
                moments.append(states[i]["exp_avg_sq"].view(-1, 1))
                if self.amsgrad:
                    maxima.append(states[i]["max_exp_avg_sq"].view(-1, 1))
            self._rows = PreparedAdamRows(
                points, firsts, moments, maxima if self.amsgrad else None, copies=copies or 1
            )

    @classmethod
    def prepare(cls, groups: list[Group], geometry_of, state) -> _AdamKernel | None:
        copies = groups[0]["copies"]
        params, euclidean, rows = [], [], {}
        row_dtype = None
        for group in groups:
            if not group["params"] or group["copies"] != copies:
                return None
            for param in group["params"]:
                if param.device.type != "cpu" or not param.is_contiguous():
                    return None
                index = len(params)
                params.append(param)
                geometry = None if is_euclidean_group(group) else geometry_of(param, group)
                if geometry is None or geometry.is_euclidean:
                    euclidean.append(index)
                    continue
                if _row_view(param, geometry) is None or row_dtype not in (None, param.dtype):
                    return None
                row_dtype = param.dtype
                rows[index] = geometry
        geometry_by_index = dict(rows)
        entries = [state[p] if p in state else {} for p in params]
        fresh = all("step" not in entry for entry in entries)
        if fresh:
            states = [
                _fresh_state(p, geometry_by_index.get(i), groups[0]) for i, p in enumerate(params)
            ]
        else:
            states = [dict(entry) for entry in entries]
            for i, (p, entry) in enumerate(zip(params, states)):
                if not _usable_state(p, entry, geometry_by_index.get(i), groups[0]):
                    return None
        return cls(params, euclidean, rows, states, fresh, copies)

    def valid_for(self, groups: list[Group]) -> bool:
        params = [p for group in groups for p in group["params"]]
        return (
            groups[0]["amsgrad"] == self.amsgrad
            and len(params) == len(self.params)
            and all(map(operator.is_, params, self.params))
            and [p.data_ptr() for p in params] == self._addresses
            and [(p.dtype, p.shape) for p in params] == self._layout
        )

    def gradient_pointers(self):
        grads = [p.grad for p in self.params]
        if any(g is None or g.layout is not torch.strided for g in grads):
            return None
        ptrs = self._grad_ptrs
        for k, i in enumerate(self.rows):
            grad = grads[i]
            if grad.dtype is not self.params[i].dtype or not grad.is_contiguous():
                return None
            ptrs[k] = grad.data_ptr()
        return grads

    def all_finite(self, grads) -> bool:
        self._finite.bind(grads)  # only when checking: nonfinite="unchecked" skips it
        return self._finite.check()

    def __call__(self, grads, groups: list[Group], state) -> int:
        group = groups[0]
        if self._unpublished:
            for param, entry in zip(self.params, self.states):
                state[param].update(entry)
            self._unpublished = False
        hp = _hyperparameters(group)
        fast = group["fused"] is True and not (isinstance(hp.lr, torch.Tensor) and hp.lr.ndim)
        if fast:  # as torch.optim.adam._fused_adam, without regrouping the lists each step
            if self._counts is None:
                torch._foreach_add_(self._fused_steps, 1)
            else:  # every count at once (one op instead of one per parameter)
                self._counts.add_(1)
            self._fused_adam(grads, hp, group["maximize"])
        elif self.euclidean:
            pick = [self.params[i] for i in self.euclidean]
            riemannian_adam(
                pick,
                [grads[i] for i in self.euclidean],
                [self.states[i]["exp_avg"] for i in self.euclidean],
                [self.states[i]["exp_avg_sq"] for i in self.euclidean],
                [self.states[i]["max_exp_avg_sq"] for i in self.euclidean] if hp.amsgrad else [],
                [self.states[i]["step"] for i in self.euclidean],
                None,
                hp=hp,
                foreach=group["foreach"],
                fused=group["fused"],
                maximize=group["maximize"],
            )
        if self._rows is None:
            return 0
        if self._row_counts is None:
            if not fast:
                torch._foreach_add_(self._row_steps, 1)
            steps = [float(s) for s in self._row_steps]
        else:
            if not fast:
                self._row_counts.add_(1)
            steps = self._row_counts.tolist()
        return self._rows(
            self._grad_ptrs,
            lr=group["lr"],
            steps=steps,
            betas=tuple(float(b) for b in group["betas"]),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsgrad=group["amsgrad"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            maximize=group["maximize"],
        )

    def _fused_adam(self, grads, hp: AdamHyperparameters, maximize: bool) -> None:
        """``torch._fused_adam_`` (``_fused_adamw_``) on the Euclidean parameters, one call
        per dtype, with the arguments ``torch.optim.Adam(fused=True)`` passes."""
        op = torch._fused_adamw_ if hp.decoupled_weight_decay else torch._fused_adam_
        beta1, beta2 = _to_scalar(hp.betas[0]), _to_scalar(hp.betas[1])
        for indices, params, exp_avgs, exp_avg_sqs, maxima, steps in self._buckets:
            op(
                params,
                [grads[i] for i in indices],
                exp_avgs,
                exp_avg_sqs,
                maxima,
                steps,
                amsgrad=hp.amsgrad,
                lr=hp.lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=hp.weight_decay,
                eps=hp.eps,
                maximize=maximize,
                grad_scale=None,
                found_inf=None,
            )


def riemannian_adam(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    max_exp_avg_sqs: list[torch.Tensor],
    state_steps: list[torch.Tensor],
    geometries: list[Geometry] | None,
    *,
    hp: AdamHyperparameters,
    foreach: bool | None = None,
    fused: bool | None = None,
    maximize: bool = False,
    found_nonfinite: torch.Tensor | None = None,
) -> None:
    """Functional form of :class:`RiemannianAdam`: updates ``params`` and the state lists'
    tensors in place (``state_steps`` counted up by one).

    ``geometries=None`` means every parameter is Euclidean. The state of a Euclidean
    parameter is ``torch.optim.Adam``'s; that of a constrained one has ``exp_avg`` shaped
    as the parameter and ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad) one value per
    component of its point (:func:`~riemann_dnn.step.adam.second_moment_axes`: the point
    view's shape with the component axes of size 1), all in the working precision
    (float32 for half parameters). ``max_exp_avg_sqs`` is ``[]`` without amsgrad.

    With stacked copies (geometries whose view keeps a leading copies axis), ``hp.lr`` may
    be a tensor of one rate per copy; Euclidean parameters then take
    ``torch.optim.Adam``'s single-tensor arithmetic with a rate per copy. ``foreach`` and
    ``fused`` are passed to ``torch.optim.adam.adam`` for the Euclidean parameters; for the
    constrained ones, ``fused=False`` or ``foreach=False`` avoids the row-fused kernel and
    ``foreach=False`` takes the reference step. Unit-norm rows left untouched by the
    row-fused kernel (a non-finite gradient) set ``found_nonfinite``.
    """
    if not params:
        return
    maxima = max_exp_avg_sqs if hp.amsgrad else [None] * len(params)
    euclidean = [i for i in range(len(params)) if geometries is None or geometries[i].is_euclidean]
    constrained = [i for i in range(len(params)) if i not in set(euclidean)]
    per_copy = isinstance(hp.lr, torch.Tensor) and hp.lr.ndim == 1
    if euclidean and per_copy:
        _euclidean_adam_per_copy(
            params, grads, exp_avgs, exp_avg_sqs, maxima, state_steps, euclidean, hp, maximize
        )
    elif euclidean:
        pick = lambda values: [values[i] for i in euclidean]  # noqa: E731
        _torch_adam(
            pick(params),
            pick(grads),
            pick(exp_avgs),
            pick(exp_avg_sqs),
            pick(max_exp_avg_sqs) if hp.amsgrad else [],
            pick(state_steps),
            foreach=foreach,
            fused=fused,
            decoupled_weight_decay=hp.decoupled_weight_decay,
            amsgrad=hp.amsgrad,
            beta1=hp.betas[0],
            beta2=hp.betas[1],
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            eps=hp.eps,
            maximize=maximize,
        )
    if not constrained:
        return
    hp = hp._replace(betas=tuple(float(b) for b in hp.betas))  # tensor betas (torch's option)
    for i in constrained:
        state_steps[i] += 1
    rows = []
    if foreach is not False and fused is not False:
        rows = [i for i in constrained if _row_view(params[i], geometries[i]) is not None]
    if rows:
        views = [_row_view(params[i], geometries[i]) for i in rows]
        oblique_adam_(
            [view(params[i]) for i, view in zip(rows, views)],
            [view(grads[i]) for i, view in zip(rows, views)],
            [view(exp_avgs[i]) for i, view in zip(rows, views)],
            [_moment_rows(exp_avg_sqs[i], view(params[i])) for i, view in zip(rows, views)],
            [_moment_rows(maxima[i], view(params[i])) for i, view in zip(rows, views)]
            if hp.amsgrad
            else [],
            [state_steps[i] for i in rows],
            lr=hp.lr,
            betas=hp.betas,
            eps=hp.eps,
            weight_decay=hp.weight_decay,
            amsgrad=hp.amsgrad,
            decoupled_weight_decay=hp.decoupled_weight_decay,
            maximize=maximize,
            found_nonfinite=found_nonfinite,
        )
    for i in constrained:
        if i in rows:
            continue
        geometry = geometries[i]
        axis = unit_norm_axis(geometry.manifold)
        point = geometry.view(params[i])
        if foreach is not False and axis is not None:
            kept = checked_sphere_adam_step_(
                point,
                geometry.view(grads[i]),
                geometry.view(exp_avgs[i]),
                exp_avg_sqs[i],
                maxima[i],
                axis,
                float(state_steps[i]),
                rate_for(hp, point),
                maximize=maximize,
            )
        else:
            kept = _reference_step(
                params[i],
                grads[i],
                exp_avgs[i],
                exp_avg_sqs[i],
                maxima[i],
                float(state_steps[i]),
                geometry,
                hp,
                maximize,
            )
        if kept and found_nonfinite is not None:
            found_nonfinite.fill_(1)


def _row_view(param: torch.Tensor, geometry: Geometry):
    """A map from ``param`` (or a same-shaped tensor) to its unit-norm rows, ``(rows, n)``
    or ``(copies, rows, n)``, when the row-fused kernel can step it (CPU; unit norms along
    the last axis or over the whole point; the normalize retraction and projection
    transport); else ``None``."""
    if param.device.type != "cpu" or param.dtype not in ROW_KERNEL_DTYPES:
        return None
    axis = unit_norm_axis(geometry.manifold)
    if axis is None:
        return None
    view = geometry.view
    stacked = isinstance(view, functools.partial)
    ndim = len(geometry.manifold.point_shape)
    if axis == -1 or axis == ndim - 1:
        keep = -1
    elif isinstance(axis, tuple) and sorted(a % ndim for a in axis) == list(range(ndim)):
        keep = ndim  # the whole point is one row
    else:
        return None

    def rows(tensor: torch.Tensor) -> torch.Tensor:
        point = view(tensor)
        lead = point.shape[:1] if stacked else ()
        if keep == -1:
            inner = point.shape[len(lead) :]
            return point.reshape(*lead, -1, inner[-1])
        return point.reshape(*lead, 1, -1)

    return rows


def _moment_rows(moment: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A per-row second moment viewed as ``(*rows.shape[:-1], 1)``."""
    return moment.view(*rows.shape[:-1], 1)


def _reference_step(
    param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, geometry, hp, maximize
) -> bool:
    """The readable reference: the shared step on the parameter's point (per copy on
    manifolds whose formulas do not broadcast over a copies axis), written back in place;
    a point whose new value or state is not finite keeps both (returns ``True`` then)."""
    view, manifold = geometry.view, geometry.manifold
    work = working_dtype(param.dtype)
    point, gradient, moment = view(param), view(grad), view(exp_avg)
    stacked = isinstance(view, functools.partial)
    if stacked and not getattr(manifold, "broadcasts_over_copies", False):
        pieces = [
            (
                point[k],
                gradient[k],
                moment[k],
                exp_avg_sq[k],
                None if max_exp_avg_sq is None else max_exp_avg_sq[k],
                hp.lr[k] if isinstance(hp.lr, torch.Tensor) and hp.lr.ndim == 1 else hp.lr,
            )
            for k in range(point.shape[0])
        ]
    else:
        pieces = [(point, gradient, moment, exp_avg_sq, max_exp_avg_sq, rate_for(hp, point).lr)]
    kept = False
    for x, g, m, v, vmax, lr in pieces:
        new_point, state = riemannian_adam_step(
            manifold,
            x.to(work),
            g.to(work),
            AdamState(m, v, vmax),
            step,
            hp._replace(lr=lr),
            maximize=maximize,
        )
        new = (new_point, *state) if vmax is not None else (new_point, *state[:2])
        old = (x, m, v) if vmax is None else (x, m, v, vmax)
        # a degenerate sphere (e.g. a zero filter) or point keeps its value and state
        axis = point_axes(manifold)
        bad = nonfinite_points(new_point, axis) | nonfinite_points(new[1], axis)
        bad |= ~torch.isfinite(new[2])
        if bool(bad.any()):
            kept = True
            new = [torch.where(bad, o.to(n.dtype), n) for o, n in zip(old, new)]
        for target, value in zip(old, new):
            target.copy_(value)
    return kept


def _euclidean_adam_per_copy(
    params, grads, exp_avgs, exp_avg_sqs, maxima, state_steps, indices, hp, maximize
) -> None:
    """``torch.optim.Adam``'s single-tensor step, in its order of roundings, with one rate
    per copy (the leading axis): copy ``k`` equals ``torch.optim.Adam`` run with
    ``lr[k]``."""
    beta1, beta2 = hp.betas
    rates = hp.lr.detach().to(device="cpu", dtype=torch.float64)
    for i in indices:
        param, exp_avg, exp_avg_sq = params[i], exp_avgs[i], exp_avg_sqs[i]
        grad = grads[i] if not maximize else -grads[i]
        state_steps[i] += 1
        step = float(state_steps[i])
        if hp.weight_decay != 0:
            if hp.decoupled_weight_decay:
                param.mul_(_per_copy(1 - rates * hp.weight_decay, param))
            else:
                grad = grad.add(param, alpha=hp.weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if hp.amsgrad:
            torch.maximum(maxima[i], exp_avg_sq, out=maxima[i])
            denom = (maxima[i].sqrt() / bias_correction2_sqrt).add_(hp.eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(hp.eps)
        # addcdiv_(t1, t2, value=s) is t1 * s / t2 + param, with s in the param's dtype
        param.addcdiv_(exp_avg * _per_copy(-(rates / bias_correction1), param), denom)


def _per_copy(values: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Per-copy scalars (float64) in ``param``'s dtype, broadcastable over its copies."""
    shape = (-1,) + (1,) * (param.ndim - 1)
    return values.to(device=param.device, dtype=param.dtype).view(shape)
