"""``RiemannianSGD``: Riemannian SGD with momentum, and its functional form
:func:`riemannian_sgd`, as ``torch/optim/sgd.py`` holds ``SGD`` and ``sgd``.

The class is thin: what every Riemannian optimizer shares (groups naming manifolds,
placement, stacked copies, non-finite gradients, state dicts, the prepared-kernel cache)
is :class:`~riemann_dnn.optim.RiemannianOptimizer`. Here: the hyper-parameters and their
checks, the eager step of a group, :func:`riemannian_sgd` and its paths, and the prepared
native kernel (:class:`~riemann_dnn.step.native.PreparedStep`) of the whole step.
"""

from __future__ import annotations

import functools
import operator
from collections import defaultdict
from collections.abc import Hashable, Iterable
from typing import Any, Literal

import torch
from torch.optim.sgd import sgd as _torch_sgd

from ..params import Geometry
from ..step import (
    SGDHyperparameters,
    check_sgd_hyperparameters,
    riemannian_sgd_step,
    sphere_sgd_step_,
    unit_norm_axis,
)
from ..step.fused import nonfinite_points, point_axes
from ..step.native import NONFINITE, PreparedStep, native_available, oblique_sgd_
from ._filter_rate import FILTER_RATES, check_filter_rate, filter_rate_sgd, filter_rates
from ._functional import (
    SPHERE_KERNEL_DTYPES,
    broadcasts_over_copies,
    rate_for,
    store_buffer,
    takes_row_kernel,
    work,
)
from ._group import Group, scalar_rate
from ._nonfinite import NonFiniteGradientError
from ._prepared import row_layout, state_layout
from .optimizer import RiemannianOptimizer, manifold_spec

__all__ = [
    "RiemannianSGD",
    "NonFiniteGradientError",
    "riemannian_sgd",
    "manifold_spec",
    "filter_rates",
    "FILTER_RATES",
]


