r"""Which weights' scale the model's normalizations remove: "the scale of channel ``c`` of
weight ``W``" followed through every op of one forward pass.

For each weight ``W`` (each parameter of two or more dimensions) the analysis asks: if each
filter ``c`` of ``W`` is multiplied by its own factor :math:`s_c > 0`, which tensors of the
forward pass change, and how? A tensor ``t`` is in one of three states with respect to
``W``:

- **clean**: it does not depend on the :math:`s_c`;
- **scaled**: :math:`t = s_{\mathrm{id}}^p\, u + v`, where ``id`` maps every element of
  ``t`` to the filter whose scale multiplies it (or to none, ``-1``), ``u`` and the
  *offset* ``v`` are clean, and ``key`` says which elements of ``v`` may differ (an offset
  comes from a bias or a constant added to a scaled tensor);
- **tainted**: anything else.

Ops that commute with a positive per-channel scale keep a tensor scaled: reshapes,
permutations, indexing, concatenation, max and average pooling, interpolation, dropout and
drop-path, ReLU-like activations, products and quotients with clean tensors, sums of tensors
scaled alike; a conv or linear layer turns a scaled *weight* into a scaled output (its
filters become the output channels; a bias adds an offset). A normalization *removes* the
scale: batch, instance, group and layer norms, RMS norm and ``F.normalize``, and
``torch._weight_norm`` (the weight_norm parametrization) make their output clean when,
within each slice they normalize, every element carries the same scale and the same offset
(RMS norm and ``F.normalize`` subtract no mean: no offset allowed). When a slice mixes the
scales of several filters, those filters must share one factor: the analysis merges them
(union-find), which is how GroupNorm's per-group and LayerNorm's whole-tensor symmetries
appear. Any other op taints its output. A weight is invariant when no scaled or tainted
tensor reaches the model's output and no value of one leaves the tensor world (``.item()``,
``bool(t)``).

The ops are seen by a :class:`~torch.overrides.TorchFunctionMode` that records every torch
function and tensor method called; the forward pass runs either as a torch.fx graph
interpreted node by node (``trace="fx"``) or as the model's own ``forward`` with hooks that
name the module being run (``trace="hooks"``): the same rules on the same ops, the graph
giving names to the functional calls and the hooks handling control flow that fx cannot
trace.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["Symmetry", "KINDS", "find_symmetries", "unwrap_model", "filter_axis"]

#: The kinds of symmetry, finest first: each filter its own scale, each group of
#: consecutive filters one scale, the whole weight one scale; ``"none"``: no claim.
KINDS = ("filter", "group", "tensor", "none")
_MAX_TRAIL = 10


@dataclass(frozen=True)
class Symmetry:
    """What the analysis found for one weight.

    Attributes:
        name: the parameter's name in the model.
        shape: its shape.
        kind: ``"filter"``, ``"group"``, ``"tensor"`` or ``"none"`` (see :data:`~riemann_dnn.params.KINDS`).
        groups: the number of unit-norm rows of its manifold: the filters (``"filter"``),
            the groups (``"group"``), 1 (``"tensor"``); 0 for ``"none"``.
        axis: the weight's axis that holds the filters (the layer's output channels): 0,
            or 1 for ``ConvTranspose*d``.
        norms: the normalizations that remove its scale (module and op).
        path: how its scale reaches the first of them, e.g. ``"conv1 -> cat -> bn1
            (batch_norm)"``.
        reason: why it is not invariant (``""`` if it is).
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    groups: int
    axis: int = 0
    norms: tuple[str, ...] = ()
    path: str = ""
    reason: str = ""

    @property
    def invariant(self) -> bool:
        return self.kind != "none"

    @property
    def filters(self) -> int:
        """The number of filters along :attr:`axis`."""
        return self.shape[self.axis] if self.shape else 1

    @property
    def manifold(self) -> str:
        """The param-group manifold of this weight (see
        ``riemann_dnn.params.geometry``): ``"oblique"`` (one unit row per filter),
        ``"oblique:groups=G"`` (a unit row per group of filters), ``"oblique:groups=1"``
        (the whole weight one unit row: the sphere) or ``"euclidean"``. Filters along dim 1
        (``ConvTranspose``) are no rows of a view: such weights take the whole-tensor
        sphere, which their per-filter symmetry contains."""
        if self.kind == "none":
            return "euclidean"
        rows = self.groups if self.axis == 0 else 1
        if self.kind == "filter" and self.axis == 0:
            return "oblique"
        return f"oblique:groups={rows}"


# -- states --------------------------------------------------------------------------------
class _Scaled(NamedTuple):
    ids: torch.Tensor  # float64, broadcastable to the value: filter per element, -1 none
    key: torch.Tensor | None  # float64 classes of the offset (None: no offset)
    power: Fraction
    trail: tuple[str, ...]


class _Taint(NamedTuple):
    reason: str


class _Unsupported(Exception):
    """This rule cannot keep the tensor scaled: taint, with the message as the reason."""


@dataclass
class _Source:
    name: str
    param: torch.Tensor
    axis: int
    parent: list[int] = field(default_factory=list)
    seen: bool = False
    leak: str = ""
    pinned: str = ""
    norms: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.parent = list(range(self.n + 1))  # the last node: "must keep scale 1"

    @property
    def n(self) -> int:
        return self.param.shape[self.axis]

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: torch.Tensor, b: torch.Tensor, where: str) -> None:
        """Filters ``a[k]`` and ``b[k]`` must share a factor (``-1``: factor 1)."""
        a, b = torch.broadcast_tensors(a, b)
        differ = a != b
        if not bool(differ.any()):
            return
        base = self.n + 2  # pairs coded as one number: unique() in 1-d is fast
        codes = ((a[differ] + 1) * base + (b[differ] + 1)).unique().long().tolist()
        pin = self.n
        for code in codes:
            x, y = code // base - 1, code % base - 1
            x, y = (pin if x < 0 else x), (pin if y < 0 else y)
            if pin in (x, y) and not self.pinned:
                self.pinned = f"{where} mixes its scale with unscaled values"
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[rx] = ry


