"""``RiemannianSGD``: a ``torch.optim.Optimizer`` that steps each parameter on its manifold."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.sgd import sgd as _torch_sgd

from ..step import SGDHyperparameters, riemannian_sgd_step
from .geometry import Geometry, resolve_geometry

__all__ = ["RiemannianSGD", "NonFiniteGradientError", "riemannian_sgd"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class NonFiniteGradientError(FloatingPointError):
    """A gradient holds NaN or inf; the weights were left untouched."""


class RiemannianSGD(Optimizer):
    r"""Riemannian SGD with momentum: Table 1 of Badrinarayanan, Mishra & Cipolla (2015).

    Each param group names the manifold its parameters live on (key ``"manifold"``: a name
    such as ``"oblique"`` -- every filter, i.e. row of the weight viewed as ``(out, -1)``,
    of unit norm -- or a manifold object; default ``"euclidean"``) and optionally a
    ``"retraction"``. For each parameter :math:`x` with gradient :math:`g` (read from
    ``.grad`` when :meth:`step` runs, so gradients may be accumulated or all-reduced first):

    .. math::

        r = P_x(g + \omega x),\quad m \leftarrow \mu m + (1-\tau) r\ (m_0 = r),\quad
        x \leftarrow R_x(-\lambda d),\quad m \leftarrow P_{x}(m)

    with :math:`d = m` (or :math:`r + \mu m` with Nesterov). Momentum lives in the tangent
    space and is carried to the new point by vector transport (projection); see
    :mod:`riemann_dnn.step.sgd`. With momentum 0 and the ``"normalize"`` retraction an
    oblique parameter follows Table 1 exactly; Euclidean parameters follow
    ``torch.optim.SGD`` exactly.

    Args:
        params: parameters or param groups (dicts with ``"params"`` and optionally
            ``"manifold"``, ``"retraction"`` and any hyper-parameter below).
        lr, momentum, dampening, weight_decay, nesterov: as in ``torch.optim.SGD``.
        manifold: the default manifold of groups that name none (default Euclidean).
        retraction: the default retraction for named manifolds (e.g. ``"normalize"``,
            ``"exp"``, ``"qr"``, ``"polar"``, ``"cayley"``).
        foreach: batch same-shaped parameters into a few stacked operations (default: on).
        nonfinite: ``"raise"`` (default) raises :class:`NonFiniteGradientError` when a
            gradient has NaN/inf; ``"skip"`` skips the whole step (counted in
            :attr:`skipped_steps`). Either way the weights are untouched. The check costs one
            device synchronisation per step.
        project_initial: map constrained parameters onto their manifold now (row
            normalisation for oblique). With ``False``, off-manifold parameters raise.

    Example::

        groups = riemann_dnn.optim.param_groups(model)  # BN-fed weights -> "oblique"
        opt = RiemannianSGD(groups, lr=0.01, momentum=0.9)
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        manifold: Any = None,
        retraction: str | None = None,
        foreach: bool | None = None,
        nonfinite: Literal["raise", "skip"] = "raise",
        project_initial: bool = True,
    ):
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"RiemannianSGD: {name} must be a number >= 0, got {value!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("RiemannianSGD: Nesterov momentum needs momentum > 0 and dampening 0")
        if nonfinite not in ("raise", "skip"):
            raise ValueError(f"RiemannianSGD: nonfinite must be 'raise' or 'skip', got {nonfinite!r}")
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, manifold=manifold, retraction=retraction, foreach=foreach,
        )
        self._geometries: dict[torch.Tensor, tuple[tuple, Geometry]] = {}
        super().__init__(params, defaults)
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self._place_on_manifolds(project=project_initial)

    # -- geometry -------------------------------------------------------------------------
    def geometry(self, param: torch.Tensor, group: dict[str, Any]) -> Geometry:
        """The manifold and point view of ``param`` in ``group`` (cached)."""
        spec = (id(group["manifold"]) if not isinstance(group["manifold"], (str, type(None)))
                else group["manifold"], group["retraction"], tuple(param.shape))
        cached = self._geometries.get(param)
        if cached is None or cached[0] != spec:
            cached = (spec, resolve_geometry(group["manifold"], group["retraction"], param))
            self._geometries[param] = cached
        return cached[1]

    @torch.no_grad()
    def _place_on_manifolds(self, *, project: bool) -> None:
        for index, group in enumerate(self.param_groups):
            for position, param in enumerate(group["params"]):
                geometry = self.geometry(param, group)
                if geometry.is_euclidean:
                    continue
                point = geometry.view(param)
                if project:
                    point.copy_(geometry.manifold.project_point(_work(point)))
                else:
                    try:
                        geometry.manifold.check_point(point, atol=1e-4)
                    except ValueError as err:
                        raise ValueError(
                            f"param group {index}, parameter {position}: {err}; or construct "
                            f"RiemannianSGD with project_initial=True"
                        ) from None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._geometries = {}
        self.__dict__.setdefault("nonfinite", "raise")
        self.__dict__.setdefault("skipped_steps", 0)

    # -- stepping -------------------------------------------------------------------------
    def _gradients_are_finite(self) -> bool:
        by_device: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    by_device[param.grad.device].append(param.grad)
        flags = [
            torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(grads)])).all()
            for grads in by_device.values()
        ]
        return all(bool(flag) for flag in flags)

    def _raise_nonfinite(self) -> None:
        bad = [
            f"group {gi} parameter {pi} (shape {tuple(p.shape)})"
            for gi, g in enumerate(self.param_groups)
            for pi, p in enumerate(g["params"])
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]
        raise NonFiniteGradientError(
            f"non-finite gradient in {', '.join(bad)}; the weights were not changed. Lower the "
            f"learning rate, check the loss, or pass nonfinite='skip' to skip such steps"
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Perform one step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._gradients_are_finite():
            if self.nonfinite == "raise":
                self._raise_nonfinite()
            self.skipped_steps += 1
            return loss
        for group in self.param_groups:
            params, grads, bufs, geometries = [], [], [], []
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("RiemannianSGD does not support sparse gradients")
                params.append(param)
                grads.append(param.grad)
                bufs.append(self.state[param].get("momentum_buffer"))
                geometries.append(self.geometry(param, group))
            riemannian_sgd(
                params, grads, bufs, geometries,
                hp=SGDHyperparameters(group["lr"], group["momentum"], group["dampening"],
                                      group["nesterov"], group["weight_decay"]),
                foreach=group["foreach"],
            )
            if group["momentum"] != 0:
                for param, buf in zip(params, bufs):
                    self.state[param]["momentum_buffer"] = buf
        return loss


def _work(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in its working precision (float32 at least)."""
    return tensor.float() if tensor.dtype in _LOW_PRECISION else tensor


def riemannian_sgd(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor | None],
    geometries: list[Geometry],
    *,
    hp: SGDHyperparameters,
    foreach: bool | None = None,
) -> None:
    """Functional form of :class:`RiemannianSGD`: updates ``params`` in place and
    ``momentum_buffers`` (list entries replaced) in place."""
    if foreach is None:
        foreach = not torch.compiler.is_compiling()
    euclidean = [i for i, g in enumerate(geometries) if g.is_euclidean]
    constrained = [i for i, g in enumerate(geometries) if not g.is_euclidean]
    if euclidean:
        _euclidean_sgd(params, grads, momentum_buffers, euclidean, hp, foreach)
    if constrained:
        step = _multi_tensor_step if foreach else _single_tensor_step
        step(params, grads, momentum_buffers, geometries, constrained, hp)


def _euclidean_sgd(params, grads, bufs, indices, hp, foreach) -> None:
    """Euclidean parameters: the Riemannian step reduces to ``torch.optim.SGD``'s, whose
    kernels (foreach included) we call directly."""
    sub_bufs = [bufs[i] for i in indices]
    _torch_sgd(
        [params[i] for i in indices], [grads[i] for i in indices], sub_bufs,
        weight_decay=hp.weight_decay, momentum=hp.momentum, lr=hp.lr,
        dampening=hp.dampening, nesterov=hp.nesterov, maximize=False, foreach=foreach,
    )
    for i, buf in zip(indices, sub_bufs):
        bufs[i] = buf


def _single_tensor_step(params, grads, bufs, geometries, indices, hp) -> None:
    """The readable reference: one call of the shared step per parameter."""
    for i in indices:
        view = geometries[i].view
        point = view(params[i])
        buf = bufs[i]
        new_point, new_buf = riemannian_sgd_step(
            geometries[i].manifold, _work(point), _work(view(grads[i])),
            None if buf is None else view(buf), hp,
        )
        point.copy_(new_point)
        bufs[i] = _store_buffer(new_buf, params[i], view)


def _store_buffer(new_buf, param, view):
    """A parameter-shaped (float32 for half parameters) tensor holding the point-shaped
    buffer ``new_buf``."""
    if new_buf is None:
        return None
    storage = torch.empty_like(param, dtype=_work(param).dtype)
    view(storage).copy_(new_buf)
    return storage


def _multi_tensor_step(params, grads, bufs, geometries, indices, hp) -> None:
    """Same-shaped parameters on the same manifold are stacked and stepped by one call of
    the shared step (the formulas broadcast over a leading axis)."""
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i in indices:
        buckets[(params[i].device, params[i].dtype, geometries[i].key)].append(i)
    for members in buckets.values():
        have_buf = [bufs[i] is not None for i in members]
        if len(members) == 1 or (any(have_buf) and not all(have_buf)):
            _single_tensor_step(params, grads, bufs, geometries, members, hp)
            continue
        geometry = geometries[members[0]]
        view = geometry.view
        points = [view(params[i]) for i in members]
        stacked_buf = torch.stack([view(bufs[i]) for i in members]) if all(have_buf) else None
        new_points, new_buf = riemannian_sgd_step(
            geometry.manifold,
            _work(torch.stack(points)),
            _work(torch.stack([view(grads[i]) for i in members])),
            stacked_buf,
            hp,
        )
        torch._foreach_copy_(points, list(new_points.unbind(0)))
        if new_buf is not None:
            if all(have_buf):
                torch._foreach_copy_([view(bufs[i]) for i in members], list(new_buf.unbind(0)))
            else:
                for i, buf in zip(members, new_buf.unbind(0)):
                    bufs[i] = _store_buffer(buf, params[i], view)