class RiemannianSGD(RiemannianOptimizer):
    r"""Riemannian SGD with momentum: Table 1 of Badrinarayanan, Mishra & Cipolla (2015).

    Each param group names the manifold its parameters live on (key ``"manifold"``: a name
    such as ``"oblique"`` -- every filter, i.e. row of the weight viewed as ``(out, -1)``,
    of unit norm -- or a manifold object; default: the manifold a
    :class:`~riemann_dnn.params.ManifoldParameter` carries, else ``"euclidean"``) and
    optionally a ``"retraction"``. For each parameter :math:`x` with gradient :math:`g`
    (read from ``.grad`` when :meth:`step` runs, so gradients may be accumulated or
    all-reduced first):

    .. math::

        r = P_x(\pm g + \omega x),\quad m \leftarrow \mu m + (1-\tau) r\ (m_0 = r),\quad
        x \leftarrow R_x(-\lambda d),\quad m \leftarrow P_{x}(m)

    with :math:`d = m` (or :math:`r + \mu m` with Nesterov) and :math:`-g` when
    ``maximize``. Momentum lives in the tangent space and is carried to the new point by
    the manifold's vector transport (projection; parallel transport for
    ``"exp+parallel"``); see :mod:`riemann_dnn.step.sgd`. With momentum 0 and the
    ``"normalize"`` retraction an oblique parameter follows Table 1 exactly; Euclidean
    parameters follow ``torch.optim.SGD`` exactly.

    Groups, stacked copies (``"copies": n``, a rate per copy), non-finite gradients and
    state dicts are those of :class:`~riemann_dnn.optim.RiemannianOptimizer`.

    Args:
        params: parameters or param groups (dicts with ``"params"`` and optionally
            ``"manifold"``, ``"retraction"``, ``"copies"`` and any hyper-parameter below).
            A Euclidean group may also set ``"filter_rate": "norm2"``: each filter ``w``
            (row of the weight viewed as ``(out, -1)``) then steps with rate
            ``lr * ||w||**2``, the norm taken before the step (:func:`filter_rates`).
        lr: the learning rate: a number or a one-element tensor (so LR schedulers and
            ``torch.compile`` of ``step`` work as with ``torch.optim.SGD``), or in groups
            with copies a tensor of one rate per copy.
        momentum, dampening, weight_decay, nesterov, maximize: as in ``torch.optim.SGD``.
        manifold: the default manifold of groups that name none (default Euclidean).
        retraction: the default retraction for named manifolds (e.g. ``"normalize"``,
            ``"exp"``, ``"qr"``, ``"polar"``, ``"cayley"``).
        copies: the default number of stacked copies (``None``: plain parameters).
        foreach: the fast path (default: on, off under ``torch.compile``): oblique/sphere
            parameters with the normalize retraction take a fused in-place kernel (the
            same step in fewer operations, no copies; same-shaped tensors stacked on
            accelerators), other same-shaped parameters are stacked and stepped together;
            Euclidean ones use ``torch.optim.SGD``'s foreach kernels. Off: one call of the
            shared step per parameter (the reference). Both agree to rounding.
        fused: the row-fused kernel for unit-row (oblique) parameters on the CPU
            (:func:`riemann_dnn.step.native.oblique_sgd_`: each filter row read once, at
            ``torch.optim.SGD``'s own cost; compiled at first use, or the eager kernel
            with one notice where no C compiler is found). Default: on with ``foreach``;
            ``False``: the eager in-place kernel.
        nonfinite: ``"raise"`` (default), ``"skip"`` or ``"unchecked"``, see
            :class:`~riemann_dnn.optim.RiemannianOptimizer`.
        project_initial: map constrained parameters onto their manifold now (row
            normalisation for oblique). With ``False``, off-manifold parameters raise.

    Example::

        groups = riemann_dnn.optim.param_groups(model)  # BN-fed weights -> "oblique"
        opt = RiemannianSGD(groups, lr=0.01, momentum=0.9)
    """

    name = "RiemannianSGD"
    state_tensors = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | torch.Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        manifold: Any = None,
        retraction: str | None = None,
        copies: int | None = None,
        foreach: bool | None = None,
        fused: bool | None = None,
        nonfinite: Literal["raise", "skip", "unchecked"] = "raise",
        project_initial: bool = True,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
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
        check_sgd_hyperparameters(
            self.name,
            group["momentum"],
            group["dampening"],
            group["weight_decay"],
            group["nesterov"],
            where=where,
        )

    def _check_group(self, group: Group, where: str) -> None:
        check_filter_rate(group, where)

    def _step_group(self, group: Group, found: torch.Tensor) -> None:
        params, grads, bufs = [], [], []
        for param in group["params"]:
            if param.grad is None:
                continue
            params.append(param)
            grads.append(param.grad)
            bufs.append(self.state_tensor(param, "momentum_buffer"))
        if not params:
            return
        if group.get("filter_rate") is not None:
            geometries = [self.geometry(p, group) for p in params]
            filter_rate_sgd(params, grads, bufs, group, geometries, step_hyperparameters(group))
        else:
            riemannian_sgd(
                params,
                grads,
                bufs,
                self.geometries(params, group),
                hp=step_hyperparameters(group),
                foreach=group["foreach"],
                maximize=group["maximize"],
                copies=group["copies"],
                fused=group["fused"],
                found_nonfinite=found,
            )
        if group["momentum"] != 0:
            for param, buf in zip(params, bufs):
                self.state[param]["momentum_buffer"] = buf

    def _kernel_key(self, group: Group) -> Hashable | None:
        """Groups with equal step hyper-parameters and copies share one native call (each
        reads its own rate); ``None`` where the kernel cannot take the group."""
        if (
            group["foreach"] is False
            or group["fused"] is False
            or group.get("filter_rate")
            or not native_available()
        ):
            return None
        return (
            group["momentum"],
            group["dampening"],
            group["nesterov"],
            group["weight_decay"],
            group["maximize"],
            group["copies"],
        )

    def _prepare_kernel(self, groups: list[Group]) -> _SGDKernel | None:
        layout = row_layout(groups, self.geometry)
        if layout is None:
            return None
        params, points, normalize = layout
        buffers, first = [], False
        if groups[0]["momentum"] != 0:
            found = state_layout(params, self.state, "momentum_buffer")
            if found is None:
                return None
            buffers, first = found
        slots = [len(group["params"]) for group in groups]
        return _SGDKernel(params, points, normalize, buffers, first, groups[0]["copies"], slots)


def step_hyperparameters(group: Group) -> SGDHyperparameters:
    """The hyper-parameters of the group's step."""
    return SGDHyperparameters(
        scalar_rate(group["lr"]),
        group["momentum"],
        group["dampening"],
        group["nesterov"],
        group["weight_decay"],
    )


