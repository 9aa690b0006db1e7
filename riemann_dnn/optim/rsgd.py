"""``RiemannianSGD``: a ``torch.optim.Optimizer`` that steps each parameter on its manifold."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.sgd import sgd as _torch_sgd

from ..manifolds import working_dtype
from ..step import (
    SGDHyperparameters,
    check_sgd_hyperparameters,
    riemannian_sgd_step,
    sphere_sgd_step_,
    unit_norm_axis,
)
from ..step.native import PreparedStep, native_available, oblique_sgd_
from .geometry import Geometry, resolve_geometry

__all__ = [
    "RiemannianSGD",
    "NonFiniteGradientError",
    "riemannian_sgd",
    "manifold_spec",
    "filter_rates",
    "FILTER_RATES",
]


class NonFiniteGradientError(FloatingPointError):
    """A gradient holds NaN or inf; the weights were left untouched."""


def _check_hyperparameters(group: dict[str, Any], where: str, *, defaults: bool = False) -> None:
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
        _check_hyperparameters(defaults, "", defaults=True)
        self._geometries: dict[torch.Tensor, tuple[tuple, Geometry]] = {}
        self._project_initial = project_initial
        self.skipped_copies: torch.Tensor | None = None
        self._prepared: dict[int, tuple] = {}
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
            _check_hyperparameters(group, f" (param group {index})")
            _check_filter_rate(group, f" (param group {index})")
            self._check_copies(index, group)
            self._place_group(index, group, project=self._project_initial)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def _check_copies(self, index: int, group: dict[str, Any]) -> None:
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
        others = {g["copies"] for g in self.param_groups if g["copies"] is not None}
        if len(others) > 1:
            raise ValueError(
                f"param group {index}: copies={copies}, but another group has copies="
                f"{sorted(others - {copies})}; all groups with copies must hold the same "
                f"number of copies"
            )

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
        if _is_euclidean_group(group):
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
                            point.copy_(geometry.manifold.project_point(_work(point)))
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
        self._prepared = {}
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
        self._prepared = {}
        for saved, group in zip(state_dict["param_groups"], self.param_groups):
            for index, param in zip(saved["params"], group["params"]):
                buf = state_dict["state"].get(index, {}).get("momentum_buffer")
                work = working_dtype(param.dtype)
                if work != param.dtype and isinstance(buf, torch.Tensor):
                    self.state[param]["momentum_buffer"] = buf.to(
                        device=param.device, dtype=work, copy=True
                    )

    # -- stepping -------------------------------------------------------------------------
    def _gradients_are_finite(self, groups: list[dict[str, Any]]) -> bool:
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

    def _bad_copies(self, groups: list[dict[str, Any]]) -> torch.Tensor | None:
        """The copies (a bool mask) whose gradient holds NaN/inf in any group with copies."""
        bad = None
        for group in groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                flags = ~torch.isfinite(param.grad.reshape(param.shape[0], -1)).all(1)
                bad = flags if bad is None else bad | flags.to(bad.device)
        return bad

    def _raise_nonfinite(self, detail: str = "") -> None:
        bad = [
            f"group {gi} parameter {pi} (shape {tuple(p.shape)})"
            for gi, g in enumerate(self.param_groups)
            for pi, p in enumerate(g["params"])
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]
        raise NonFiniteGradientError(
            f"non-finite gradient in {', '.join(bad)}{detail}; the weights were not changed. "
            f"Lower the learning rate, check the loss, or pass nonfinite='skip' to skip such "
            f"steps"
        )

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
            if self._prepared_step(self.param_groups):
                return loss
            self._prepared.clear()  # the other paths may create or replace momentum buffers
            # "skip": every gradient checked first (strict); "raise": the row-fused kernel
            # checks its rows as it reads them, the other parameters are checked first
            checked = plain if self.nonfinite == "skip" else self._eager_checked(plain)
            if checked and not self._gradients_are_finite(checked):
                if self.nonfinite == "raise":
                    self._raise_nonfinite()
                self.skipped_steps += 1
                return loss
            found = torch.zeros(1)
            for group in self.param_groups:
                self._step_group(group, found)
            if bool(found) and self.nonfinite == "raise":
                self._raise_rows()
        finally:
            for tensor, (mask, saved) in kept or ():
                tensor[mask] = saved
        return loss

    def _freeze_bad_copies(self, stacked: list[dict[str, Any]]) -> list | None:
        """Per-copy non-finite handling: raise, or zero the bad copies' gradients and
        return their weights and momentum, to be put back after the step."""
        bad = self._bad_copies(stacked)
        if bad is None:
            return None
        if self.skipped_copies is None or self.skipped_copies.shape != bad.shape:
            self.skipped_copies = torch.zeros(bad.shape, dtype=torch.long)
        if not bool(bad.any()):
            return None
        if self.nonfinite == "raise":
            self._raise_nonfinite(f" (copies {bad.nonzero().flatten().tolist()})")
        self.skipped_copies += bad.cpu().long()
        return self._freeze_copies(stacked, bad)

    # -- the prepared native step: one C call per group, for small networks -----------------
    def _prepared_step(self, groups: list[dict[str, Any]]) -> bool:
        """Step every group through :class:`~riemann_dnn.step.native.PreparedStep` calls
        -- one per set of groups with equal hyper-parameters -- when all of them qualify
        (CPU, one dtype, contiguous, Euclidean or unit rows, every gradient present);
        ``False`` (nothing done) otherwise."""
        if not groups or torch.compiler.is_compiling() or not native_available():
            return False
        sets: dict[tuple, list[int]] = {}
        for index, group in enumerate(groups):
            sets.setdefault(_hyperparameters(group), []).append(index)
        calls = []
        for hyper, members in sets.items():
            prepared = self._prepare(tuple(members), [groups[i] for i in members], hyper[1] != 0)
            if prepared is None:
                return False
            grads = prepared.gradient_pointers()
            if grads is None:
                return False
            calls.append((hyper, prepared, grads))
        if self.nonfinite == "skip" and not all(
            prepared.all_finite(grads) for _, prepared, grads in calls
        ):
            self.skipped_steps += 1
            return True
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
                    self.state[param]["momentum_buffer"] = buf
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
        if found and self.nonfinite == "raise":
            self._raise_rows()
        return True

    def _prepare(
        self, key: tuple[int, ...], groups: list[dict[str, Any]], momentum: bool
    ) -> PreparedStep | None:
        """The cached prepared step of these groups (rebuilt when their parameters or
        momentum changed), or ``None`` when they do not qualify."""
        params = [p for group in groups for p in group["params"]]
        cached = self._prepared.get(key)
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
            euclidean = _is_euclidean_group(group)
            for param in group["params"]:
                if (
                    param.device.type != "cpu"
                    or param.dtype != params[0].dtype
                    or param.dtype not in _ROW_KERNEL_DTYPES
                    or not param.is_contiguous()
                ):
                    return None
                geometry = None if euclidean else self.geometry(param, group)
                if geometry is None or geometry.is_euclidean:
                    points.append(_plain_rows(param, group["copies"]))
                    normalize.append(False)
                elif _takes_row_kernel(param, geometry):
                    rows = geometry.view(param)
                    points.append(rows.reshape(-1, rows.shape[-1]))
                    normalize.append(True)
                else:
                    return None
        buffers, first = [], False
        if momentum:
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            if all(b is None for b in buffers):
                buffers = [torch.empty_like(p, dtype=_work(p).dtype) for p in params]
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
        self._prepared[key] = (prepared, momentum)
        return prepared

    def _raise_rows(self) -> None:
        raise NonFiniteGradientError(
            "non-finite gradient in some rows: those rows were left untouched, the other "
            "weights were stepped (no weight holds NaN/inf or left its manifold). Lower the "
            "learning rate, check the loss, or pass nonfinite='skip' to skip such steps whole"
        )

    def _eager_checked(self, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``groups`` restricted to the parameters that the row-fused kernel does not step
        (it checks its own rows)."""
        out = []
        for group in groups:
            if (
                group["foreach"] is False
                or group["fused"] is False
                or (group["foreach"] is None and torch.compiler.is_compiling())
            ):
                out.append(group)
                continue
            rest = [
                p
                for p in group["params"]
                if p.grad is None
                or _is_euclidean_group(group)
                or not _takes_row_kernel(p, self.geometry(p, group))
            ]
            out.append({**group, "params": rest})
        return out

    def _freeze_copies(self, groups, bad: torch.Tensor) -> list:
        """Zero the bad copies' gradients and save their weights and momentum, to be put
        back after the step (a step with zero gradient still renormalises)."""
        kept = []
        for group in groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                mask = bad.to(param.device)
                param.grad[mask] = 0
                kept.append((param, (mask, param[mask].clone())))
                buf = self.state[param].get("momentum_buffer")
                if buf is not None:
                    kept.append((buf, (mask, buf[mask].clone())))
        return kept

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
            _filter_rate_sgd(params, grads, bufs, group, [self.geometry(p, group) for p in params])
            if group["momentum"] != 0:
                for param, buf in zip(params, bufs):
                    self.state[param]["momentum_buffer"] = buf
            return
        geometries = (
            None
            if _is_euclidean_group(group) and not stacked
            else [self.geometry(param, group) for param in params]
        )
        riemannian_sgd(
            params,
            grads,
            bufs,
            geometries,
            hp=SGDHyperparameters(
                group["lr"],
                group["momentum"],
                group["dampening"],
                group["nesterov"],
                group["weight_decay"],
            ),
            foreach=group["foreach"],
            maximize=group["maximize"],
            copies=group["copies"],
            fused=group["fused"],
            found_nonfinite=found,
        )
        if group["momentum"] != 0:
            for param, buf in zip(params, bufs):
                self.state[param]["momentum_buffer"] = buf


