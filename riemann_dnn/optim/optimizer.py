r"""``RiemannianOptimizer``: what every Riemannian ``torch.optim.Optimizer`` of the package
shares -- manifolds named in param groups (or carried by the parameters), points placed on
their manifold at construction, stacked copies with a rate per copy, non-finite gradients,
a state dict that loads with ``torch.load(weights_only=True)``, and the cache of prepared
native kernels. One optimizer is then one file (its class and functional form, as
``torch/optim/sgd.py``) plus its kernel; see :class:`RiemannianOptimizer` for the contract.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch.optim import Optimizer

from ..manifolds import working_dtype
from ..params import Geometry, resolve_geometry
from ._group import (
    Group,
    carries_manifold,
    check_copies,
    check_copies_value,
    check_lr,
    is_euclidean_group,
)
from ._nonfinite import (
    NonFiniteGradientError,
    bad_copies,
    freeze_copies,
    gradients_are_finite,
    hold_nonfinite_rows,
    raise_nonfinite,
    release_rows,
    warn_degenerate,
)
from ._state import TrackedState

__all__ = ["RiemannianOptimizer", "PreparedKernel", "manifold_spec", "NonFiniteGradientError"]

#: What a non-finite gradient does (see :class:`RiemannianOptimizer`).
NONFINITE_MODES = ("raise", "skip", "unchecked")


class PreparedKernel(Protocol):
    """A native step laid out once over the tensors of a set of param groups (see
    :meth:`RiemannianOptimizer._prepare_kernel`). The optimizer keeps it until the groups'
    parameters or the optimizer's state change."""

    def valid_for(self, groups: list[Group]) -> bool:
        """Whether ``groups`` still hold the tensors (same objects, storage, dtype and
        shape) this kernel was laid out over."""

    def gradient_pointers(self) -> Any | None:
        """The gradients to step with, or ``None`` when one is missing or unusable (the
        base then lays out a kernel over the parameters that have one; a gradient it still
        cannot read -- sparse, of another dtype or layout -- sends the step eager)."""

    def all_finite(self, grads: Any) -> bool:
        """Whether every entry of ``grads`` is finite (one read, before any weight moves)."""

    def __call__(self, grads: Any, groups: list[Group], state: TrackedState) -> int:
        """Step in place with the groups' current hyper-parameters and rates; new state
        tensors enter ``state`` here. Returns the number of rows (points) left untouched
        because their update was zero or not finite.

        A kernel may also offer ``step_checked(grads, groups, state) -> int | None``: check
        every gradient and step in one call, ``None`` (nothing written) when one is not
        finite; the base uses it when one kernel steps every group."""