class _SGDKernel:
    """:class:`~riemann_dnn.step.native.PreparedStep` over a set of groups: RiemannianSGD's
    :class:`~riemann_dnn.optim.optimizer.PreparedKernel`."""

    def __init__(self, params, points, normalize, buffers, first, copies, slots):
        self.params = params
        self.buffers = buffers
        self.first_step = first
        self._step = PreparedStep(
            points,
            normalize,
            [b.view(x.shape) for b, x in zip(buffers, points)] if buffers else None,
            params=params,
            copies=copies or 1,
            rate_slots=slots,
        )

    def valid_for(self, groups: list[Group]) -> bool:
        """The same parameter objects in the same order, and momentum buffers exactly when
        momentum is on (storage, dtype and shape: checked with the gradients)."""
        if (groups[0]["momentum"] != 0) != bool(self.buffers):
            return False
        params = [p for group in groups for p in group["params"]]
        return len(params) == len(self.params) and all(map(operator.is_, params, self.params))

    def gradient_pointers(self):
        return self._step.gradient_pointers()

    def all_finite(self, grads) -> bool:
        return self._step.all_finite(grads)

    def step_checked(self, grads, groups: list[Group], state) -> int | None:
        """Check every gradient, then step, in one native call: ``None`` (nothing written)
        when a gradient is not finite, else the number of rows left untouched."""
        return self._run(groups, state, check=True)

    def __call__(self, grads, groups: list[Group], state) -> int:
        return self._run(groups, state, check=False)

    def _run(self, groups: list[Group], state, *, check: bool) -> int | None:
        step = self._step
        for slot, member in enumerate(groups):
            step.bind_rate(slot, member["lr"])
        group = groups[0]
        first = self.first_step
        bad = step.run(
            momentum=group["momentum"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            first_step=first and group["momentum"] != 0,
            check=check,
        )
        if bad == NONFINITE:
            return None
        if first:  # new buffers enter the state only when the step ran
            for param, buf in zip(self.params, self.buffers):
                state[param]["momentum_buffer"] = buf
            self.first_step = False
        return bad


# -- the functional form ------------------------------------------------------------------
def riemannian_sgd(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor | None],
    geometries: list[Geometry] | None,
    *,
    hp: SGDHyperparameters,
    foreach: bool | None = None,
    maximize: bool = False,
    copies: int | None = None,
    fused: bool | None = None,
    found_nonfinite: torch.Tensor | None = None,
) -> None:
    """Functional form of :class:`RiemannianSGD`: updates ``params`` in place and
    ``momentum_buffers`` (list entries replaced) in place. ``geometries=None`` means every
    parameter is Euclidean. With ``copies``, every tensor has a leading axis of copies,
    ``geometries`` view it as a stack of points, and ``hp.lr`` may be a tensor of one rate
    per copy. Unit-row parameters on the CPU take the row-fused kernel
    (:func:`riemann_dnn.step.native.oblique_sgd_`) unless ``fused`` is ``False``.

    On every path, a row (a point, on manifolds without unit rows) whose update is zero
    or not finite -- a zero filter with zero gradient and momentum, or a non-finite
    gradient -- keeps its value and momentum, and sets ``found_nonfinite`` to 1."""
    if foreach is None:
        foreach = not torch.compiler.is_compiling()
    if geometries is None:
        euclidean, constrained = list(range(len(params))), []
    else:
        euclidean = [i for i, g in enumerate(geometries) if g.is_euclidean]
        constrained = [i for i, g in enumerate(geometries) if not g.is_euclidean]
    per_copy = isinstance(hp.lr, torch.Tensor) and hp.lr.ndim == 1
    if per_copy:  # the shared step, whose formulas broadcast a rate per copy
        constrained, euclidean = euclidean + constrained, []
    if euclidean:
        _euclidean_sgd(params, grads, momentum_buffers, euclidean, hp, foreach, maximize)
    if constrained and foreach and fused is not False:
        rows = [i for i in constrained if takes_row_kernel(params[i], geometries[i])]
        if rows:
            _row_fused_step(
                params, grads, momentum_buffers, geometries, rows, hp, maximize, found_nonfinite
            )
            constrained = [i for i in constrained if i not in set(rows)]
    if constrained:
        if maximize:
            grads = list(grads)
            for i in constrained:
                grads[i] = grads[i].neg()
        if found_nonfinite is None:
            found_nonfinite = torch.zeros(1)
        step = _multi_tensor_step if foreach else _single_tensor_step
        step(params, grads, momentum_buffers, geometries, constrained, hp, found_nonfinite)


def _row_fused_step(params, grads, bufs, geometries, indices, hp, maximize, found) -> None:
    """:func:`~riemann_dnn.step.native.oblique_sgd_` on the filter-row views."""
    views = [geometries[i].view for i in indices]
    points = [_rows(view(params[i])) for i, view in zip(indices, views)]
    new_bufs = oblique_sgd_(
        points,
        [_rows(view(grads[i])) for i, view in zip(indices, views)],
        [None if bufs[i] is None else _rows(view(bufs[i])) for i, view in zip(indices, views)],
        lr=hp.lr,
        momentum=hp.momentum,
        dampening=hp.dampening,
        nesterov=hp.nesterov,
        weight_decay=hp.weight_decay,
        maximize=maximize,
        found_nonfinite=found,
    )
    for i, buf in zip(indices, new_bufs):
        if buf is not None and bufs[i] is None:
            bufs[i] = buf.reshape(params[i].shape)  # parameter-shaped, as the other paths