def _hyperparameters(group: dict[str, Any]) -> tuple:
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


#: Per-filter rates a Euclidean group may take (key ``"filter_rate"``), see :func:`filter_rates`.
FILTER_RATES = ("norm2",)


def _check_filter_rate(group: dict[str, Any], where: str) -> None:
    rule = group.get("filter_rate")
    if rule is None:
        return
    if rule not in FILTER_RATES:
        raise ValueError(
            f"RiemannianSGD: filter_rate must be None or one of {FILTER_RATES}, "
            f"got {rule!r}{where}"
        )
    if not _is_euclidean_group(group):
        raise ValueError(
            f"RiemannianSGD: filter_rate={rule!r} is for Euclidean groups, but "
            f"this group is on manifold {group['manifold']!r}{where}; put the "
            f"filters in a Euclidean group or drop 'filter_rate'"
        )
    for position, param in enumerate(group["params"]):
        if param.ndim < (2 if group["copies"] is None else 3):
            raise ValueError(
                f"RiemannianSGD: filter_rate needs weights with filters (rows of "
                f"the weight viewed as (out, -1)); parameter {position} has shape "
                f"{tuple(param.shape)}{where}"
            )


@torch.no_grad()
def filter_rates(
    lr: float | torch.Tensor, param: torch.Tensor, copies: int | None = None
) -> torch.Tensor:
    r"""The per-filter rates of ``"filter_rate": "norm2"``: filter :math:`w_i` (row ``i`` of
    the weight viewed as ``(out, -1)``; per copy with ``copies``) steps with
    :math:`\lambda_i = \lambda \lVert w_i \rVert^2`, the norm taken before the step.

    With BN right after :math:`W x` the loss is invariant to each filter's scale, its gradient
    is orthogonal to the filter and the filter's angular step is
    :math:`\lambda_i \lVert g_i\rVert/\lVert w_i\rVert`; the rate :math:`\lambda\lVert w_i\rVert^2`
    makes that step what it is at :math:`\lVert w_i \rVert = 1` (Hoffer et al. 2018's
    effective-learning-rate control). Returns a tensor shaped to broadcast over ``param``:
    ``(out, 1, ...)``, or ``(copies, out, 1, ...)``.
    """
    lead = 1 if copies is None else 2
    work = _work(param)
    norms2 = work.reshape(*param.shape[:lead], -1).pow(2).sum(-1)
    if isinstance(lr, torch.Tensor):
        lr = lr.to(device=param.device, dtype=work.dtype)
        if lr.ndim == 1:  # one rate per copy
            lr = lr.view(-1, 1)
    rates = lr * norms2
    return rates.view(*rates.shape, *([1] * (param.ndim - lead)))


