r"""``riemann_dnn::oblique_sgd_``: the row-oblique SGD step as a torch op, native on CPU.

The op updates lists of weights (unit rows along the last axis) and momentum buffers in
place. Its CPU kernel is the compiled C kernel (``oblique_sgd.c``, see :mod:`.build`) when
it can run, else the eager torch implementation
:func:`riemann_dnn.step.fused.oblique_sgd_eager_`, which is also the kernel on every other
device; a fallback on CPU is announced once per process. Registered with
``torch.library`` (a ``Library`` definition, see below) so that autograd's version counters and ``torch.compile`` see
the mutation; the fake (meta) implementation does nothing.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Sequence

import torch

from ..fused import oblique_sgd_eager_
from .build import load

__all__ = ["oblique_sgd_", "native_available", "native_unavailable_reason"]

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_NOTICE_GIVEN = False


def native_available() -> bool:
    """Whether the compiled CPU kernel can run in this process (compiles it on first call)."""
    return load()[0] is not None


def native_unavailable_reason() -> str:
    """Why the compiled kernel cannot run (``""`` when it can)."""
    return load()[1]


def _notice(reason: str) -> None:
    """Warn, once per process, that the eager path replaces the native kernel."""
    global _NOTICE_GIVEN
    if _NOTICE_GIVEN:
        return
    _NOTICE_GIVEN = True
    warnings.warn(
        f"riemann_dnn: native oblique SGD kernel not used ({reason}); falling back to the "
        f"eager torch step (same numbers, slower). To enable it, install a C compiler (gcc or "
        f"clang, or set CC) and use contiguous CPU tensors; RIEMANN_DNN_NATIVE=0 disables it.",
        RuntimeWarning,
        stacklevel=4,
    )


def _native_blocker(points, grads, bufs, lr) -> str:
    """Why these tensors cannot take the native kernel (``""`` if they can)."""
    for name, tensors in (("points", points), ("grads", grads), ("momentum_buffers", bufs)):
        for i, t in enumerate(tensors):
            if not t.is_contiguous():
                return f"{name}[{i}] is not contiguous"
    if lr.device.type != "cpu":
        return f"lr is on {lr.device}"
    return ""


def _call_native(
    fn,
    points,
    grads,
    bufs,
    lr,
    momentum,
    dampening,
    nesterov,
    weight_decay,
    maximize,
    first_step,
    found,
) -> None:
    k = len(points)
    rates = lr if lr.dtype == torch.float64 and lr.is_contiguous() else lr.to(torch.float64)
    rows = [p.numel() // p.shape[-1] for p in points]
    count = rates.numel()
    per_lr = [r // count if r >= count else 1 for r in rows]
    ptr = i64 = ctypes.c_int64 * k
    if found.dtype == torch.float32 and found.device.type == "cpu" and found.is_contiguous():
        flag, scratch = found, None
    else:
        flag = scratch = torch.zeros(1)
    bad = fn(
        k,
        i64(*rows),
        i64(*[p.shape[-1] for p in points]),
        (ctypes.c_int8 * k)(*([1] * k)),
        ptr(*[p.data_ptr() for p in points]),
        ptr(*[g.data_ptr() for g in grads]),
        ptr(*[b.data_ptr() for b in bufs]) if bufs else None,
        _DTYPE_CODES[points[0].dtype],
        ptr(*([rates.data_ptr()] * k)),
        i64(*per_lr),
        momentum,
        dampening,
        int(nesterov),
        weight_decay,
        int(maximize),
        int(first_step),
        torch.get_num_threads(),
        flag.data_ptr(),
    )
    if bad < 0:
        raise RuntimeError(
            "riemann_dnn::oblique_sgd_: the native kernel rejected its "
            "arguments or ran out of memory"
        )
    if scratch is not None and bad:
        found.fill_(1)


# Defined with ``torch.library.Library`` rather than ``torch.library.custom_op``: the
# latter's Python dispatch layers cost about 20-50 us per call (measured here), half of a
# whole SGD step on ArchBN. The schema's alias annotations let torch.compile functionalize
# the op; the kernels bump the version counters of what they mutate themselves, as
# custom_op's ADInplaceOrView layer would.
_LIBRARY = torch.library.Library("riemann_dnn", "FRAGMENT")
_LIBRARY.define(
    "oblique_sgd_(Tensor(a!)[] points, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
    "Tensor lr, float momentum, float dampening, bool nesterov, float weight_decay, "
    "bool maximize, bool first_step, Tensor(c!) found_nonfinite) -> ()"
)


def _bump_versions(points, momentum_buffers, found_nonfinite) -> None:
    torch.autograd.graph.increment_version([*points, *momentum_buffers, found_nonfinite])


# The op's implementations take its arguments in schema order: points, grads,
# momentum_buffers, lr, momentum, dampening, nesterov, weight_decay, maximize, first_step,
# found_nonfinite.
def _oblique_sgd_any(*args) -> None:
    """Any device: the eager torch implementation."""
    points = args[0]
    if points and points[0].device.type != "cpu":
        _notice(f"tensors on {points[0].device}: the native kernel is CPU-only")
    oblique_sgd_eager_(*args)
    _bump_versions(args[0], args[2], args[10])


def _oblique_sgd_cpu(*args) -> None:
    """CPU: the compiled kernel where it can run, else the eager implementation."""
    library, reason = load()
    if library is not None:
        reason = _native_blocker(args[0], args[1], args[2], args[3])
        if not reason:
            _call_native(library.function, *args)
            _bump_versions(args[0], args[2], args[10])
            return
    _notice(reason)
    oblique_sgd_eager_(*args)
    _bump_versions(args[0], args[2], args[10])


def _oblique_sgd_fake(*args) -> None:
    return None


_LIBRARY.impl("oblique_sgd_", _oblique_sgd_any, "CompositeExplicitAutograd")
_LIBRARY.impl("oblique_sgd_", _oblique_sgd_cpu, "CPU")
torch.library.register_fake("riemann_dnn::oblique_sgd_", _oblique_sgd_fake, lib=_LIBRARY)
_OP = torch.ops.riemann_dnn.oblique_sgd_.default


def _rates(lr: float | torch.Tensor, points: Sequence[torch.Tensor]) -> torch.Tensor:
    """``lr`` as a 1-D float64 tensor whose length divides every point's row count."""
    if isinstance(lr, torch.Tensor):
        if lr.dim() > 1:
            raise ValueError(
                f"oblique_sgd_: lr must be a float, a 0-d tensor or a 1-D tensor "
                f"of one rate per copy, got shape {tuple(lr.shape)}"
            )
        rates = lr.detach().reshape(-1)
        if rates.dtype != torch.float64:
            rates = rates.to(torch.float64)
    else:
        rates = torch.tensor([float(lr)], dtype=torch.float64)
    count = rates.numel()
    for i, p in enumerate(points):
        rows = p.numel() // p.shape[-1]
        if count == 0 or rows % count or (p.dim() == 3 and count not in (1, p.shape[0], rows)):
            raise ValueError(
                f"oblique_sgd_: lr has {count} rates but points[{i}] has shape "
                f"{tuple(p.shape)}; expected one rate, one per copy (leading axis) or one per "
                f"row"
            )
    return rates


