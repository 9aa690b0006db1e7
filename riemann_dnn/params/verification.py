r"""The numerical check of a claimed symmetry, and the small batch it runs on.

A weight's claim is checked by rescaling what the claim says may be rescaled -- each filter
by its own factor (``"filter"``), each group of filters by one factor (``"group"``), the
whole weight by one factor (``"tensor"``) -- and measuring the relative change of the
model's output in training mode,

.. math:: \frac{\max |f(\tilde W) - f(W)|}{\max |f(W)|},

with factors between 1/2 and 2 that differ from group to group by at least
:math:`2^{2/(G-1)}` (``scale_factors``), dropout masks and running statistics held fixed.
A normalization's ``eps`` makes the invariance approximate (about ``eps / variance``, which
on a small batch can reach 1e-3), and float32 rounding, amplified by channels of tiny
variance, adds noise: so the model is run in float64 (parameters, buffers and inputs cast
for the measurement) with the ``eps`` of every batch, instance, group and layer norm call
(modules', weight standardization's) set to 1e-30 (far below any batch variance); a model that does not run so, or whose
output is then not finite, is measured as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn
from torch.overrides import TorchFunctionMode

from .propagation import Symmetry, filter_axis, unwrap_model

__all__ = ["example_batch", "per_filter", "measure_changes", "scale_factors"]

_FIRST_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.Embedding,
)
_SIDES = {1: (64, 256, 1024, 16), 2: (32, 28, 64, 224, 128, 16, 8, 96, 299, 256), 3: (16, 32, 8)}


def _candidates(layer: nn.Module, generator: torch.Generator, dtype, device):
    if isinstance(layer, nn.Embedding):
        yield (torch.randint(0, layer.num_embeddings, (4, 16), generator=generator),)
        return
    if isinstance(layer, nn.Linear):
        yield (torch.randn(8, layer.in_features, generator=generator, dtype=dtype),)
        return
    d = layer.weight.ndim - 2
    for side in _SIDES[d]:
        yield (torch.randn(4, layer.in_channels, *[side] * d, generator=generator, dtype=dtype),)


def example_batch(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """A small random batch ``model`` runs on, built from its first layer (in module order):
    a conv's ``(4, in_channels, side, side)`` with the first side that runs of 32, 28, 64,
    224, 128, 16, 8, 96, 299, 256 (1-d and 3-d convs alike); a linear layer's ``(8, in_features)``; an embedding's ``(4, 16)`` token ids.

    Raises:
        ValueError: no such layer, or no candidate runs; pass ``example_input=...``.
    """
    inner = unwrap_model(model)
    layer = next((m for m in inner.modules() if isinstance(m, _FIRST_LAYERS)), None)
    name = type(inner).__name__
    if layer is None:
        raise ValueError(
            f"{name} has no conv, linear or embedding layer to build an input from; pass "
            f"example_input=... (a batch the model runs on)"
        )
    weight = layer.weight
    generator = torch.Generator().manual_seed(0)
    errors = []
    for args in _candidates(layer, generator, weight.dtype, weight.device):
        args = tuple(a.to(weight.device) for a in args)
        try:
            _outputs(inner, args, {})
            return args
        except Exception as err:  # noqa: BLE001 - any failure: the next candidate
            errors.append(f"{tuple(args[0].shape)}: {type(err).__name__}")
    raise ValueError(
        f"could not build an input for {name} from its first layer "
        f"{type(layer).__name__} (tried {'; '.join(errors)}); pass example_input=... (a "
        f"batch the model runs on)"
    )


def _cast(value: Any, dtype: torch.dtype | None) -> Any:
    if dtype is None or not (isinstance(value, torch.Tensor) and value.is_floating_point()):
        return value
    return value.to(dtype)


def _outputs(
    model: nn.Module, args: tuple, overrides: dict, seed: int = 0, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The model's output tensors, flattened and joined, in training mode with
    ``overrides`` for some parameters (and every floating parameter, buffer and input in
    ``dtype``, if given); buffers, modes and the RNG are left as they were."""
    params = {k: _cast(v, dtype) for k, v in model.named_parameters()}
    buffers = {k: _cast(v.clone(), dtype) for k, v in model.named_buffers()}
    overrides = {k: _cast(v, dtype) for k, v in overrides.items()}
    args = tuple(_cast(a, dtype) for a in args)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.train()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            out = torch.func.functional_call(model, {**params, **buffers, **overrides}, args)
    finally:
        for module, mode in modes:
            module.training = mode
    leaves = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in leaves])


_NEGLIGIBLE_EPS = 1e-30
# the position of ``eps`` among the arguments of each normalization
_EPS_AT = {
    F.batch_norm: 7,
    torch.batch_norm: 7,
    F.instance_norm: 7,
    torch.instance_norm: 7,
    F.group_norm: 4,
    torch.group_norm: 4,
    F.layer_norm: 4,
    torch.layer_norm: 4,
}