def _filter_rate_sgd(params, grads, bufs, group, geometries) -> None:
    """A Euclidean group with ``"filter_rate"``: the shared step (plain SGD on Euclidean
    space: momentum, dampening, Nesterov, weight decay as ``torch.optim.SGD``) with the rate
    of each filter from :func:`filter_rates`."""
    hp = SGDHyperparameters(
        group["lr"],
        group["momentum"],
        group["dampening"],
        group["nesterov"],
        group["weight_decay"],
    )
    for i, param in enumerate(params):
        grad = grads[i].neg() if group["maximize"] else grads[i]
        rates = filter_rates(group["lr"], param, group["copies"])
        new_point, new_buf = riemannian_sgd_step(
            geometries[i].manifold, _work(param), _work(grad), bufs[i], hp._replace(lr=rates)
        )
        param.copy_(new_point)
        bufs[i] = None if new_buf is None else new_buf.to(_work(param).dtype)


def manifold_spec(manifold: Any) -> str:
    """A manifold object's description, as stored in a state dict: its ``repr`` and
    transport, e.g. ``"Oblique<Oblique manifold OB(3,4) with unit rows,
    retraction='normalize'>; transport=projection"``."""
    return f"{manifold!r}; transport={getattr(manifold, 'transport_name', 'projection')}"