def _check(points, grads, momentum_buffers) -> None:
    if not (len(points) == len(grads) == len(momentum_buffers)):
        raise ValueError(
            f"oblique_sgd_: got {len(points)} points, {len(grads)} grads and "
            f"{len(momentum_buffers)} momentum buffers; expected equal lengths"
        )
    for i, (p, g, m) in enumerate(zip(points, grads, momentum_buffers)):
        if p.dim() not in (2, 3) or p.shape[-1] < 1:
            raise ValueError(
                f"oblique_sgd_: points[{i}] must be (rows, n) or (copies, rows, n) "
                f"with n >= 1, got shape {tuple(p.shape)}"
            )
        if p.dtype not in _DTYPE_CODES:
            raise TypeError(
                f"oblique_sgd_: points[{i}] has dtype {p.dtype}; expected one of "
                f"{sorted(str(d) for d in _DTYPE_CODES)}"
            )
        if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
            raise ValueError(
                f"oblique_sgd_: grads[{i}] is {g.dtype} {tuple(g.shape)} on "
                f"{g.device}; expected {p.dtype} {tuple(p.shape)} on {p.device}"
            )
        if m is not None:
            want = torch.float64 if p.dtype == torch.float64 else torch.float32
            if m.shape != p.shape or m.dtype != want or m.device != p.device:
                raise ValueError(
                    f"oblique_sgd_: momentum_buffers[{i}] is {m.dtype} {tuple(m.shape)}; "
                    f"expected {want} {tuple(p.shape)} on {p.device}"
                )