def _initial(source: _Source) -> _Scaled:
    shape = [1] * source.param.ndim
    shape[source.axis] = source.n
    ids = torch.arange(source.n, dtype=torch.float64).view(shape)
    return _Scaled(ids, None, Fraction(1), ())


# -- small tensor helpers ------------------------------------------------------------------
def _compress(t: torch.Tensor) -> torch.Tensor:
    """``t`` with every axis along which it is constant narrowed to size 1."""
    for d in range(t.ndim):
        if t.shape[d] > 1 and bool((t == t.narrow(d, 0, 1)).all()):
            t = t.narrow(d, 0, 1)
    return t


def _full(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``t`` broadcast to ``shape`` as a contiguous tensor."""
    shape = tuple(shape)
    if t.ndim < len(shape):
        t = t.view((1,) * (len(shape) - t.ndim) + tuple(t.shape))
    return t.expand(shape).contiguous()


def _pattern(value: Any) -> torch.Tensor:
    """Offset classes of a clean addend: a class per element where it may vary."""
    if isinstance(value, torch.Tensor):
        shape = _compress_shape(value)
        return torch.arange(math.prod(shape), dtype=torch.float64).view(shape)
    return torch.zeros(())


def _compress_shape(t: torch.Tensor) -> tuple[int, ...]:
    """The shape of ``t`` with its broadcast (stride-0) axes as 1."""
    return tuple(1 if st == 0 else s for s, st in zip(t.shape, t.stride()))


def _combine(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """Offset classes of a sum: equal only where both classes are equal."""
    if a is None:
        return b
    if b is None:
        return a
    shape = torch.broadcast_tensors(a, b)[0].shape  # (broadcast_shapes imports torch._refs)
    for t in (a, b):  # a class per element already: the sum's classes are the same
        if tuple(t.shape) == tuple(shape) and t.numel() > 1:
            if t.reshape(-1).unique().numel() == t.numel():
                return t
    a, b = torch.broadcast_tensors(a, b)
    _, inverse = (a.reshape(-1) * (b.max() + 1) + b.reshape(-1)).unique(return_inverse=True)
    return _compress(inverse.to(torch.float64).view(a.shape))


def _constant_rows(t: torch.Tensor) -> bool:
    return bool((t == t[:, :1]).all())


def _reduced(t: torch.Tensor, dims: Sequence[int], keepdim: bool) -> torch.Tensor:
    """``t`` (constant along ``dims`` after the unions) with ``dims`` reduced."""
    for d in sorted(dims, reverse=True):
        t = t.narrow(d, 0, 1)
        if not keepdim:
            t = t.squeeze(d)
    return t


def _dims(value: Any, ndim: int) -> list[int]:
    if value is None:
        return list(range(ndim))
    if isinstance(value, int):
        value = [value]
    return sorted({d % ndim for d in value}) if ndim else []


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


# -- the ops -------------------------------------------------------------------------------
class _Op:
    """One call: the function's name, its arguments, its outputs, where it ran."""

    def __init__(self, tracker, name, args, kwargs, out, where):
        self.tracker, self.name, self.args, self.kwargs = tracker, name, args, kwargs
        self.out, self.where = out, where
        self.outputs = [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]
        if name == "__setitem__":
            self.outputs = [args[0]]

    def state(self, value: Any, s: int):
        return self.tracker.state_of(value, s) if isinstance(value, torch.Tensor) else None

    @property
    def label(self) -> str:
        return f"{self.where} ({self.name})" if self.where else self.name

    def source(self, s: int) -> _Source:
        return self.tracker.sources[s]


def _pure(st: _Scaled, op: _Op) -> None:
    if st.key is not None:
        raise _Unsupported(f"{op.label} on a scaled tensor with an offset (a bias)")


def _trail(st: _Scaled, step: str) -> tuple[str, ...]:
    if st.trail and st.trail[-1] == step:
        return st.trail
    return (st.trail + (step,))[-_MAX_TRAIL:]


def _same(op: _Op, s: int, st: _Scaled, *, offset_ok: bool = True, step: str | None = None):
    if not offset_ok:
        _pure(st, op)
    trail = _trail(st, step) if step else st.trail
    return [_Scaled(st.ids, st.key, st.power, trail) for _ in op.outputs]


# structural ops: the same op applied to the filter ids and the offset classes
_CASTS = set(
    "to float double half bfloat16 type_as contiguous clone detach detach_ get:data "
    "cpu cuda requires_grad_ identity ".split()
)
_STRUCTURAL = set(
    "view reshape flatten unflatten permute transpose swapaxes swapdims t movedim "
    "moveaxis squeeze unsqueeze expand expand_as broadcast_to repeat tile flip roll "
    "narrow select __getitem__ chunk split tensor_split unbind view_as reshape_as "
    "pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle get:T "
    "get:mT index_select unfold repeat_interleave ".split()
)
_SHAPED_LIKE = {"expand_as", "view_as", "reshape_as", "type_as"}
_JOIN = {"cat", "concat", "concatenate", "stack", "hstack", "vstack"}


def _structural(op: _Op, s: int):
    x = op.args[0]
    st = op.state(x, s)
    if op.name in _SHAPED_LIKE:  # the other tensor gives only its shape or dtype
        if st is None:
            return [None for _ in op.outputs]
    elif st is not None:
        for value in pytree.tree_leaves((op.args[1:], op.kwargs)):
            if isinstance(value, torch.Tensor) and op.state(value, s) is not None:
                raise _Unsupported(f"{op.label} indexed by a scaled tensor")
    if st is None or isinstance(st, _Taint):
        return None
    if any(not t.is_floating_point() for t in op.outputs):
        raise _Unsupported(f"{op.label}: a non-floating dtype rounds the scale away")
    if op.name in _CASTS:
        return _same(op, s, st)
    ids = _apply(op, _full(st.ids, x.shape), x)
    key = None if st.key is None else _apply(op, _full(st.key, x.shape), x)
    trail = st.trail
    if len(ids) != len(op.outputs):
        raise _Unsupported(f"{op.label}: unexpected outputs")
    return [
        _Scaled(_compress(i), None if key is None else _compress(k), st.power, trail)
        for i, k in zip(ids, key if key is not None else ids)
    ]


def _apply(op: _Op, stand_in: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    """The op's function on ``stand_in`` in place of ``x`` (same other arguments)."""
    func = op.tracker.func
    args = (stand_in,) + tuple(op.args[1:])
    if op.name in ("expand_as", "view_as", "reshape_as"):
        args = (stand_in, op.args[1])
    result = func(*args, **op.kwargs)
    return [t for t in pytree.tree_leaves(result) if isinstance(t, torch.Tensor)]


def _join(op: _Op, s: int):
    tensors = _arg(op.args, op.kwargs, 0, "tensors")
    dim = _arg(op.args, op.kwargs, 1, "dim", 0)
    states = [op.state(t, s) for t in tensors]
    scaled = [st for st in states if st is not None]
    if any(isinstance(st, _Taint) for st in scaled):
        return None
    powers = {st.power for st in scaled}
    if len(powers) > 1:
        raise _Unsupported(f"{op.label} joins different powers of one scale")
    ids, keys = [], []
    has_key = any(st.key is not None for st in scaled)
    for t, st in zip(tensors, states):
        if st is None:
            ids.append(torch.full(t.shape, -1.0, dtype=torch.float64))
            keys.append(torch.zeros(t.shape, dtype=torch.float64))
        else:
            ids.append(_full(st.ids, t.shape))
            key = torch.zeros(()) if st.key is None else st.key + 1
            keys.append(_full(key.to(torch.float64), t.shape))
    func = op.tracker.func
    ids_out = func(ids, dim) if op.name not in ("hstack", "vstack") else func(ids)
    key_out = None
    if has_key:
        key_out = _compress(func(keys, dim) if op.name not in ("hstack", "vstack") else func(keys))
    first = scaled[0]
    return [_Scaled(_compress(ids_out), key_out, first.power, _trail(first, op.label))]


def _setitem(op: _Op, s: int):
    target, index, value = op.args[0], op.args[1], op.args[2]
    st_t, st_v = op.state(target, s), op.state(value, s)
    if isinstance(st_t, _Taint) or isinstance(st_v, _Taint):
        return None
    for leaf in pytree.tree_leaves(index):
        if isinstance(leaf, torch.Tensor) and op.state(leaf, s) is not None:
            raise _Unsupported(f"{op.label} indexed by a scaled tensor")
    if st_t is not None and st_v is not None and st_t.power != st_v.power:
        raise _Unsupported(f"{op.label} mixes powers of one scale")
    ids = torch.full(target.shape, -1.0, dtype=torch.float64)
    keys = torch.zeros(target.shape, dtype=torch.float64)
    if st_t is not None:
        ids = _full(st_t.ids, target.shape)
        if st_t.key is not None:
            keys = _full(st_t.key + 1, target.shape)
    value_shape = ids[index].shape
    if st_v is not None:
        ids[index] = (
            _full(st_v.ids, value_shape) if st_v.ids.ndim <= len(value_shape) else st_v.ids
        )
        vkey = torch.zeros(()) if st_v.key is None else st_v.key + 1 + keys.max() + 1
        keys[index] = _full(vkey.to(torch.float64), value_shape)
    else:
        ids[index] = -1.0
        keys[index] = 0.0
    ref = st_t if st_t is not None else st_v
    has_key = (st_t is not None and st_t.key is not None) or (
        st_v is not None and st_v.key is not None
    )
    key = _compress(keys) if has_key else None
    return [_Scaled(_compress(ids), key, ref.power, ref.trail)]


def _pad(op: _Op, s: int):
    x = op.args[0]
    st = op.state(x, s)
    if st is None or isinstance(st, _Taint):
        return None
    mode = _arg(op.args, op.kwargs, 2, "mode", "constant")
    value = _arg(op.args, op.kwargs, 3, "value", None)
    if mode == "constant":
        _pure(st, op)
        if value not in (None, 0, 0.0):
            raise _Unsupported(f"{op.label} pads with {value}, not 0")
        pad = _arg(op.args, op.kwargs, 1, "pad")
        ids = F.pad(_full(st.ids, x.shape), pad, mode="replicate") if x.ndim >= 2 else None
        if ids is None:
            raise _Unsupported(f"{op.label} on a 1-d tensor")
        return [_Scaled(_compress(ids), None, st.power, st.trail)]
    return _structural(op, s)


# elementwise arithmetic
_ADD = {"add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__isub__", "sub_"}
_RSUB = {"__rsub__", "rsub"}
_MUL = {"mul", "__mul__", "__rmul__", "__imul__", "mul_", "multiply"}
_DIV = {"div", "__truediv__", "__itruediv__", "div_", "true_divide", "divide"}
_RDIV = {"__rtruediv__"}
_NEG = {"neg", "__neg__", "negative", "positive", "__pos__"}


def _arith(op: _Op, s: int):
    name = op.name
    if name in _NEG:
        st = op.state(op.args[0], s)
        return None if isinstance(st, _Taint) else _same(op, s, st)
    a = op.args[0]
    b = _arg(op.args, op.kwargs, 1, "other")
    if name in _RSUB | _RDIV:
        a, b = b, a
    sa, sb = op.state(a, s), op.state(b, s)
    if isinstance(sa, _Taint) or isinstance(sb, _Taint):
        return None
    if name in _ADD | _RSUB:
        alpha = op.kwargs.get("alpha", 1)
        if isinstance(alpha, torch.Tensor):
            raise _Unsupported(f"{op.label} with a tensor alpha")
        if sa is not None and sb is not None:
            if sa.power != sb.power:
                raise _Unsupported(f"{op.label} adds different powers of one scale")
            op.source(s).union(sa.ids, sb.ids, op.label)
            return [_Scaled(sa.ids, _combine(sa.key, sb.key), sa.power, _trail(sa, op.label))]
        st, other = (sa, b) if sa is not None else (sb, a)
        key = _combine(st.key if st.key is not None else torch.zeros(()), _pattern(other))
        return [_Scaled(st.ids, key, st.power, _trail(st, op.label))]
    if name in _MUL:
        if sa is not None and sb is not None:
            if sa.key is not None or sb.key is not None:
                raise _Unsupported(f"{op.label}: product of scaled tensors with offsets")
            op.source(s).union(sa.ids, sb.ids, op.label)
            return [_Scaled(sa.ids, None, sa.power + sb.power, sa.trail)]
        st, other = (sa, b) if sa is not None else (sb, a)
        key = None if st.key is None else _combine(st.key, _pattern(other))
        return [_Scaled(st.ids, key, st.power, st.trail)]
    if name in _DIV | _RDIV:
        if sa is not None and sb is not None:
            if sa.key is not None or sb.key is not None:
                raise _Unsupported(f"{op.label}: quotient of scaled tensors with offsets")
            op.source(s).union(sa.ids, sb.ids, op.label)
            power = sa.power - sb.power
            if power == 0:  # the scale cancels: weight standardization written by hand
                op.source(s).norms.setdefault(op.label, " -> ".join(_trail(sa, op.label)))
                return [None for _ in op.outputs]
            return [_Scaled(sa.ids, None, power, sa.trail)]
        if sa is not None:
            key = None if sa.key is None else _combine(sa.key, _pattern(b))
            return [_Scaled(sa.ids, key, sa.power, sa.trail)]
        _pure(sb, op)
        return [_Scaled(sb.ids, None, -sb.power, sb.trail)]
    return None


_HOMOGENEOUS = set(
    "relu relu_ leaky_relu leaky_relu_ prelu abs dropout dropout_ dropout1d dropout2d "
    "dropout3d feature_dropout feature_dropout_ threshold ".split()
)


def _homogeneous(op: _Op, s: int):
    """``f(s x) = s f(x)`` for ``s > 0`` (ReLU, leaky ReLU, PReLU, dropout): no offset."""
    st = op.state(op.args[0], s)
    if isinstance(st, _Taint):
        return None
    for value in pytree.tree_leaves((op.args[1:], op.kwargs)):
        if isinstance(value, torch.Tensor) and op.state(value, s) is not None:
            raise _Unsupported(f"{op.label} with a scaled parameter")
    if op.name == "threshold" and (
        _arg(op.args, op.kwargs, 1, "threshold") != 0 or _arg(op.args, op.kwargs, 2, "value") != 0
    ):
        raise _Unsupported(f"{op.label} with a nonzero threshold or value")
    step = op.label if op.name.startswith(("dropout", "feature")) else None
    return _same(op, s, st, offset_ok=False, step=step)


def _pool(op: _Op, s: int):
    """Pooling and interpolation over the trailing spatial axes: the scale and offset must
    be constant there (per channel)."""
    x = op.args[0]
    st = op.state(x, s)
    if isinstance(st, _Taint):
        return None
    found = re.search(r"(\d)d", op.name)
    spatial = int(found.group(1)) if found else x.ndim - 2
    spatial = max(0, min(spatial, x.ndim))
    axes = list(range(x.ndim - spatial, x.ndim))
    ids = _full(st.ids, x.shape)
    flat = ids.movedim(axes, list(range(-spatial, 0))).reshape(
        -1, math.prod(x.shape[a] for a in axes)
    )
    op.source(s).union(flat[:, :1], flat, op.label)
    key = st.key
    if key is not None and ("unpool" in op.name or op.name.startswith("lp_pool")):
        raise _Unsupported(f"{op.label} on a scaled tensor with an offset")
    if key is not None:
        padded = op.name.startswith("avg_pool") and _arg(
            op.args, op.kwargs, 3, "padding", 0
        ) not in (0, (0, 0), (0, 0, 0), [0])
        keys = _full(key, x.shape).movedim(axes, list(range(-spatial, 0)))
        if padded or not _constant_rows(keys.reshape(-1, keys.shape[-spatial:].numel())):
            raise _Unsupported(f"{op.label} on an offset that varies over its window")
    ids = _reduced(ids, axes, keepdim=True)
    key = None if key is None else _reduced(_full(key, x.shape), axes, keepdim=True)
    out = []
    for t in op.outputs:
        if t.dtype in (torch.int64, torch.int32):  # max-pool indices: positions, clean
            out.append(None)
        else:
            out.append(
                _Scaled(
                    _compress(ids),
                    None if key is None else _compress(key),
                    st.power,
                    _trail(st, op.label),
                )
            )
    return out


_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "nansum", "nanmean"}
_REDUCE2 = {"std_mean", "var_mean"}


def _reduce(op: _Op, s: int):
    x = op.args[0]
    st = op.state(x, s)
    if isinstance(st, _Taint):
        return None
    name = op.name
    if name in ("max", "min"):
        other = _arg(op.args, op.kwargs, 1, "dim")
        if isinstance(other, torch.Tensor):  # elementwise maximum of two tensors
            so = op.state(other, s)
            if st is None or so is None or isinstance(so, _Taint) or st.power != so.power:
                raise _Unsupported(f"{op.label} of a scaled and another tensor")
            _pure(st, op)
            _pure(so, op)
            op.source(s).union(st.ids, so.ids, op.label)
            return [_Scaled(st.ids, None, st.power, st.trail)]
    dim = _arg(op.args, op.kwargs, 2 if name == "norm" else 1, "dim")
    if isinstance(dim, bool) or not isinstance(dim, (int, list, tuple, type(None))):
        dim = op.kwargs.get("dim")  # std(x, unbiased), norm(x, p)
    keepdim = op.outputs[0].ndim == x.ndim and x.ndim > 0
    dims = _dims(dim, x.ndim)
    ids = _full(st.ids, x.shape)
    moved = ids.movedim(dims, list(range(x.ndim - len(dims), x.ndim))) if dims else ids
    flat = moved.reshape(-1, math.prod(x.shape[d] for d in dims) if dims else 1)
    op.source(s).union(flat[:, :1], flat, op.label)
    ids = _compress(_reduced(ids, dims, keepdim))
    key, power = st.key, st.power
    if key is not None:
        keys = _full(key, x.shape)
        movedk = keys.movedim(dims, list(range(x.ndim - len(dims), x.ndim))) if dims else keys
        constant = _constant_rows(movedk.reshape(flat.shape))
        if name in ("std", "var", "std_mean", "var_mean"):
            if not constant:
                raise _Unsupported(f"{op.label} over an offset that varies")
            key = None
        elif name == "norm" or not constant:
            raise _Unsupported(f"{op.label} of a scaled tensor with a varying offset")
        else:
            key = _compress(_reduced(keys, dims, keepdim))
    if name == "var":
        power = power * 2
    result = []
    for i, t in enumerate(op.outputs):
        if t.dtype in (torch.int64, torch.int32):
            result.append(None)  # argmax/argmin: positions, unchanged by a positive scale
        elif name in _REDUCE2:
            p = power * 2 if (name == "var_mean" and i == 0) else power
            k = st.key if i == 1 and st.key is not None else None
            if i == 1 and st.key is not None:
                k = _compress(_reduced(_full(st.key, x.shape), dims, keepdim))
            result.append(_Scaled(ids, k, p, st.trail))
        else:
            result.append(_Scaled(ids, key, power, st.trail))
    return result


_POWERS = {
    "sqrt": Fraction(1, 2),
    "rsqrt": Fraction(-1, 2),
    "reciprocal": Fraction(-1),
    "square": Fraction(2),
}


def _power(op: _Op, s: int):
    st = op.state(op.args[0], s)
    if isinstance(st, _Taint):
        return None
    _pure(st, op)
    if op.name in ("pow", "__pow__"):
        exponent = _arg(op.args, op.kwargs, 1, "exponent")
        if not isinstance(exponent, (int, float)) or isinstance(exponent, bool):
            raise _Unsupported(f"{op.label} with exponent {exponent!r}")
        factor = Fraction(exponent).limit_denominator(64)
    else:
        factor = _POWERS[op.name]
    return [_Scaled(st.ids, None, st.power * factor, st.trail)]


# layers: a scaled weight becomes a scaled output; a scaled input passes per group
def _layer(op: _Op, s: int):
    name = op.name
    if name == "linear":
        x, w, b = (
            op.args[0],
            _arg(op.args, op.kwargs, 1, "weight"),
            _arg(op.args, op.kwargs, 2, "bias"),
        )
    elif name == "embedding":
        if op.tracker.func is F.embedding:
            x, w = op.args[0], _arg(op.args, op.kwargs, 1, "weight")
        else:
            w, x = op.args[0], op.args[1]
        b = None
    else:
        x, w, b = (
            op.args[0],
            _arg(op.args, op.kwargs, 1, "weight"),
            _arg(op.args, op.kwargs, 2, "bias"),
        )
    sx, sw, sb = op.state(x, s), op.state(w, s), op.state(b, s)
    if isinstance(sx, _Taint) or isinstance(sw, _Taint) or sb is not None:
        return None
    if sx is not None and sw is not None:
        raise _Unsupported(f"{op.label} of a scaled input with a scaled weight")
    out = op.outputs[0]
    source = op.source(s)
    if name == "embedding":
        if sw is None:
            raise _Unsupported(f"{op.label} indexed by a scaled tensor")
        _pure(sw, op)
        rows = _full(sw.ids, w.shape)
        source.union(rows[:, :1], rows, op.label)
        ids = rows[:, 0][x].unsqueeze(-1)
        return [_Scaled(_compress(ids), None, sw.power, (op.where or name,))]
    transposed = name.startswith("conv_transpose")
    groups = 1
    if name.startswith("conv"):
        groups = _arg(op.args, op.kwargs, 6, "groups", 1)
    channel = out.ndim - 1 if name == "linear" else (1 if out.ndim == w.ndim else 0)
    oshape = [1] * out.ndim
    oshape[channel] = out.shape[channel]
    if sw is not None:
        _pure(sw, op)
        ids = _full(sw.ids, w.shape)
        axis = 1 if transposed else 0
        rows = ids.movedim(axis, 0).reshape(w.shape[axis], -1)
        source.union(rows[:, :1], rows, op.label)
        per = rows[:, 0]
        if transposed:
            per = per.repeat(groups)
        ids = per.view(oshape)
        key = (
            None
            if b is None
            else torch.arange(out.shape[channel], dtype=torch.float64).view(oshape)
        )
        return [_Scaled(ids, key, sw.power, (op.where or name,))]
    # the input is scaled, the weight clean
    if name == "linear":
        ids = _full(sx.ids, x.shape)
        flat = ids.reshape(-1, x.shape[-1])
        source.union(flat[:, :1], flat, op.label)
        ids = _compress(ids.narrow(-1, 0, 1))
        key = None
        if sx.key is not None:
            keys = _full(sx.key, x.shape)
            if not _constant_rows(keys.reshape(-1, x.shape[-1])):
                raise _Unsupported(f"{op.label} mixes an offset that varies over its features")
            key = _compress(keys.narrow(-1, 0, 1))
        if b is not None:
            key = _combine(
                key if key is not None else torch.zeros(()),
                torch.arange(out.shape[-1], dtype=torch.float64),
            )
        return [_Scaled(ids, key, sx.power, _trail(sx, op.where or name))]
    _pure(sx, op)
    xc = 1 if x.ndim == w.ndim else 0
    ids = _full(sx.ids, x.shape).movedim(xc, 0).reshape(groups, -1)
    source.union(ids[:, :1], ids, op.label)
    per_group = ids[:, 0]
    per = per_group.repeat_interleave(out.shape[channel] // groups)
    key = None if b is None else torch.arange(out.shape[channel], dtype=torch.float64).view(oshape)
    return [_Scaled(per.view(oshape), key, sx.power, _trail(sx, op.where or name))]


def _matmul(op: _Op, s: int):
    a, b = op.args[0], op.args[1]
    if op.name == "__rmatmul__":
        a, b = b, a
    sa, sb = op.state(a, s), op.state(b, s)
    if isinstance(sa, _Taint) or isinstance(sb, _Taint) or (sa is not None and sb is not None):
        return None
    if a.ndim < 2 or b.ndim < 2:
        raise _Unsupported(f"{op.label} with a vector")
    st, t, axis = (sa, a, -1) if sa is not None else (sb, b, -2)
    _pure(st, op)
    ids = _full(st.ids, t.shape)
    moved = ids.movedim(axis, -1)
    flat = moved.reshape(-1, t.shape[axis])
    op.source(s).union(flat[:, :1], flat, op.label)
    ids = ids.narrow(axis, 0, 1)
    return [_Scaled(_compress(ids), None, st.power, _trail(st, op.label))]


# normalizations: remove the scale when it is one per normalized slice
def _bn_layout(x, _):
    return x.movedim(1, 0).reshape(x.shape[1], -1) if x.ndim > 1 else x.reshape(1, -1)


def _in_layout(x, _):
    return x.reshape(x.shape[0] * x.shape[1], -1)


def _gn_layout(x, groups):
    return x.reshape(x.shape[0] * groups, -1)


def _ln_layout(x, dims):
    return x.reshape(-1, math.prod(x.shape[x.ndim - dims :]) if dims else 1)


def _dim_layout(x, dim):
    return x.movedim(dim, -1).reshape(-1, x.shape[dim])


def _wn_layout(x, dim):
    if dim == -1 or dim is None:
        return x.reshape(1, -1)
    return x.movedim(dim, 0).reshape(x.shape[dim], -1)


def _norm_spec(op: _Op):
    """``(input, layout, layout argument, mean-subtracting, affine params)`` or None when
    the call does not normalize with the batch's own statistics."""
    name, args, kwargs, func = op.name, op.args, op.kwargs, op.tracker.func
    if name == "batch_norm":
        if func is F.batch_norm:
            rm, w, b = (
                _arg(args, kwargs, 1, "running_mean"),
                _arg(args, kwargs, 3, "weight"),
                _arg(args, kwargs, 4, "bias"),
            )
            training = _arg(args, kwargs, 5, "training", False)
        else:
            w, b, rm = (
                _arg(args, kwargs, 1, "weight"),
                _arg(args, kwargs, 2, "bias"),
                _arg(args, kwargs, 3, "running_mean"),
            )
            training = _arg(args, kwargs, 5, "training", False)
        if not (training or rm is None):
            return None
        return args[0], _bn_layout, None, True, (w, b)
    if name == "instance_norm":
        if func is F.instance_norm:
            w, b = _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
        else:
            w, b = _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        if not _arg(args, kwargs, 5, "use_input_stats", True):
            return None
        return args[0], _in_layout, None, True, (w, b)
    if name == "group_norm":
        groups = _arg(args, kwargs, 1, "num_groups")
        return (
            args[0],
            _gn_layout,
            groups,
            True,
            (_arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")),
        )
    if name in ("layer_norm", "rms_norm"):
        shape = _arg(args, kwargs, 1, "normalized_shape")
        dims = 1 if isinstance(shape, int) else len(shape)
        affine = (_arg(args, kwargs, 2, "weight"),) + (
            (_arg(args, kwargs, 3, "bias"),) if name == "layer_norm" else ()
        )
        return args[0], _ln_layout, dims, name == "layer_norm", affine
    if name == "normalize":
        dim = _arg(args, kwargs, 2, "dim", 1)
        return args[0], _dim_layout, dim % args[0].ndim, False, ()
    if name == "_weight_norm":
        dim = _arg(args, kwargs, 2, "dim", 0)
        return args[0], _wn_layout, dim, False, ()
    return None


def _normalize(op: _Op, s: int):
    spec = _norm_spec(op)
    if spec is None:
        raise _Unsupported(f"{op.label} with running statistics (eval mode)")
    x, layout, arg, centers, affine = spec
    for p in affine:
        if op.state(p, s) is not None:
            raise _Unsupported(f"{op.label} with a scaled affine parameter")
    if op.name == "_weight_norm":
        g = op.args[1]
        sg = op.state(g, s)
        if sg is not None:
            if isinstance(sg, _Taint) or op.state(x, s) is not None:
                return None
            return [_Scaled(sg.ids, None, sg.power, _trail(sg, op.label))]
    st = op.state(x, s)
    if isinstance(st, _Taint) or st is None:
        return None
    source = op.source(s)
    rows = layout(_full(st.ids, x.shape), arg)
    if st.key is not None:
        keys = layout(_full(st.key, x.shape), arg)
        if not centers or not _constant_rows(keys):
            raise _Unsupported(f"{op.label}: an offset that it does not subtract")
    source.union(rows[:, :1], rows, op.label)
    source.norms.setdefault(op.label, " -> ".join(_trail(st, op.label)))
    return [None for _ in op.outputs]


_NORMS = set(
    "batch_norm instance_norm group_norm layer_norm rms_norm normalize _weight_norm ".split()
)
_LAYERS = set(
    "conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d linear "
    "embedding ".split()
)
_POOLS = {
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
    "adaptive_max_pool3d_with_indices", "lp_pool1d", "lp_pool2d", "lp_pool3d", "interpolate",
    "upsample", "upsample_nearest", "upsample_bilinear", "max_unpool1d", "max_unpool2d",
    "max_unpool3d",
}  # fmt: skip

_RULES: dict[str, Callable] = {}
for _names, _rule in (
    (_STRUCTURAL | _CASTS, _structural),
    (_JOIN, _join),
    ({"__setitem__"}, _setitem),
    ({"pad"}, _pad),
    (_ADD | _RSUB | _MUL | _DIV | _RDIV | _NEG, _arith),
    (_HOMOGENEOUS, _homogeneous),
    (_POOLS, _pool),
    (_REDUCE | _REDUCE2, _reduce),
    (set(_POWERS) | {"pow", "__pow__"}, _power),
    (_LAYERS, _layer),
    ({"matmul", "__matmul__", "__rmatmul__", "mm", "bmm"}, _matmul),
    (_NORMS, _normalize),
):
    for _name in _names:
        _RULES[_name] = _rule

# calls whose results do not depend on the values of their tensor arguments
_METADATA = {
    "size", "dim", "ndimension", "numel", "nelement", "stride", "storage_offset",
    "is_contiguous", "is_floating_point", "is_complex", "data_ptr", "element_size",
    "get_device", "__len__", "__repr__", "__format__", "__str__", "__hash__", "has_names",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "randint_like", "new_zeros", "new_ones", "new_empty", "new_full", "retain_grad",
    "register_hook", "untyped_storage", "__reduce_ex__", "__deepcopy__", "is_nonzero_like",
    "get:shape", "get:dtype", "get:device", "get:ndim", "get:is_cuda", "get:requires_grad",
    "get:is_leaf", "get:layout", "get:grad_fn", "get:names", "get:is_sparse",
    "get:is_quantized", "get:is_meta", "get:grad", "get:is_mps", "get:is_nested",
    "get:_base", "get:output_nr", "get:_version", "get:itemsize", "get:nbytes",
}  # fmt: skip


def _op_name(func: Any) -> str:
    if isinstance(func, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return f"aten:{func}"
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        return f"get:{getattr(owner, '__name__', owner)}"
    if name == "__set__":
        return "set:" + str(getattr(getattr(func, "__self__", None), "__name__", ""))
    return name


# -- the tracker ---------------------------------------------------------------------------
class _Tracker(TorchFunctionMode):
    """Follows every source's scale through the ops of one forward pass."""

    def __init__(self, sources: list[_Source]):
        super().__init__()
        self.sources = sources
        self.by_param = {id(src.param): i for i, src in enumerate(sources)}
        self.states: dict[int, tuple[torch.Tensor, dict[int, Any]]] = {}
        self.where: list[str] = []
        self.func = None

    def state_of(self, t: torch.Tensor, s: int):
        entry = self.states.get(id(t))
        if entry is not None and entry[0] is t:
            return entry[1].get(s)
        if self.by_param.get(id(t)) == s and self.sources[s].param is t:
            return _initial(self.sources[s])
        return None

    def _all_states(self, t: torch.Tensor) -> dict[int, Any]:
        entry = self.states.get(id(t))
        states = dict(entry[1]) if entry is not None and entry[0] is t else {}
        s = self.by_param.get(id(t))
        if s is not None and self.sources[s].param is t:
            states.setdefault(s, _initial(self.sources[s]))
            self.sources[s].seen = True
        return states

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.observe(func, args, kwargs, out)
        return out

    def observe(self, func, args, kwargs, out) -> None:
        inputs = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        involved: set[int] = set()
        for x in inputs:
            involved |= set(self._all_states(x))
        if not involved:
            return
        name = _op_name(func)
        op = _Op(self, name, args, kwargs, out, self.where[-1] if self.where else "")
        if name in _METADATA:
            return
        if not op.outputs:
            if out is None or name.startswith("set:"):
                return
            for s in involved:  # a value leaves the tensor world
                src = self.sources[s]
                src.leak = src.leak or f"{op.label} turns it into a Python value"
            return
        rule = _RULES.get(name)
        results: dict[int, list] = {}
        self.func = func
        for s in sorted(involved):
            try:
                states = rule(op, s) if rule is not None else None
            except _Unsupported as err:
                states = [_Taint(str(err))] * len(op.outputs)
            except Exception as err:  # noqa: BLE001 - a call no rule follows: tainted
                states = [_Taint(f"{op.label} (not followed: {type(err).__name__})")] * len(
                    op.outputs
                )
            if states is None:
                states = [self._taint(op, s, inputs)] * len(op.outputs)
            results[s] = states
        inplace = self._inplace_target(name, args, kwargs)
        for i, t in enumerate(op.outputs):
            new = {s: states[i] for s, states in results.items() if states[i] is not None}
            if inplace is not None and t is inplace:
                old = self._all_states(t)
                old = {s: v for s, v in old.items() if s not in results}
                new = {**old, **new}
            if new:
                self.states[id(t)] = (t, new)
            elif id(t) in self.states and self.states[id(t)][0] is t:
                del self.states[id(t)]

    def _taint(self, op: _Op, s: int, inputs) -> _Taint:
        for x in inputs:
            st = self.state_of(x, s)
            if isinstance(st, _Taint):
                return st
        return _Taint(f"{op.label} does not commute with a per-filter scale")

    @staticmethod
    def _inplace_target(name, args, kwargs):
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        if (name.endswith("_") and not name.endswith("__")) or name.startswith("__i"):
            return args[0]
        if kwargs.get("inplace") is True or name == "__setitem__":
            return args[0]
        return None

    def finish(self, output: Any) -> None:
        """The sources whose scale reaches the model's output are not invariant."""
        for t in pytree.tree_leaves(output):
            if not isinstance(t, torch.Tensor):
                continue
            for s, st in self._all_states(t).items():
                src = self.sources[s]
                if not src.leak:
                    src.leak = (
                        st.reason
                        if isinstance(st, _Taint)
                        else "reaches the output scaled, through "
                        + " -> ".join(st.trail or (src.name,))
                    )


# -- driving a forward pass ----------------------------------------------------------------
def unwrap_model(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``) holds, else ``model``."""
    while hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
        model = model._orig_mod
    return model


def filter_axis(model: nn.Module) -> dict[int, int]:
    """``{id(param): 1}`` for the weights whose filters lie along dim 1 (``ConvTranspose``,
    and the direction of a weight_norm parametrization on one); every other weight: 0."""
    axes = {}
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            for name, param in module.named_parameters():
                if name == "weight" or name.endswith("original1"):
                    axes[id(param)] = 1
    return axes


class _ModuleNames:
    """Forward hooks that keep the name of the module being run (the hooked pass)."""

    def __init__(self, model: nn.Module, where: list[str]):
        self.handles = []
        for name, module in model.named_modules():
            if not name:
                continue
            self.handles.append(module.register_forward_pre_hook(self._enter(name, where)))
            self.handles.append(module.register_forward_hook(self._leave(where), always_call=True))

    @staticmethod
    def _enter(name, where):
        def hook(module, args):
            where.append(name)

        return hook

    @staticmethod
    def _leave(where):
        def hook(module, args, output):
            if where:
                where.pop()

        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


class _GraphRun(torch.fx.Interpreter):
    """A torch.fx graph run node by node, each node's ops seen by the tracker."""

    def __init__(self, graph_module, tracker):
        super().__init__(graph_module)
        self.tracker = tracker

    def run_node(self, node):
        self.tracker.where.append(_node_label(node))
        try:
            with self.tracker:
                return super().run_node(node)
        finally:
            self.tracker.where.pop()


def _node_label(node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1]
        path = path[0] if isinstance(path, tuple) else path
        if isinstance(path, str):
            return path
    return ""


class _Preserved:
    """Runs the model in training mode and gives back its state, modes and RNG after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.rng = torch.random.fork_rng(devices=[])
        self.rng.__enter__()
        torch.manual_seed(0)
        self.model.train()
        return self

    def __exit__(self, *exc):
        self.rng.__exit__(*exc)
        for module, mode in self.modes:
            module.training = mode
        with torch.no_grad():
            self.model.load_state_dict(self.state)
        return False


def _run(model: nn.Module, inputs: tuple, tracker: _Tracker, trace: str) -> str:
    """One forward pass under the tracker; returns the path taken ("fx" or "hooks")."""
    graph = None
    if trace in ("auto", "fx"):
        try:
            graph = torch.fx.symbolic_trace(model)
        except Exception as err:  # noqa: BLE001 - any tracing failure: the hooked pass
            if trace == "fx":
                raise ValueError(
                    f"could not trace {type(model).__name__} with torch.fx "
                    f"({type(err).__name__}: {err}); use trace='hooks' (or 'auto')"
                ) from None
            warnings.warn(
                f"torch.fx could not trace {type(model).__name__} ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); its symmetries are found "
                f"by running it once with hooks instead",
                stacklevel=4,
            )
    with torch.no_grad():
        if graph is not None:
            output = _GraphRun(graph, tracker).run(*inputs)
            tracker.finish(output)
            return "fx"
        names = _ModuleNames(model, tracker.where)
        try:
            with tracker:
                output = model(*inputs)
        finally:
            names.remove()
        tracker.finish(output)
        return "hooks"


def _kind(source: _Source) -> tuple[str, int, str]:
    """``(kind, groups, reason)`` from the unions the normalizations required."""
    n = source.n
    if not source.seen:
        return "none", 0, "not used by the forward pass"
    if source.leak:
        return "none", 0, source.leak
    pin = source.find(n)
    roots = [source.find(i) for i in range(n)]
    if any(r == pin for r in roots):
        return "none", 0, source.pinned or "its scale meets unscaled values in a normalization"
    if len(set(roots)) == n:
        return "filter", n, ""
    for groups in sorted((g for g in range(1, n) if n % g == 0), reverse=True):
        size = n // groups
        chunk_of_root: dict[int, int] = {}
        if all(chunk_of_root.setdefault(r, i // size) == i // size for i, r in enumerate(roots)):
            return ("tensor" if groups == 1 else "group"), groups, ""
    return "tensor", 1, ""


def find_symmetries(model: nn.Module, inputs: Any, *, trace: str = "auto") -> dict[str, Symmetry]:
    """The symmetry of every weight (parameter of two or more dimensions) of ``model``,
    found by one forward pass on ``inputs`` (a tensor or a tuple of arguments) in training
    mode; the model's state, modes and the global RNG are given back unchanged.

    Args:
        trace: ``"fx"`` (interpret the torch.fx graph; fails if fx cannot trace),
            ``"hooks"`` (run ``forward`` itself, with hooks naming the modules) or
            ``"auto"`` (fx, else hooks with one warning).

    Returns ``{name: Symmetry}`` in ``named_parameters()`` order (names of ``model``, also
    when it wraps a ``torch.compile``'d module).
    """
    return analyze(model, inputs, trace=trace)[0]


def analyze(
    model: nn.Module, inputs: Any, *, trace: str = "auto"
) -> tuple[dict[str, Symmetry], str]:
    """:func:`~riemann_dnn.params.find_symmetries` and the path taken, ``"fx"`` or ``"hooks"``."""
    if trace not in ("auto", "fx", "hooks"):
        raise ValueError(f"trace must be 'auto', 'fx' or 'hooks', got {trace!r}")
    inner = unwrap_model(model)
    axes = filter_axis(inner)
    names = {id(p): n for n, p in model.named_parameters()}
    sources = [
        _Source(names.get(id(p), n), p, axes.get(id(p), 0))
        for n, p in inner.named_parameters()
        if p.ndim >= 2 and p.is_floating_point()
    ]
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    tracker = _Tracker(sources)
    with _Preserved(inner):
        used = _run(inner, args, tracker, trace)
    result = {}
    for src in sources:
        kind, groups, reason = _kind(src)
        norms = tuple(src.norms) if kind != "none" else ()
        path = next(iter(src.norms.values()), "") if kind != "none" else ""
        result[src.name] = Symmetry(
            src.name, tuple(src.param.shape), kind, groups, src.axis, norms, path, reason
        )
    order = [n for n, _ in model.named_parameters()]
    return {n: result[n] for n in order if n in result}, used