def _work(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in its working precision (:func:`~riemann_dnn.manifolds.working_dtype`)."""
    work = working_dtype(tensor.dtype)
    return tensor if work == tensor.dtype else tensor.to(work)


def _is_euclidean_group(group: dict[str, Any]) -> bool:
    """A group that names no manifold (or ``"euclidean"``): plain SGD, any shapes."""
    spec = group["manifold"]
    return spec is None or (isinstance(spec, str) and spec.lower() == "euclidean")


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
    (:func:`riemann_dnn.step.native.oblique_sgd_`) unless ``fused`` is ``False``; it
    leaves rows with a non-finite gradient untouched and sets ``found_nonfinite``."""
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
        rows = [i for i in constrained if _takes_row_kernel(params[i], geometries[i])]
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
        step = _multi_tensor_step if foreach else _single_tensor_step
        step(params, grads, momentum_buffers, geometries, constrained, hp)


def _takes_row_kernel(param: torch.Tensor, geometry: Geometry) -> bool:
    """Unit rows (oblique filters), the normalize retraction, projection transport, on the
    CPU: the row-fused kernel's case."""
    return (
        param.device.type == "cpu"
        and unit_norm_axis(geometry.manifold) == -1
        and param.dtype in _ROW_KERNEL_DTYPES
    )


_ROW_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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
    kernels (foreach included) we call directly."""
    sub_bufs = [bufs[i] for i in indices]
    _torch_sgd(
        [params[i] for i in indices],
        [grads[i] for i in indices],
        sub_bufs,
        weight_decay=hp.weight_decay,
        momentum=hp.momentum,
        lr=hp.lr,
        dampening=hp.dampening,
        nesterov=hp.nesterov,
        maximize=maximize,
        foreach=foreach,
    )
    for i, buf in zip(indices, sub_bufs):
        bufs[i] = buf


def _rate_for(hp: SGDHyperparameters, point: torch.Tensor) -> SGDHyperparameters:
    """``hp`` with a per-copy rate (shape ``(copies,)``) shaped to broadcast over
    ``point`` (``(copies, ...)``) in the point's working precision."""
    lr = hp.lr
    if isinstance(lr, torch.Tensor) and lr.ndim == 1:
        lr = lr.to(device=point.device, dtype=_work(point).dtype).view(
            -1, *([1] * (point.ndim - 1))
        )
        return hp._replace(lr=lr)
    return hp


def _single_tensor_step(params, grads, bufs, geometries, indices, hp) -> None:
    """The readable reference: one call of the shared step per parameter (per copy on
    manifolds whose formulas do not broadcast over a copies axis)."""
    for i in indices:
        geometry = geometries[i]
        view = geometry.view
        point = view(params[i])
        buf = bufs[i]
        stacked = isinstance(view, functools.partial)
        if stacked and not _broadcasts_over_copies(geometry.manifold):
            new_point, new_buf = _step_each_copy(
                geometry.manifold, point, view(grads[i]), None if buf is None else view(buf), hp
            )
        else:
            new_point, new_buf = riemannian_sgd_step(
                geometry.manifold,
                _work(point),
                _work(view(grads[i])),
                None if buf is None else view(buf),
                _rate_for(hp, point),
            )
        point.copy_(new_point)
        bufs[i] = _store_buffer(new_buf, params[i], view)


def _step_each_copy(manifold, point, grad, buf, hp):
    """The shared step on each copy ``point[k]`` with its own rate."""
    lr = hp.lr
    points, new_bufs = [], []
    for k in range(point.shape[0]):
        rate = lr[k] if isinstance(lr, torch.Tensor) and lr.ndim == 1 else lr
        x, m = riemannian_sgd_step(
            manifold,
            _work(point[k]),
            _work(grad[k]),
            None if buf is None else buf[k],
            hp._replace(lr=rate),
        )
        points.append(x)
        new_bufs.append(m)
    return torch.stack(points), (None if new_bufs[0] is None else torch.stack(new_bufs))


def _store_buffer(new_buf, param, view):
    """A parameter-shaped (float32 for half parameters) tensor holding the point-shaped
    buffer ``new_buf``."""
    if new_buf is None:
        return None
    storage = torch.empty_like(param, dtype=_work(param).dtype)
    view(storage).copy_(new_buf)
    return storage


def _broadcasts_over_copies(manifold) -> bool:
    """Whether the manifold's formulas broadcast over a leading stack axis (its declared
    ``broadcasts_over_copies``; Sphere's do not: its norms run over the whole array)."""
    return getattr(manifold, "broadcasts_over_copies", False)


def _stack_spheres(device: torch.device) -> bool:
    """Whether same-shaped spheres are stacked for :func:`~riemann_dnn.step.sphere_sgd_step_`: on accelerators,
    where a step is bound by kernel launches, one stacked call beats a call per tensor
    despite the copies; on CPUs, in-place steps per tensor (no copies) are faster."""
    return device.type != "cpu"


def _fused_sphere_steps(params, grads, bufs, geometries, members, axis, hp) -> None:
    """:func:`~riemann_dnn.step.sphere_sgd_step_` on parameters with equal geometry keys: in place per tensor,
    or on one stack of them (:func:`_stack_spheres`)."""
    view = geometries[members[0]].view
    have_buf = [bufs[i] is not None for i in members]
    if isinstance(view, functools.partial):  # stacked copies: a rate per copy
        hp = _rate_for(hp, view(params[members[0]]))
    if (
        len(members) == 1
        or not _stack_spheres(params[members[0]].device)
        or (any(have_buf) and not all(have_buf))
    ):
        for i in members:
            buf = bufs[i]
            new_buf = sphere_sgd_step_(
                view(params[i]), view(grads[i]), None if buf is None else view(buf), axis, hp
            )
            if buf is None and new_buf is not None:
                bufs[i] = new_buf.reshape(params[i].shape)  # parameter-shaped
        return
    points = [view(params[i]) for i in members]
    x = torch.stack(points)
    m = torch.stack([view(bufs[i]) for i in members]) if all(have_buf) else None
    new_buf = sphere_sgd_step_(x, torch.stack([view(grads[i]) for i in members]), m, axis, hp)
    torch._foreach_copy_(points, list(x.unbind(0)))
    if m is not None:
        torch._foreach_copy_([view(bufs[i]) for i in members], list(m.unbind(0)))
    elif new_buf is not None:
        for i, buf in zip(members, new_buf.unbind(0)):
            bufs[i] = buf.reshape(params[i].shape)


def _multi_tensor_step(params, grads, bufs, geometries, indices, hp) -> None:
    """The fast path. Spheres and oblique filters with the normalize retraction (the
    paper's UN update) in float32/float64 take the fused in-place kernel
    :func:`~riemann_dnn.step.sphere_sgd_step_`, a handful of kernels per tensor (per stack of same-shaped
    tensors on accelerators); other same-shaped parameters on the same manifold are
    stacked and stepped by one call of the shared step (its formulas broadcast over a
    leading axis)."""
    spheres: dict[tuple, list[int]] = defaultdict(list)
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i in indices:
        param, geometry = params[i], geometries[i]
        axis = unit_norm_axis(geometry.manifold)
        if axis is not None and param.dtype in (torch.float32, torch.float64):
            spheres[(param.device, param.dtype, geometry.key, axis)].append(i)
        elif _broadcasts_over_copies(geometry.manifold):
            buckets[(param.device, param.dtype, geometry.key)].append(i)
        else:
            _single_tensor_step(params, grads, bufs, geometries, [i], hp)
    for (*_, axis), members in spheres.items():
        _fused_sphere_steps(params, grads, bufs, geometries, members, axis, hp)
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