def _rows(point: torch.Tensor) -> torch.Tensor:
    """A point of unit rows as ``(rows, n)``, or ``(copies, rows, n)`` for stacked copies."""
    return point if point.ndim <= 3 else point.reshape(-1, *point.shape[-2:])


def _euclidean_sgd(params, grads, bufs, indices, hp, foreach, maximize) -> None:
    """Euclidean parameters: the Riemannian step reduces to ``torch.optim.SGD``'s, whose
    kernels (foreach included) we call directly; float16/bfloat16 parameters are stepped
    in float32 (float32 momentum buffers) and rounded back, as on every path."""
    half = [i for i in indices if work(params[i]) is not params[i]]
    indices = [i for i in indices if i not in set(half)]
    points = [params[i] for i in indices] + [params[i].float() for i in half]
    sub_bufs = [bufs[i] for i in indices + half]
    _torch_sgd(
        points,
        [grads[i] for i in indices] + [grads[i].float() for i in half],
        sub_bufs,
        weight_decay=hp.weight_decay,
        momentum=hp.momentum,
        lr=hp.lr,
        dampening=hp.dampening,
        nesterov=hp.nesterov,
        maximize=maximize,
        foreach=foreach,
    )
    for i, buf in zip(indices + half, sub_bufs):
        bufs[i] = buf
    for i, point in zip(half, points[len(indices) :]):
        params[i].copy_(point)


def _single_tensor_step(params, grads, bufs, geometries, indices, hp, found) -> None:
    """The readable reference: one call of the shared step per parameter (per copy on
    manifolds whose formulas do not broadcast over a copies axis)."""
    writes = []
    for i in indices:
        geometry = geometries[i]
        view = geometry.view
        point = view(params[i])
        buf = bufs[i]
        stacked = isinstance(view, functools.partial)
        if stacked and not broadcasts_over_copies(geometry.manifold):
            new_point, new_buf = _step_each_copy(
                geometry.manifold, point, view(grads[i]), None if buf is None else view(buf), hp
            )
        else:
            new_point, new_buf = riemannian_sgd_step(
                geometry.manifold,
                work(point),
                work(view(grads[i])),
                None if buf is None else view(buf),
                rate_for(hp, point),
            )
        new_point, new_buf = _keep_degenerate(
            geometry.manifold, point, new_point, buf, new_buf, view, found
        )
        writes.append((point, new_point))
        bufs[i] = store_buffer(new_buf, params[i], view)
    if writes and torch.compiler.is_compiling():
        # Inductor's CPU backend (torch 2.13) fails with "KeyError: 'bufN'" when a point
        # normalised by rows is written into its input in the graph that computes it (its
        # outer-loop local buffers count the write's ordering dependencies as reads), with
        # a tensor rate and with a float one alike; computing every new point first and
        # writing them after a graph break compiles.
        torch._dynamo.graph_break()
    for point, new_point in writes:
        point.copy_(new_point)


def _keep_degenerate(manifold, point, new_point, buf, new_buf, view, found):
    """``new_point`` and ``new_buf`` where the update is finite; the point's value and
    momentum (zero on a first step) in each row (or point) where it is not -- the
    normalize retraction of a zero update is NaN. Sets ``found`` where any is kept."""
    ok = ~nonfinite_points(new_point, point_axes(manifold))
    new_point = torch.where(ok, new_point, point.to(new_point.dtype))
    if new_buf is not None:
        kept = torch.zeros((), dtype=new_buf.dtype) if buf is None else view(buf)
        new_buf = torch.where(ok, new_buf, kept.to(device=new_buf.device))
    flag = (~ok).any().to(device=found.device, dtype=found.dtype)
    torch.maximum(found, flag, out=found)
    return new_point, new_buf


def _step_each_copy(manifold, point, grad, buf, hp):
    """The shared step on each copy ``point[k]`` with its own rate."""
    lr = hp.lr
    points, new_bufs = [], []
    for k in range(point.shape[0]):
        rate = lr[k] if isinstance(lr, torch.Tensor) and lr.ndim == 1 else lr
        x, m = riemannian_sgd_step(
            manifold,
            work(point[k]),
            work(grad[k]),
            None if buf is None else buf[k],
            hp._replace(lr=rate),
        )
        points.append(x)
        new_bufs.append(m)
    return torch.stack(points), (None if new_bufs[0] is None else torch.stack(new_bufs))