def oblique_sgd_(
    points: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor | None],
    *,
    lr: float | torch.Tensor,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
    found_nonfinite: torch.Tensor | None = None,
) -> list[torch.Tensor | None]:
    r"""The paper's UN step on unit-norm filter rows, in place: the native fast path.

    Each point is a ``(rows, n)`` tensor (the filter-row view of a weight) or a stack
    ``(copies, rows, n)`` of such; every row :math:`w` has unit norm. With gradient
    :math:`g`:

    .. math::

        g \leftarrow \pm g + \omega w,\quad c = \langle w, g\rangle,\quad r = g - c w,\quad
        m \leftarrow \mu m + (1 - \tau) r\ (m_0 = r),\quad
        w \leftarrow \frac{w - \lambda d}{\|w - \lambda d\|},\quad
        m \leftarrow m - \langle w, m\rangle w

    with :math:`d = m` (:math:`r + \mu m` with Nesterov; :math:`d = r` without momentum),
    equal to :func:`riemann_dnn.step.riemannian_sgd_step` on ``Oblique(rows, n,
    unit="rows")`` (``maximize``: the step of :math:`-g`). float16/bfloat16 points are
    stepped in float32 with float32 momentum buffers.

    On CPU the compiled kernel reads each row once (threads: ``torch.get_num_threads()``;
    the numbers do not depend on it); elsewhere, or without a C compiler, the eager torch
    step runs (one notice per process).

    Args:
        points, grads: lists of equal-shaped tensors (grads unchanged).
        momentum_buffers: one per point: ``None`` on the first momentum step (or without
            momentum), else the buffer returned by the previous call (updated in place).
        lr: a float, a 0-d tensor, or a 1-D tensor of one rate per copy (the leading axis
            of a stacked point) -- in general, one rate per block of consecutive rows.
        momentum, dampening, nesterov, weight_decay, maximize: as ``torch.optim.SGD``.
        found_nonfinite: a 1-element tensor set to 1 when some row had a non-finite
            gradient (or update); such rows are left untouched (a fresh buffer row is 0).

    Returns:
        The momentum buffers (new tensors for first steps; ``None`` without momentum).

    Example::

        w = torch.nn.functional.normalize(torch.randn(64, 288), dim=1)
        bufs = oblique_sgd_([w], [torch.randn(64, 288)], [None], lr=0.01, momentum=0.9)
    """
    points, grads = list(points), list(grads)
    momentum_buffers = list(momentum_buffers)
    _check(points, grads, momentum_buffers)
    if not points:
        return []
    rates = _rates(lr, points)
    found = found_nonfinite
    if found is None:
        found = torch.zeros(1, device=points[0].device)
    out = list(momentum_buffers) if momentum != 0 else [None] * len(points)
    groups: dict[tuple, list[int]] = {}
    for i, (p, m) in enumerate(zip(points, out)):
        groups.setdefault((p.device, p.dtype, momentum != 0 and m is None), []).append(i)
    for (device, dtype, first), members in groups.items():
        if first:
            buffer_dtype = torch.float64 if dtype == torch.float64 else torch.float32
            for i in members:
                out[i] = torch.empty_like(points[i], dtype=buffer_dtype)
        _OP(
            [points[i] for i in members],
            [grads[i] for i in members],
            [out[i] for i in members] if momentum != 0 else [],
            rates if device.type == "cpu" else rates.to(device),
            float(momentum),
            float(dampening),
            bool(nesterov),
            float(weight_decay),
            bool(maximize),
            first,
            found,
        )
    return out


