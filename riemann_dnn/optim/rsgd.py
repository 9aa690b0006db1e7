"""``RiemannianSGD``: a ``torch.optim.Optimizer`` that steps each parameter on its manifold.

This module holds the optimizer object: its param groups (checked and placed on their
manifolds), its state and the bookkeeping of a step. The step itself is elsewhere, one idea
per module: the functional form and its paths (:func:`riemannian_sgd`, ``_functional``),
the prepared native path (``_prepared``), non-finite gradients (``_nonfinite``), per-filter
rates (``_filter_rate``) and the group checks (``_group``). The public names are re-exported
here and from :mod:`riemann_dnn.optim`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch.optim import Optimizer

from ..manifolds import working_dtype
from ..params import Geometry, resolve_geometry
from ._filter_rate import FILTER_RATES, check_filter_rate, filter_rate_sgd, filter_rates
from ._functional import riemannian_sgd, work
from ._group import check_copies, check_hyperparameters, is_euclidean_group, step_hyperparameters
from ._nonfinite import (
    NonFiniteGradientError,
    bad_copies,
    eager_checked,
    freeze_copies,
    gradients_are_finite,
    raise_nonfinite,
    raise_rows,
)
from ._prepared import PreparedPath

__all__ = [
    "RiemannianSGD",
    "NonFiniteGradientError",
    "riemannian_sgd",
    "manifold_spec",
    "filter_rates",
    "FILTER_RATES",
]


class RiemannianSGD(Optimizer):
    r"""Riemannian SGD with momentum: Table 1 of Badrinarayanan, Mishra & Cipolla (2015).

    Each param group names the manifold its parameters live on (key ``"manifold"``: a name
    such as ``"oblique"`` -- every filter, i.e. row of the weight viewed as ``(out, -1)``,
    of unit norm -- or a manifold object; default ``"euclidean"``) and optionally a
    ``"retraction"``. For each parameter :math:`x` with gradient :math:`g` (read from
    ``.grad`` when :meth:`step` runs, so gradients may be accumulated or all-reduced first):

    .. math::

        r = P_x(\pm g + \omega x),\quad m \leftarrow \mu m + (1-\tau) r\ (m_0 = r),\quad
        x \leftarrow R_x(-\lambda d),\quad m \leftarrow P_{x}(m)

    with :math:`d = m` (or :math:`r + \mu m` with Nesterov) and :math:`-g` when
    ``maximize``. Momentum lives in the tangent space and is carried to the new point by
    the manifold's vector transport (projection; parallel transport for
    ``"exp+parallel"``); see :mod:`riemann_dnn.step.sgd`. With momentum 0 and the
    ``"normalize"`` retraction an oblique parameter follows Table 1 exactly; Euclidean
    parameters follow ``torch.optim.SGD`` exactly.

    **Stacked copies.** A group with ``"copies": n`` holds tensors with a leading axis of
    ``n`` independent copies (as made by ``torch.func.stack_module_state``): each copy is a
    point of the manifold of ``param[0]``, and the group's ``lr`` may be a tensor of shape
    ``(n,)``, one rate per copy. Non-finite gradients are then handled per copy: a copy
    whose gradient (in any group with copies) holds NaN/inf is left untouched.

    Args:
        params: parameters or param groups (dicts with ``"params"`` and optionally
            ``"manifold"``, ``"retraction"``, ``"copies"`` and any hyper-parameter below).
            A Euclidean group may also set ``"filter_rate": "norm2"``: each filter ``w``
            (row of the weight viewed as ``(out, -1)``) then steps with rate
            ``lr * ||w||**2``, the norm taken before the step (:func:`filter_rates`).
        lr: the learning rate: a number or a 0-d tensor (so LR schedulers and
            ``torch.compile`` of ``step`` work as with ``torch.optim.SGD``).
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
        nonfinite: what a NaN/inf gradient does. ``"raise"`` (default) raises
            :class:`NonFiniteGradientError`: a bad gradient of a parameter the row-fused
            kernel does not step is found before any weight moves; the kernel checks its
            rows as it reads them (no extra pass), leaves rows with a bad gradient
            untouched and steps the others, then the step raises -- either way no weight
            becomes NaN/inf or leaves its manifold. ``"skip"`` checks every gradient
            first (one more read of the gradients, strict) and skips the whole step,
            leaving every weight untouched (counted in ``skipped_steps``; per copy in
            groups with copies, counted in ``skipped_copies``).
        project_initial: map constrained parameters onto their manifold now (row
            normalisation for oblique). With ``False``, off-manifold parameters raise.

    Example::

        groups = riemann_dnn.optim.param_groups(model)  # BN-fed weights -> "oblique"
        opt = RiemannianSGD(groups, lr=0.01, momentum=0.9)
    """

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
        nonfinite: Literal["raise", "skip"] = "raise",
        project_initial: bool = True,
    ):
        if nonfinite not in ("raise", "skip"):
            raise ValueError(
                f"RiemannianSGD: nonfinite must be 'raise' or 'skip', got {nonfinite!r}"
            )
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
        check_hyperparameters(defaults, "", defaults=True)
        self._geometries: dict[torch.Tensor, tuple[tuple, Geometry]] = {}
        self._project_initial = project_initial
        self.skipped_copies: torch.Tensor | None = None
        self._native = PreparedPath()
        super().__init__(params, defaults)  # validates and places each group (add_param_group)
        self.nonfinite = nonfinite
        self.skipped_steps = 0

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its hyper-parameters are checked and its constrained parameters
        are mapped onto their manifold (or checked, with ``project_initial=False``)."""
        super().add_param_group(param_group)
        index = len(self.param_groups) - 1
        group = self.param_groups[index]
        try:
            check_hyperparameters(group, f" (param group {index})")
            check_filter_rate(group, f" (param group {index})")
            check_copies(index, group, self.param_groups)
            self._place_group(index, group, project=self._project_initial)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    # -- geometry -------------------------------------------------------------------------
    def geometry(self, param: torch.Tensor, group: dict[str, Any]) -> Geometry:
        """The manifold and point view of ``param`` in ``group`` (cached). In a group with
        copies, the manifold is that of one copy and the view keeps the copies axis."""
        spec = (
            id(group["manifold"])
            if not isinstance(group["manifold"], (str, type(None)))
            else group["manifold"],
            group["retraction"],
            tuple(param.shape),
            group["copies"],
        )
        cached = self._geometries.get(param)
        if cached is None or cached[0] != spec:
            if group["copies"] is None:
                geometry = resolve_geometry(group["manifold"], group["retraction"], param)
            else:
                geometry = resolve_geometry(group["manifold"], group["retraction"], param[0])
                geometry = Geometry(
                    geometry.manifold, functools.partial(geometry.view, batch_dims=1)
                )
            cached = (spec, geometry)
            self._geometries[param] = cached
        return cached[1]

    @torch.no_grad()
    def _place_group(self, index: int, group: dict[str, Any], *, project: bool) -> None:
        if is_euclidean_group(group):
            return
        for position, param in enumerate(group["params"]):
            geometry = self.geometry(param, group)
            if geometry.is_euclidean:
                continue
            view = geometry.view(param)
            points = view.unbind(0) if group["copies"] is not None else [view]
            for point in points:
                if project:
                    # points already on the manifold (e.g. weights loaded from a checkpoint)
                    # are kept bit for bit, so that a resumed run equals the uninterrupted one
                    tolerance = 2 * torch.finfo(point.dtype).eps
                    if not geometry.manifold.constraint_violation(point) <= tolerance:
                        try:
                            point.copy_(geometry.manifold.project_point(work(point)))
                        except ValueError as err:
                            raise ValueError(
                                f"param group {index}, parameter {position} "
                                f"(shape {tuple(param.shape)}): {err}"
                            ) from None
                    continue
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
        self.__dict__.setdefault("skipped_copies", None)
        self._native = PreparedPath()
        self.__dict__.setdefault("_project_initial", True)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("copies", None)
            group.setdefault("fused", None)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """As ``Optimizer.state_dict``, with manifold objects stored as their description
        (a string), so that ``torch.load(..., weights_only=True)`` reads it back."""
        state = super().state_dict()
        for saved in state["param_groups"]:
            if not isinstance(saved["manifold"], (str, type(None))):
                saved["manifold"] = manifold_spec(saved["manifold"])
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As ``Optimizer.load_state_dict``; groups keep their manifold objects (a saved
        description must match the live manifold), and momentum buffers of
        float16/bfloat16 parameters stay float32 (torch would cast them to the parameter's
        dtype)."""
        manifolds = [group["manifold"] for group in self.param_groups]
        for index, (saved, live) in enumerate(zip(state_dict["param_groups"], manifolds)):
            described = live if isinstance(live, (str, type(None))) else manifold_spec(live)
            if saved.get("manifold") != described:
                raise ValueError(
                    f"RiemannianSGD.load_state_dict: param group {index} was saved on "
                    f"manifold {saved.get('manifold')!r}, but this optimizer has "
                    f"{described!r}; build the optimizer with the same param groups"
                )
        super().load_state_dict(state_dict)
        for group, live in zip(self.param_groups, manifolds):
            group["manifold"] = live
            group.setdefault("maximize", False)
            group.setdefault("copies", None)
            group.setdefault("fused", None)
        self._geometries = {}
        self._native = PreparedPath()
        for saved, group in zip(state_dict["param_groups"], self.param_groups):
            for index, param in zip(saved["params"], group["params"]):
                buf = state_dict["state"].get(index, {}).get("momentum_buffer")
                dtype = working_dtype(param.dtype)
                if dtype != param.dtype and isinstance(buf, torch.Tensor):
                    self.state[param]["momentum_buffer"] = buf.to(
                        device=param.device, dtype=dtype, copy=True
                    )

    # -- stepping -------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Perform one step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plain = [g for g in self.param_groups if g["copies"] is None]
        stacked = [g for g in self.param_groups if g["copies"] is not None]
        kept = self._freeze_bad_copies(stacked) if stacked else None
        try:
            outcome = self._native.step(
                self.param_groups,
                self.state,
                self.geometry,
                skip_nonfinite=self.nonfinite == "skip",
            )
            if outcome is not None:  # the prepared native path stepped (or skipped) it all
                if outcome == "skipped":
                    self.skipped_steps += 1
                elif outcome == "rows" and self.nonfinite == "raise":
                    raise_rows()
                return loss
            self._native.clear()  # the other paths may create or replace momentum buffers
            # "skip": every gradient checked first (strict); "raise": the row-fused kernel
            # checks its rows as it reads them, the other parameters are checked first
            checked = plain if self.nonfinite == "skip" else eager_checked(plain, self.geometry)
            if checked and not gradients_are_finite(checked):
                if self.nonfinite == "raise":
                    raise_nonfinite(self.param_groups)
                self.skipped_steps += 1
                return loss
            found = torch.zeros(1)
            for group in self.param_groups:
                self._step_group(group, found)
            if bool(found) and self.nonfinite == "raise":
                raise_rows()
        finally:
            for tensor, (mask, saved) in kept or ():
                tensor[mask] = saved
        return loss

    def _freeze_bad_copies(self, stacked: list[dict[str, Any]]) -> list | None:
        """Per-copy non-finite handling: raise, or zero the bad copies' gradients and
        return their weights and momentum, to be put back after the step."""
        bad = bad_copies(stacked)
        if bad is None:
            return None
        if self.skipped_copies is None or self.skipped_copies.shape != bad.shape:
            self.skipped_copies = torch.zeros(bad.shape, dtype=torch.long)
        if not bool(bad.any()):
            return None
        if self.nonfinite == "raise":
            raise_nonfinite(self.param_groups, f" (copies {bad.nonzero().flatten().tolist()})")
        self.skipped_copies += bad.cpu().long()
        return freeze_copies(stacked, self.state, bad)

    def _step_group(self, group: dict[str, Any], found: torch.Tensor) -> None:
        params, grads, bufs = [], [], []
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError("RiemannianSGD does not support sparse gradients")
            params.append(param)
            grads.append(param.grad)
            bufs.append(self.state[param].get("momentum_buffer"))
        if not params:
            return
        stacked = group["copies"] is not None
        if group.get("filter_rate") is not None:
            filter_rate_sgd(params, grads, bufs, group, [self.geometry(p, group) for p in params])
            if group["momentum"] != 0:
                for param, buf in zip(params, bufs):
                    self.state[param]["momentum_buffer"] = buf
            return
        geometries = (
            None
            if is_euclidean_group(group) and not stacked
            else [self.geometry(param, group) for param in params]
        )
        riemannian_sgd(
            params,
            grads,
            bufs,
            geometries,
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


def manifold_spec(manifold: Any) -> str:
    """A manifold object's description, as stored in a state dict: its ``repr`` and
    transport, e.g. ``"Oblique<Oblique manifold OB(3,4) with unit rows,
    retraction='normalize'>; transport=projection"``."""
    return f"{manifold!r}; transport={getattr(manifold, 'transport_name', 'projection')}"