def _stack_spheres(device: torch.device) -> bool:
    """Whether same-shaped spheres are stacked for :func:`~riemann_dnn.step.sphere_sgd_step_`: on accelerators,
    where a step is bound by kernel launches, one stacked call beats a call per tensor
    despite the copies; on CPUs, in-place steps per tensor (no copies) are faster."""
    return device.type != "cpu"


def _fused_sphere_steps(params, grads, bufs, geometries, members, axis, hp, found) -> None:
    """:func:`~riemann_dnn.step.sphere_sgd_step_` on parameters with equal geometry keys: in place per tensor,
    or on one stack of them (:func:`_stack_spheres`)."""
    view = geometries[members[0]].view
    have_buf = [bufs[i] is not None for i in members]
    if isinstance(view, functools.partial):  # stacked copies: a rate per copy
        hp = rate_for(hp, view(params[members[0]]))
    if (
        len(members) == 1
        or not _stack_spheres(params[members[0]].device)
        or (any(have_buf) and not all(have_buf))
    ):
        for i in members:
            buf = bufs[i]
            new_buf = sphere_sgd_step_(
                view(params[i]),
                view(grads[i]),
                None if buf is None else view(buf),
                axis,
                hp,
                found=found,
            )
            if buf is None and new_buf is not None:
                bufs[i] = new_buf.reshape(params[i].shape)  # parameter-shaped
        return
    points = [view(params[i]) for i in members]
    x = torch.stack(points)
    m = torch.stack([view(bufs[i]) for i in members]) if all(have_buf) else None
    g = torch.stack([view(grads[i]) for i in members])
    new_buf = sphere_sgd_step_(x, g, m, axis, hp, found=found)
    torch._foreach_copy_(points, list(x.unbind(0)))
    if m is not None:
        torch._foreach_copy_([view(bufs[i]) for i in members], list(m.unbind(0)))
    elif new_buf is not None:
        for i, buf in zip(members, new_buf.unbind(0)):
            bufs[i] = buf.reshape(params[i].shape)


def _multi_tensor_step(params, grads, bufs, geometries, indices, hp, found) -> None:
    """The fast path. Spheres and oblique filters with the normalize retraction (the
    paper's UN update) in float32/float64 take the fused in-place kernel
    :func:`~riemann_dnn.step.sphere_sgd_step_`, a handful of kernels per tensor (per stack
    of same-shaped tensors on accelerators); other same-shaped parameters on the same
    manifold are stacked and stepped by one call of the shared step (on manifolds whose
    formulas broadcast over a leading axis)."""
    spheres: dict[tuple, list[int]] = defaultdict(list)
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i in indices:
        param, geometry = params[i], geometries[i]
        axis = unit_norm_axis(geometry.manifold)
        if axis is not None and param.dtype in SPHERE_KERNEL_DTYPES:
            spheres[(param.device, param.dtype, geometry.key, axis)].append(i)
        elif broadcasts_over_copies(geometry.manifold):
            buckets[(param.device, param.dtype, geometry.key)].append(i)
        else:
            _single_tensor_step(params, grads, bufs, geometries, [i], hp, found)
    for (*_, axis), members in spheres.items():
        _fused_sphere_steps(params, grads, bufs, geometries, members, axis, hp, found)
    for members in buckets.values():
        have_buf = [bufs[i] is not None for i in members]
        if len(members) == 1 or (any(have_buf) and not all(have_buf)):
            _single_tensor_step(params, grads, bufs, geometries, members, hp, found)
            continue
        geometry = geometries[members[0]]
        view = geometry.view
        points = [view(params[i]) for i in members]
        stacked_buf = torch.stack([view(bufs[i]) for i in members]) if all(have_buf) else None
        stacked_points = work(torch.stack(points))
        new_points, new_buf = riemannian_sgd_step(
            geometry.manifold,
            stacked_points,
            work(torch.stack([view(grads[i]) for i in members])),
            stacked_buf,
            hp,
        )
        new_points, new_buf = _keep_degenerate(
            geometry.manifold,
            stacked_points,
            new_points,
            stacked_buf,
            new_buf,
            lambda tensor: tensor,
            found,
        )
        torch._foreach_copy_(points, list(new_points.unbind(0)))
        if new_buf is not None:
            if all(have_buf):
                torch._foreach_copy_([view(bufs[i]) for i in members], list(new_buf.unbind(0)))
            else:
                for i, buf in zip(members, new_buf.unbind(0)):
                    bufs[i] = store_buffer(buf, params[i], view)