def _reset_notice() -> None:
    """Allow the notice again (tests)."""
    global _NOTICE_GIVEN
    _NOTICE_GIVEN = False


class _Args(ctypes.Structure):
    """``rdnn_args`` of ``oblique_sgd.c``: a prepared step's arguments."""

    _fields_ = [
        ("ntensors", ctypes.c_int64),
        ("rows", ctypes.c_void_p),
        ("ncols", ctypes.c_void_p),
        ("numel", ctypes.c_void_p),
        ("rows_per_lr", ctypes.c_void_p),
        ("normalize", ctypes.c_void_p),
        ("w", ctypes.c_void_p),
        ("g", ctypes.c_void_p),
        ("m", ctypes.c_void_p),
        ("lr", ctypes.c_void_p),
        ("found", ctypes.c_void_p),
        ("momentum", ctypes.c_double),
        ("dampening", ctypes.c_double),
        ("weight_decay", ctypes.c_double),
        ("dtype", ctypes.c_int32),
        ("nesterov", ctypes.c_int32),
        ("maximize", ctypes.c_int32),
        ("first", ctypes.c_int32),
        ("nthreads", ctypes.c_int32),
        ("check", ctypes.c_int32),
    ]


#: What :meth:`PreparedStep.run` returns when its check found a non-finite gradient.
NONFINITE = -2