class _NegligibleEps(TorchFunctionMode):
    """Every batch, instance, group and layer norm called with ``eps = 1e-30``, whether the
    eps is a module's attribute or written in the call (weight standardization)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        at = _EPS_AT.get(func)
        if at is not None:
            if len(args) > at:
                args = args[:at] + (_NEGLIGIBLE_EPS,) + args[at + 1 :]
            else:
                kwargs["eps"] = _NEGLIGIBLE_EPS
        return func(*args, **kwargs)


@contextmanager
def _negligible_eps(model: nn.Module) -> Iterator[None]:
    with _NegligibleEps():
        yield


def scale_factors(
    shape: Sequence[int], axis: int, groups: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Factors broadcastable to ``shape``: ``groups`` values along ``axis``, each repeated
    over ``shape[axis] / groups`` consecutive filters (``groups = shape[axis]``: one per
    filter; 1: one for the whole weight). They are :math:`2^{u_i}` with the :math:`u_i`
    evenly spaced in [-1, 1] in random order (so two groups' factors differ by at least
    :math:`2^{2/(G-1)}`), or :math:`u = \pm 1` for one group."""
    n = shape[axis] if shape else 1
    if groups == 1:
        u = torch.where(torch.rand(1, generator=generator) < 0.5, -1.0, 1.0).double()
    else:
        u = torch.linspace(-1, 1, groups, dtype=torch.float64)
        u = u[torch.randperm(groups, generator=generator)]
    factors = (2.0**u).repeat_interleave(n // groups)
    view = [1] * len(shape)
    if view:
        view[axis] = n
    return factors.view(view)


def measure_changes(
    model: nn.Module,
    inputs: Any,
    plan: Mapping[str, Symmetry],
    *,
    generator: torch.Generator | None = None,
    rtol: float | None = None,
) -> dict[str, float]:
    """``{name: relative output change}`` when each weight of ``plan`` is rescaled as its
    :class:`~riemann_dnn.params.Symmetry` says (per filter, per group of filters, as a whole; a ``"none"``
    entry per filter), in training mode. The factors come from ``generator`` (default: a
    new one seeded with 0), never from the global RNG.

    Without ``rtol``: one forward pass per weight. With ``rtol`` (a pass/fail check): the
    weights are first rescaled all together, each by its own factors, and only a set whose
    joint change exceeds ``rtol`` is split in halves and checked again; a weight that
    passes gets the change of the set it passed in (an output invariant under each
    rescaling is invariant under all of them together, and random factors make a chance
    cancellation of non-invariant changes vanishingly unlikely). Two forward passes when
    every claim holds."""
    inner = unwrap_model(model)
    named = dict(model.named_parameters())
    if generator is None:  # deterministic, and the global RNG is left alone
        generator = torch.Generator().manual_seed(0)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    run = _Rescaled(inner, named, args, plan, generator)
    with _negligible_eps(inner):
        if run.start(torch.float64):
            return run.changes(rtol)
    run.start(None)
    return run.changes(rtol)


class _Rescaled:
    """Output changes of a model under rescalings of some of its weights."""

    def __init__(self, inner, named, args, plan, generator):
        self.inner, self.args = inner, args
        names = {id(p): n for n, p in inner.named_parameters()}
        self.scaled = {}
        for name, symmetry in plan.items():
            weight = named[name]
            groups = symmetry.groups if symmetry.kind != "none" else symmetry.filters
            factors = scale_factors(weight.shape, symmetry.axis, groups, generator)
            value = weight.detach().double() * factors.to(weight.device)
            self.scaled[name] = (names[id(weight)], value, weight.dtype)

    def start(self, dtype: torch.dtype | None) -> bool:
        """The reference output in ``dtype`` (None: the model's own); ``False`` if the model
        does not run in ``dtype`` or its output is not finite."""
        self.dtype = dtype
        try:
            self.reference = _outputs(self.inner, self.args, {}, dtype=dtype)
        except (RuntimeError, TypeError):
            if dtype is None:
                raise
            return False
        self.scale = self.reference.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
        return bool(torch.isfinite(self.reference).all())

    def change(self, names: Sequence[str]) -> float:
        overrides = {
            key: value.to(self.dtype or dtype)
            for key, value, dtype in (self.scaled[n] for n in names)
        }
        out = _outputs(self.inner, self.args, overrides, dtype=self.dtype)
        change = (out - self.reference).abs().max() / self.scale
        return float(change) if torch.isfinite(change) else math.inf

    def changes(self, rtol: float | None) -> dict[str, float]:
        names = list(self.scaled)
        if rtol is None:
            return {n: self.change([n]) for n in names}
        result: dict[str, float] = {}
        self._split(names, rtol, result)
        return {n: result[n] for n in names}

    def _split(self, names: list[str], rtol: float, result: dict[str, float]) -> None:
        if not names:
            return
        change = self.change(names)
        if change <= rtol or len(names) == 1:
            result.update(dict.fromkeys(names, change))
            return
        half = len(names) // 2
        self._split(names[:half], rtol, result)
        self._split(names[half:], rtol, result)


def per_filter(model: nn.Module, names: Sequence[str]) -> dict[str, Symmetry]:
    """A per-filter plan for ``names`` (filters along each layer's own axis)."""
    params = dict(model.named_parameters())
    axes = filter_axis(unwrap_model(model))
    plan = {}
    for name in names:
        p = params[name]
        axis = axes.get(id(p), 0) if p.ndim >= 2 else 0
        n = p.shape[axis] if p.ndim else 1
        plan[name] = Symmetry(name, tuple(p.shape), "filter", n, axis)
    return plan