class RiemannianOptimizer(Optimizer):
    r"""Base of the Riemannian optimizers: a ``torch.optim.Optimizer`` whose param groups
    name the manifold their parameters live on.

    **Groups.** Each group may set ``"manifold"`` (a name such as ``"oblique"`` -- every
    filter, i.e. row of the weight viewed as ``(out, -1)``, of unit norm -- ``"sphere"``,
    ``"stiefel"``, ``"grassmann"``, ``"euclidean"``, or a manifold object) and
    ``"retraction"``; a group naming none takes, per parameter, the manifold a
    :class:`~riemann_dnn.params.ManifoldParameter` carries, else Euclidean space.
    Constrained parameters are mapped onto their manifold when their group is added
    (``project_initial=True``; points already on it are kept bit for bit) or checked.

    **Stacked copies.** A group with ``"copies": n`` holds tensors with a leading axis of
    ``n`` independent copies (``torch.func.stack_module_state``): each copy is a point of
    the manifold of ``param[0]``, and the group's ``lr`` may be a tensor of shape ``(n,)``,
    one rate per copy.

    **Rates.** ``group["lr"]`` is the one place a rate lives: a number, a one-element tensor
    (schedulers, ``torch.compile``), or in groups with copies a float64 tensor of one rate
    per copy (which the native kernels read in place each step).

    **Non-finite gradients** (``nonfinite``): every gradient is checked before any weight
    or state moves, on every path; then ``"raise"`` raises
    :class:`NonFiniteGradientError` and ``"skip"`` skips the step (counted in
    ``skipped_steps``), every parameter untouched either way. In groups with copies
    the check is per copy: ``"skip"`` leaves the bad copies untouched and steps the others
    (counted in ``skipped_copies``). A row (a point, on manifolds without unit rows)
    whose update is zero or not finite although its gradient is finite -- a zero filter
    with a zero gradient, which is not on its manifold -- keeps its value and momentum
    while everything else steps, and a ``RuntimeWarning`` names the parameter. Sparse
    gradients are refused before anything moves. ``"unchecked"`` reads nothing before
    the step (no per-copy check either), as ``torch.optim`` does: Euclidean parameters
    take non-finite values as torch writes them, and a manifold row (point) whose gradient
    is not finite keeps its value and state, on every path, with the warning. It saves one
    read of every gradient per step; use it where something else checks, e.g.
    ``torch.amp.GradScaler``, which skips ``step()`` on an overflow.

    **State.** :meth:`state_dict` stores manifold objects as their description, so that
    ``torch.load(..., weights_only=True)`` reads it; :meth:`load_state_dict` keeps the live
    manifolds and retractions (a saved description or retraction that differs is refused)
    and fills keys missing from an older state dict with this optimizer's defaults. State
    tensors of half-precision parameters (``state_tensors``) are kept in float32.

    **Subclass contract.** A subclass (e.g. :class:`~riemann_dnn.optim.RiemannianSGD`)

    - sets ``name`` (used in messages) and ``state_tensors`` (its per-parameter
      state tensors, parameter-shaped, held in the working precision: e.g.
      ``("momentum_buffer",)``);
    - builds its ``defaults`` (``lr`` and its hyper-parameters; the base adds
      ``maximize``, ``manifold``, ``retraction``, ``copies``, ``foreach``, ``fused``) and
      calls ``super().__init__(params, defaults, nonfinite=..., project_initial=...)``;
    - implements ``_check_hyperparameters`` (raise ``ValueError`` naming the bad
      value; the base checks ``lr`` and ``copies``) and optionally ``_check_group``
      (checks of extra group keys);
    - implements ``_step_group``: the eager step of one group -- collect the
      parameters with a gradient and their state (initialising it), call the functional
      form with :meth:`geometry` of each parameter, write new state tensors back;
    - optionally implements the prepared-kernel hook, ``_kernel_key`` (groups with
      equal keys share one kernel; ``None``: this group has no kernel, so the step is
      eager) and ``_prepare_kernel`` (lay a ``PreparedKernel`` over those
      groups' tensors, or ``None``). The base caches kernels and drops them when any
      parameter, its dtype, shape or storage, or any state entry changes
      (``optimizer.state.clear()``, a replaced buffer, :meth:`load_state_dict`).

    The base's :meth:`step` evaluates the closure, handles per-copy non-finite gradients,
    runs the prepared kernels when every group qualifies, else checks the gradients
    (sparse ones are refused before anything moves) and calls ``_step_group`` per
    group.
    """

    #: The optimizer's name in messages.
    name: ClassVar[str] = "RiemannianOptimizer"
    #: Per-parameter state tensors (parameter-shaped, in the working precision).
    state_tensors: ClassVar[tuple[str, ...]] = ()
    #: The group keys the base adds to every optimizer's defaults.
    base_defaults: ClassVar[dict[str, Any]] = dict(
        maximize=False, manifold=None, retraction=None, copies=None, foreach=None, fused=None
    )

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        *,
        nonfinite: Literal["raise", "skip", "unchecked"] = "raise",
        project_initial: bool = True,
    ):
        if nonfinite not in NONFINITE_MODES:
            raise ValueError(
                f"{self.name}: nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}"
            )
        defaults = {**self.base_defaults, **defaults}
        self._check_defaults(defaults)
        self._geometries: dict[torch.Tensor, tuple[tuple, Geometry]] = {}
        self._project_initial = project_initial
        self._kernels: dict[tuple[int, ...], tuple[PreparedKernel, int]] = {}
        self._partial: set[tuple[int, ...]] = set()  # sets whose last step left some out
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self.skipped_copies: torch.Tensor | None = None
        super().__init__(params, defaults)  # validates and places each group (add_param_group)
        self.state = TrackedState(self.state)

    # -- the subclass's hooks -------------------------------------------------------------
    def _check_hyperparameters(self, group: Group, where: str) -> None:
        """Raise ``ValueError`` naming the first bad hyper-parameter of ``group`` (other
        than ``lr`` and ``copies``); ``where`` locates the group in the message."""
        raise NotImplementedError

    def _check_group(self, group: Group, where: str) -> None:
        """Checks of the subclass's extra group keys (default: none)."""

    def _step_group(self, group: Group, found: torch.Tensor) -> None:
        """The eager step of one group (see the class docstring); sets ``found`` to 1
        when a row (point) was left untouched because its update was zero or not finite."""
        raise NotImplementedError

    def _kernel_key(self, group: Group) -> Hashable | None:
        """Groups with equal keys share one prepared kernel; ``None`` (default): this group
        takes no kernel, and the step runs on the eager paths."""
        return None

    def _prepare_kernel(self, groups: list[Group]) -> PreparedKernel | None:
        """A ``PreparedKernel`` laid out over ``groups`` (equal ``_kernel_key``),
        or ``None`` when they do not qualify."""
        return None

    # -- groups ---------------------------------------------------------------------------
    def _check_defaults(self, defaults: Group) -> None:
        copies = defaults["copies"]
        check_copies_value(self.name, copies, "")
        lr = defaults["lr"]
        if isinstance(lr, torch.Tensor) and lr.ndim == 1 and lr.numel() > 1:
            copies = lr.shape[0]  # a rate per copy: each group with copies checks its shape
        check_lr(self.name, lr, copies, "")
        self._check_hyperparameters(defaults, "")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its hyper-parameters are checked and its constrained parameters
        are mapped onto their manifold (or checked, with ``project_initial=False``)."""
        super().add_param_group(param_group)
        index = len(self.param_groups) - 1
        group = self.param_groups[index]
        where = f" (param group {index})"
        try:
            check_copies_value(self.name, group["copies"], where)
            check_lr(self.name, group["lr"], group["copies"], where)
            self._check_hyperparameters(group, where)
            self._check_group(group, where)
            check_copies(index, group, self.param_groups)
            self._place_group(index, group, project=self._project_initial)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise
        self._kernels.clear()

    def geometry(self, param: torch.Tensor, group: Group) -> Geometry:
        """The manifold and point view of ``param`` in ``group`` (cached): the group's
        manifold, or the one ``param`` carries when the group names none. In a group with
        copies, the manifold is that of one copy and the view keeps the copies axis."""
        spec, retraction = group["manifold"], group["retraction"]
        if spec is None and carries_manifold(param):
            spec = param.manifold
            retraction = getattr(param, "retraction", None) or retraction
        key = (
            id(spec) if not isinstance(spec, (str, type(None))) else spec,
            retraction,
            tuple(param.shape),
            group["copies"],
        )
        cached = self._geometries.get(param)
        if cached is None or cached[0] != key:
            if group["copies"] is None:
                geometry = resolve_geometry(spec, retraction, param)
            else:
                geometry = resolve_geometry(spec, retraction, param[0])
                geometry = Geometry(
                    geometry.manifold, functools.partial(geometry.view, batch_dims=1)
                )
            cached = (key, geometry)
            self._geometries[param] = cached
        return cached[1]

    def geometries(self, params: list[torch.Tensor], group: Group) -> list[Geometry] | None:
        """:meth:`geometry` of each of ``params``, or ``None`` in a Euclidean group without
        copies (the functional forms' "all Euclidean")."""
        if is_euclidean_group(group) and group["copies"] is None:
            return None
        return [self.geometry(p, group) for p in params]

    def _state_shapes(self, param: torch.Tensor, group: Group) -> dict[str, tuple[int, ...]]:
        """The shape each of ``state_tensors`` must have (default: the parameter's)."""
        return dict.fromkeys(self.state_tensors, param.shape)

    def _check_state(self, param: torch.Tensor, group: Group) -> None:
        """Raise ``ValueError`` if a state tensor of ``param`` has not the shape
        :meth:`_state_shapes` gives (e.g. the parameter was reshaped since); called for
        every parameter before any moves, so :meth:`state_tensor` need not check."""
        entry = self.state[param]
        for key, shape in self._state_shapes(param, group).items():
            value = entry.get(key)
            if isinstance(value, torch.Tensor) and value.shape != shape:
                raise ValueError(
                    f"{self.name}: state {key!r} has shape {tuple(value.shape)} but its "
                    f"parameter needs {tuple(shape)}; after reshaping a parameter, drop its "
                    f"state (del optimizer.state[param]); nothing was stepped"
                )

    def state_tensor(
        self, param: torch.Tensor, key: str, dtype: torch.dtype | None = None
    ) -> torch.Tensor | None:
        """``state[param][key]`` on the parameter's device in ``dtype`` (default: its
        working precision); a tensor of another dtype or device, e.g. after the parameter's
        changed, is converted and stored back. ``None`` if there is none; for
        ``_step_group``."""
        entry = self.state.get(param)
        value = None if entry is None else entry.get(key)
        if not isinstance(value, torch.Tensor):
            return value
        dtype = dtype or working_dtype(param.dtype)
        if value.dtype != dtype or value.device != param.device:
            value = entry[key] = value.to(device=param.device, dtype=dtype)
        return value

    @torch.no_grad()
    def _place_group(self, index: int, group: Group, *, project: bool) -> None:
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
                        f"{self.name} with project_initial=True"
                    ) from None

    # -- pickling and state dicts -----------------------------------------------------------
    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.state = TrackedState(self.state)
        self._geometries = {}
        self._kernels = {}
        self._partial = set()
        self.__dict__.setdefault("nonfinite", "raise")
        self.__dict__.setdefault("skipped_steps", 0)
        self.__dict__.setdefault("skipped_copies", None)
        self.__dict__.setdefault("_project_initial", True)
        for group in self.param_groups:
            for key, value in self.base_defaults.items():
                group.setdefault(key, value)

    def state_dict(self) -> dict[str, Any]:
        """As ``Optimizer.state_dict``, with manifold objects stored as their description
        (a string), so that ``torch.load(..., weights_only=True)`` reads it back."""
        saved = super().state_dict()
        saved["state"] = {k: dict(v) for k, v in saved["state"].items()}
        for group in saved["param_groups"]:
            if not isinstance(group["manifold"], (str, type(None))):
                group["manifold"] = manifold_spec(group["manifold"])
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As ``Optimizer.load_state_dict``. Groups keep their live manifold objects and
        retractions: a saved manifold description or retraction that differs from the live
        one is refused. Keys an older state dict lacks take this optimizer's defaults, and
        the state tensors of float16/bfloat16 parameters stay float32 (torch would cast
        them to the parameter's dtype)."""
        saved_groups = state_dict["param_groups"]
        for index, (saved, live) in enumerate(zip(saved_groups, self.param_groups)):
            described = _describe(live["manifold"])
            if "manifold" in saved and saved["manifold"] != described:
                raise ValueError(
                    f"{self.name}.load_state_dict: param group {index} was saved on "
                    f"manifold {saved['manifold']!r}, but this optimizer has "
                    f"{described!r}; build the optimizer with the same param groups"
                )
            if saved.get("retraction", live["retraction"]) != live["retraction"]:
                raise ValueError(
                    f"{self.name}.load_state_dict: param group {index} was saved with "
                    f"retraction {saved['retraction']!r}, but this optimizer has "
                    f"{live['retraction']!r}; build the optimizer with the same retraction"
                )
        live = [(g["manifold"], g["retraction"]) for g in self.param_groups]
        filled = {
            **state_dict,
            "param_groups": [{**self.defaults, **saved} for saved in saved_groups],
        }
        super().load_state_dict(filled)
        for group, (manifold, retraction) in zip(self.param_groups, live):
            group["manifold"], group["retraction"] = manifold, retraction
        self.state = TrackedState(self.state)
        self._geometries = {}
        self._kernels = {}
        self._partial = set()
        self._keep_working_precision(state_dict)

    def _keep_working_precision(self, state_dict: dict[str, Any]) -> None:
        """State tensors of half-precision parameters back to float32 (the working
        precision), from the saved tensors (torch cast them to the parameter's dtype)."""
        for saved, group in zip(state_dict["param_groups"], self.param_groups):
            for index, param in zip(saved["params"], group["params"]):
                dtype = working_dtype(param.dtype)
                if dtype == param.dtype or not self._state_in_working_precision(param, group):
                    continue
                entry = state_dict["state"].get(index, {})
                for key in self.state_tensors:
                    value = entry.get(key)
                    if isinstance(value, torch.Tensor) and value.is_floating_point():
                        self.state[param][key] = value.to(
                            device=param.device, dtype=dtype, copy=True
                        )

    def _state_in_working_precision(self, param: torch.Tensor, group: Group) -> bool:
        """Whether ``param``'s state tensors are kept in the working precision (default:
        every parameter's; a subclass may keep some in the parameter's dtype)."""
        return True

    # -- stepping -------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Perform one step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stacked = [g for g in self.param_groups if g["copies"] is not None]
        kept = self._freeze_bad_copies(stacked) if stacked and self._checks else None
        try:
            self._step_all()
        finally:
            for tensor, (mask, saved) in kept or ():
                tensor[mask] = saved
        return loss

    def _step_all(self) -> None:
        outcome = self._kernel_step()
        if outcome is None:  # some group takes no kernel: the eager paths, for all
            self._kernels.clear()  # they may create or replace state tensors
            _refuse_sparse(self.name, self.param_groups)
            for group in self.param_groups:  # a bad state refused before anything moves
                for param in group["params"]:
                    if param.grad is not None and param in self.state:
                        self._check_state(param, group)
            plain = [g for g in self.param_groups if g["copies"] is None]
            if plain and self._checks and not gradients_are_finite(plain):
                outcome = "nonfinite"
            else:
                held = [] if self._checks else self._hold_nonfinite_rows()
                found = torch.zeros(1)
                try:
                    for group in self.param_groups:
                        self._step_group(group, found)
                finally:
                    release_rows(held, self.state)
                outcome = "rows" if held or bool(found) else "stepped"
        if outcome == "nonfinite":
            if self.nonfinite == "raise":
                raise_nonfinite(self.param_groups)
            self.skipped_steps += 1
        elif outcome == "rows":
            warn_degenerate(self.name, self.param_groups, self.geometry, not self._checks)

    def _kernel_step(self) -> Literal["stepped", "rows", "nonfinite"] | None:
        """Step every group through the prepared kernels, one per set of groups with equal
        ``_kernel_key``, when all of them qualify. Returns ``None`` (nothing done)
        when some group does not; ``"nonfinite"`` (nothing done) when a gradient is not
        finite; ``"rows"`` when a kernel left rows untouched (a zero or non-finite
        update); else ``"stepped"``."""
        groups = self.param_groups
        if not groups or torch.compiler.is_compiling():
            return None
        sets: dict[Hashable, list[int]] = {}
        for index, group in enumerate(groups):
            if not group["params"]:  # nothing to step; it must not send the rest eager
                continue
            key = self._kernel_key(group)
            if key is None:
                return None
            sets.setdefault(key, []).append(index)
        state = self.state
        if type(state) is not TrackedState:  # replaced by the user
            state = self.state = TrackedState(state)
            self._kernels.clear()
        calls = []
        for members in sets.values():
            key = tuple(members)
            member_groups, found = self._set_kernel(key, [groups[i] for i in members], state)
            if not member_groups:
                continue  # no parameter of the set has a gradient
            if found is None:
                return None
            calls.append((key, *found, member_groups))
        bad = 0
        if not self._checks:
            for _, kernel, grads, member_groups in calls:
                bad += kernel(grads, member_groups, state)
        elif len(calls) == 1 and hasattr(calls[0][1], "step_checked"):  # check and step at once
            _, kernel, grads, member_groups = calls[0]
            found = kernel.step_checked(grads, member_groups, state)
            if found is None:
                return "nonfinite"
            bad += found
        else:
            if not all(kernel.all_finite(grads) for _, kernel, grads, _ in calls):
                return "nonfinite"
            for _, kernel, grads, member_groups in calls:
                bad += kernel(grads, member_groups, state)
        for members, kernel, _, _ in calls:  # their own state writes leave them valid
            self._kernels[members] = (kernel, state.version)
        return "rows" if bad else "stepped"

    def _set_kernel(
        self, key: tuple[int, ...], groups: list[Group], state: TrackedState
    ) -> tuple[list[Group], tuple[PreparedKernel, Any] | None]:
        """The groups of one set that step, and their kernel with its gradients' addresses
        (``None``: the eager paths). As in ``torch.optim``, a parameter without a gradient
        is left out, state and all: the others take a kernel of their own, in the set's one
        cache slot (a kernel may keep state of its own, e.g. packed step counts). A set that
        left some out on its last step is filtered first, so that its kernel is not laid out
        twice a step."""
        partial = key in self._partial
        if partial:
            groups, partial = _with_gradients(groups)
        found = self._prepared(key, groups, state) if groups else None
        if found is None and not partial:
            groups, partial = _with_gradients(groups)
            if partial and groups:
                found = self._prepared(key, groups, state)
        (self._partial.add if partial else self._partial.discard)(key)
        return groups, found

    def _prepared(
        self, key: Hashable, groups: list[Group], state: TrackedState
    ) -> tuple[PreparedKernel, Any] | None:
        """The cached (else a new) kernel for ``groups`` and its gradients' addresses, or
        ``None`` when the groups do not qualify or a gradient cannot be read by it (missing,
        sparse, of another dtype or layout)."""
        cached = self._kernels.get(key)
        if cached is not None and cached[1] == state.version and cached[0].valid_for(groups):
            kernel = cached[0]
        else:
            kernel = self._prepare_kernel(groups)
            if kernel is None:
                return None
            self._kernels[key] = (kernel, state.version)
        grads = kernel.gradient_pointers()
        return None if grads is None else (kernel, grads)

    @property
    def _checks(self) -> bool:
        """Whether every gradient is checked before the step (not ``"unchecked"``)."""
        return self.nonfinite != "unchecked"

    def _hold_nonfinite_rows(self) -> list:
        """``nonfinite="unchecked"``, eager paths: manifold rows with a non-finite gradient
        step with a zero gradient and are put back after the step, as the kernels leave
        them (:func:`~._nonfinite.hold_nonfinite_rows`)."""
        return hold_nonfinite_rows(
            self.param_groups, self.geometry, self.state, self.state_tensors
        )

    def _freeze_bad_copies(self, stacked: list[Group]) -> list | None:
        """Per-copy non-finite handling: raise, or zero the bad copies' gradients and
        return their weights and state tensors, to be put back after the step."""
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
        return freeze_copies(stacked, self.state, bad, self.state_tensors)


def unexpected_keyword(cls: type, base: type, key: str) -> TypeError:
    """The error for a keyword that ``cls`` forwarded to ``base``'s ``__init__`` and no one
    takes, worded as Python words it and naming the ``__init__`` whose signature the
    keyword missed: that of the class nearest ``base`` that defines one (``RiemannianAdam``
    for ``RiemannianAdamW``)."""
    mro = cls.__mro__
    owner = next((c for c in reversed(mro[: mro.index(base)]) if "__init__" in vars(c)), cls)
    return TypeError(f"{owner.__name__}.__init__() got an unexpected keyword argument {key!r}")


def _with_gradients(groups: list[Group]) -> tuple[list[Group], bool]:
    """``groups`` with only their parameters that have a gradient (shallow copies; groups
    left empty dropped), and whether some parameter was left out."""
    kept = [{**g, "params": [p for p in g["params"] if p.grad is not None]} for g in groups]
    dropped = any(len(k["params"]) < len(g["params"]) for k, g in zip(kept, groups))
    return [g for g in kept if g["params"]], dropped


def _refuse_sparse(owner: str, groups: list[Group]) -> None:
    """Raise, before any group steps, when a gradient is sparse."""
    for gi, group in enumerate(groups):
        for pi, param in enumerate(group["params"]):
            if param.grad is not None and param.grad.is_sparse:
                raise RuntimeError(
                    f"{owner} does not support sparse gradients (group {gi}, parameter "
                    f"{pi}, shape {tuple(param.shape)}); nothing was changed. Use dense "
                    f"gradients, e.g. nn.Embedding(..., sparse=False)"
                )


def _work(tensor: torch.Tensor) -> torch.Tensor:
    dtype = working_dtype(tensor.dtype)
    return tensor if dtype == tensor.dtype else tensor.to(dtype)


def _describe(manifold: Any) -> Any:
    return manifold if isinstance(manifold, (str, type(None))) else manifold_spec(manifold)


def manifold_spec(manifold: Any) -> str:
    """A manifold object's description, as stored in a state dict: its ``repr`` and
    transport, e.g. ``"Oblique<Oblique manifold OB(3,4) with unit rows,
    retraction='normalize'>; transport=projection"``."""
    return f"{manifold!r}; transport={getattr(manifold, 'transport_name', 'projection')}"