class PreparedStep:
    """One native call, prepared once, over fixed tensors: unit-row points (the UN step)
    and plain ones (``torch.optim.SGD``'s step), all of one dtype on the CPU.

    The shapes, pointers and momentum buffers are laid out at construction, in one argument
    struct; a step writes only the gradients' addresses and the hyper-parameters into it
    and makes one C call -- what a small network (ArchBN: 18 tensors, 57k weights) needs to
    step at ``torch.optim.SGD``'s cost. The kernel reads the rates where they are kept: a
    float64 CPU tensor (one rate, or one per copy) is read in place, so changing its values
    costs nothing; a number or another tensor is written into a float64 slot of this object.
    Rows with a non-finite gradient (or update) are left untouched and flagged, as in
    :func:`oblique_sgd_`.

    Args:
        points: contiguous 2-D ``(rows, n)`` tensors (views of the parameters).
        normalize: per point, ``True`` for unit rows (oblique), ``False`` for plain SGD.
        momentum_buffers: per point, a contiguous tensor of the point's shape (float64 for
            float64 points, else float32), or ``None`` (no momentum).
        params: the tensors the points view, whose ``.grad`` :meth:`gradient_pointers`
            reads (default: the points).
        copies: stacked copies: each point's rows are ``copies`` consecutive blocks, block
            ``k`` stepped with the ``k``-th rate of a rate per copy.
        rate_slots: the number of consecutive points that share each rate (e.g. one slot
            per param group); default: one rate for all.
    """

    def __init__(
        self,
        points: Sequence[torch.Tensor],
        normalize: Sequence[bool],
        momentum_buffers: Sequence[torch.Tensor] | None,
        *,
        params: Sequence[torch.Tensor] | None = None,
        copies: int = 1,
        rate_slots: Sequence[int] | None = None,
    ):
        library, reason = load()
        if library is None:
            raise RuntimeError(f"riemann_dnn: the native kernel is unavailable: {reason}")
        self._fn = library.function
        k = len(points)
        i64, ptr = ctypes.c_int64 * k, ctypes.c_void_p * k
        self.points = list(points)
        self.momentum_buffers = None if momentum_buffers is None else list(momentum_buffers)
        self._bumped = self.points + (self.momentum_buffers or [])
        self._k, self._ptr = k, ptr
        self._dtype = _DTYPE_CODES[points[0].dtype]
        rows = [p.shape[0] for p in points]
        self._rows, self._ncols = i64(*rows), i64(*[p.shape[1] for p in points])
        if any(r % copies for r in rows):
            raise ValueError(
                f"PreparedStep: copies={copies} must divide every point's rows, got rows {rows}"
            )
        self.copies = copies
        self._numel = i64(*[p.numel() for p in points])
        self._normalize = (ctypes.c_int8 * k)(*[int(bool(v)) for v in normalize])
        self._point_ptrs = ptr(*[p.data_ptr() for p in points])
        self._buffer_ptrs = (
            None if momentum_buffers is None else ptr(*[b.data_ptr() for b in momentum_buffers])
        )
        self.params = list(points if params is None else params)
        self._addresses = [p.data_ptr() for p in self.params]
        # the shapes a step depends on: unit rows (a plain point steps elementwise, and a
        # moved storage is caught by its address)
        self._checked = [p.shape if v else None for p, v in zip(self.params, normalize)]
        self._grad_ptrs = ptr()
        self._torch_dtype = points[0].dtype
        self._found = torch.zeros(1)
        # the rates: per slot, the points it covers, a float64 slot of its own and what
        # the kernel reads now (address, count, the object kept alive)
        sizes = [k] if rate_slots is None else list(rate_slots)
        if sum(sizes) != k or any(size < 0 for size in sizes):
            raise ValueError(f"PreparedStep: rate_slots {sizes} must add up to {k} points")
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self._slots = [range(a, a + n) for a, n in zip(starts, sizes)]
        self._own = [(ctypes.c_double * copies)() for _ in sizes]
        self._bound: list[tuple[int, int, object] | None] = [None] * len(sizes)
        self._rate_ptrs = ptr()
        self._per_lr = i64()
        args = self._args = _Args()
        args.ntensors, args.dtype = k, self._dtype
        for name, array in (
            ("rows", self._rows),
            ("ncols", self._ncols),
            ("numel", self._numel),
            ("rows_per_lr", self._per_lr),
            ("normalize", self._normalize),
            ("w", self._point_ptrs),
            ("g", self._grad_ptrs),
            ("m", self._buffer_ptrs),
            ("lr", self._rate_ptrs),
        ):
            setattr(args, name, None if array is None else ctypes.addressof(array))
        args.found = None  # the count of rows left untouched is returned
        self._args_address = ctypes.addressof(args)
        self._hyper: tuple | None = None

    def valid_for(self, params: Sequence[torch.Tensor]) -> bool:
        """Whether ``params`` are the tensors, with the storage, this step was prepared
        for."""
        return len(params) == self._k and all(
            p is q and p.data_ptr() == a for p, q, a in zip(params, self.params, self._addresses)
        )

    def gradient_pointers(self) -> ctypes.Array | None:
        """The addresses of the parameters' ``.grad`` (written into this step's arguments),
        or ``None`` when this step cannot run: a gradient is missing, sparse, of another
        dtype, or not contiguous, a parameter's storage moved, or a unit-row parameter's
        shape changed."""
        ptrs, dtype = self._grad_ptrs, self._torch_dtype
        i = 0
        try:
            for param, address, shape in zip(self.params, self._addresses, self._checked):
                grad = param.grad
                if (
                    grad is None
                    or grad.dtype is not dtype
                    or not grad.is_contiguous()  # raises for sparse gradients
                    or param.data_ptr() != address
                    or (shape is not None and grad.shape != shape)
                ):
                    return None
                ptrs[i] = grad.data_ptr()
                i += 1
        except RuntimeError:
            return None
        return ptrs

    def all_finite(self, grads: ctypes.Array) -> bool:
        """Whether every gradient entry is finite (one read-only pass; ``grads`` from
        :meth:`gradient_pointers`): the check before any weight moves."""
        return bool(self._fn.all_finite(self._k, self._numel, grads, self._dtype))

    def bind_rate(self, slot: int, lr: float | torch.Tensor) -> None:
        """Let the kernel read slot ``slot``'s rate from ``lr``: a float64 contiguous CPU
        tensor of 1 or ``copies`` rates is read in place (its later values are used as
        they are); a number or another tensor is copied into the slot's own float64
        storage (a 0-d or one-element tensor is read with ``float``)."""
        previous = self._bound[slot]
        if previous is not None:  # the common cases, cheaply: nothing to re-point
            if previous[2] is lr and lr.data_ptr() == previous[0]:
                return
            if type(lr) is float and previous[1] == 1 and previous[2] is self._own[slot]:
                self._own[slot][0] = lr
                return
        if isinstance(lr, torch.Tensor):
            count = lr.numel()
            if count not in (1, self.copies):
                raise ValueError(
                    f"PreparedStep: lr has {count} rates; expected 1 or one per copy "
                    f"({self.copies})"
                )
            if lr.dtype is torch.float64 and lr.device.type == "cpu" and lr.is_contiguous():
                bound = (lr.data_ptr(), count, lr)
            else:
                own = self._own[slot]
                values = [float(lr)] if count == 1 else lr.detach().reshape(-1).tolist()
                for i, value in enumerate(values):
                    own[i] = value
                bound = (ctypes.addressof(own), count, own)
        else:
            own = self._own[slot]
            own[0] = lr
            bound = (ctypes.addressof(own), 1, own)
        if previous is None or previous[:2] != bound[:2]:
            for t in self._slots[slot]:
                self._rate_ptrs[t] = bound[0]
                self._per_lr[t] = max(self._rows[t] // bound[1], 1)
        self._bound[slot] = bound

    def run(
        self,
        *,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        maximize: bool = False,
        first_step: bool = False,
        check: bool = False,
    ) -> int:
        """Step in place with the gradients of the last :meth:`gradient_pointers` and the
        bound rates (:meth:`bind_rate`). Returns the number of rows left untouched (a
        non-finite gradient or update), or :data:`NONFINITE` -- nothing written -- when
        ``check`` and a gradient holds inf or NaN."""
        args = self._args
        hyper = (momentum, dampening, weight_decay, nesterov, maximize)
        if hyper != self._hyper:
            args.momentum, args.dampening, args.weight_decay = momentum, dampening, weight_decay
            args.nesterov, args.maximize = nesterov, maximize
            self._hyper = hyper
        args.first, args.check, args.nthreads = first_step, check, torch.get_num_threads()
        bad = self._fn.step(self._args_address)
        if bad == NONFINITE:
            return bad
        if bad < 0:
            raise RuntimeError(
                "riemann_dnn: the native kernel rejected its arguments or ran out of memory"
            )
        torch.autograd.graph.increment_version(self._bumped)
        return bad

    def __call__(
        self,
        grads: Sequence[torch.Tensor] | ctypes.Array,
        *,
        lr: float | torch.Tensor | Sequence[float | torch.Tensor],
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        maximize: bool = False,
        first_step: bool = False,
    ) -> bool:
        """Step in place with ``grads`` (contiguous tensors of the points' shapes and
        dtype, or :meth:`gradient_pointers`) and ``lr`` (one rate for every slot, or a
        sequence of one per slot; see :meth:`bind_rate`); returns whether some row was
        left untouched (a non-finite gradient or update)."""
        if not isinstance(grads, ctypes.Array):
            grads = self._ptr(*[g.data_ptr() for g in grads])
        if grads is not self._grad_ptrs:
            ctypes.memmove(self._grad_ptrs, grads, ctypes.sizeof(grads))
        if isinstance(lr, (list, tuple)):
            if len(lr) != len(self._slots):
                raise ValueError(f"PreparedStep: {len(lr)} rates for {len(self._slots)} slots")
            for slot, rate in enumerate(lr):
                self.bind_rate(slot, rate)
        else:
            for slot in range(len(self._slots)):
                self.bind_rate(slot, lr)
        bad = self.run(
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            maximize=maximize,
            first_step=first_step,
        )
        return bad > 0
