r"""``riemann_dnn::oblique_adam_``: Riemannian Adam on unit-norm rows as a torch op, native
on CPU.

The op updates lists of weights (unit rows along the last axis) and their Adam state in
place. Its CPU kernel is the compiled C kernel (``oblique_adam.c``, built by
:func:`~riemann_dnn.step.native.build.load_kernel`) when it can run, else the eager torch
implementation :func:`riemann_dnn.step.adam.oblique_adam_eager_`, which is also the kernel
on every other device; a fallback on CPU is announced once per process
(``RIEMANN_DNN_NATIVE=0`` disables the compiled kernel). Registered with
``torch.library`` as ``riemann_dnn::oblique_sgd_`` is (see :mod:`.ops`), so that autograd's
version counters and ``torch.compile`` see the mutation.

The rows need not be a layer's filters: a whole-tensor sphere is one row of the tensor's
size, a per-group sphere (GroupNorm) the rows of one group's length.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..adam import oblique_adam_eager_
from .build import load, load_kernel

__all__ = [
    "oblique_adam_",
    "PreparedAdamRows",
    "FiniteCheck",
    "all_finite",
    "adam_native_available",
    "adam_native_unavailable_reason",
]

SOURCE = Path(__file__).with_name("oblique_adam.c")
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_NOTICE_GIVEN = False


def _open(path: Path) -> ctypes._CFuncPtr:
    lib = ctypes.CDLL(str(path))  # CDLL releases the GIL during calls
    fn = lib.rdnn_oblique_adam
    i64, vp, dbl, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_int
    # ntensors, rows, ncols, w, g, m, v, vmax, dtype, lr, rows_per_lr, bias1, bias2s,
    # beta1, beta2, eps, weight_decay, amsgrad, maximize, nthreads, found
    fn.argtypes = [i64, vp, vp, vp, vp, vp, vp, vp, cint, vp, vp, vp, vp]
    fn.argtypes += [dbl, dbl, dbl, dbl, cint, cint, cint, vp]
    fn.restype = i64
    fn.has_openmp = bool(lib.rdnn_adam_has_openmp())
    return fn


def _load():
    return load_kernel(SOURCE, _open)


def adam_native_available() -> bool:
    """Whether the compiled Adam kernel can run in this process (compiles it on first
    call)."""
    return _load()[0] is not None


def adam_native_unavailable_reason() -> str:
    """Why the compiled Adam kernel cannot run (``""`` when it can)."""
    return _load()[1]


def _notice(reason: str) -> None:
    """Warn, once per process, that the eager path replaces the native kernel."""
    global _NOTICE_GIVEN
    if _NOTICE_GIVEN:
        return
    _NOTICE_GIVEN = True
    warnings.warn(
        f"riemann_dnn: native oblique Adam kernel not used ({reason}); falling back to the "
        f"eager torch step (same numbers, slower). To enable it, install a C compiler (gcc or "
        f"clang, or set CC) and use contiguous CPU tensors; RIEMANN_DNN_NATIVE=0 disables it.",
        RuntimeWarning,
        stacklevel=4,
    )


def _reset_notice() -> None:
    """Allow the notice again (tests)."""
    global _NOTICE_GIVEN
    _NOTICE_GIVEN = False


def _native_blocker(args) -> str:
    """Why these tensors cannot take the native kernel (``""`` if they can)."""
    names = ("points", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")
    for name, tensors in zip(names, args[:5]):
        for i, t in enumerate(tensors):
            if not t.is_contiguous():
                return f"{name}[{i}] is not contiguous"
    if args[6].device.type != "cpu":
        return f"lr is on {args[6].device}"
    return ""


def _pointers(tensors) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def _call_native(fn, points, grads, exp_avgs, exp_avg_sqs, maxima, steps, lr, *hyper) -> None:
    beta1, beta2, eps, weight_decay, amsgrad, decoupled, maximize, found = hyper
    k = len(points)
    rates = lr if lr.dtype == torch.float64 and lr.is_contiguous() else lr.to(torch.float64)
    rows = [p.numel() // p.shape[-1] for p in points]
    count = rates.numel()
    i64, f64 = ctypes.c_int64 * k, ctypes.c_double * k
    counts = [float(s) for s in steps]
    if found.dtype == torch.float32 and found.device.type == "cpu" and found.is_contiguous():
        flag, scratch = found, None
    else:
        flag = scratch = torch.zeros(1)
    bad = fn(
        k,
        i64(*rows),
        i64(*[p.shape[-1] for p in points]),
        _pointers(points),
        _pointers(grads),
        _pointers(exp_avgs),
        _pointers(exp_avg_sqs),
        _pointers(maxima) if amsgrad else None,
        _DTYPE_CODES[points[0].dtype],
        rates.data_ptr(),
        i64(*[r // count if r >= count else 1 for r in rows]),
        f64(*[1 - beta1**t for t in counts]),
        f64(*[(1 - beta2**t) ** 0.5 for t in counts]),
        beta1,
        beta2,
        eps,
        0.0 if decoupled else weight_decay,  # decoupled decay: P_x(x) = 0 on unit rows
        int(amsgrad),
        int(maximize),
        torch.get_num_threads(),
        flag.data_ptr(),
    )
    if bad < 0:
        raise RuntimeError(
            "riemann_dnn::oblique_adam_: the native kernel rejected its arguments or ran out "
            "of memory"
        )
    if scratch is not None and bad:
        found.fill_(1)


# As riemann_dnn::oblique_sgd_ (ops.py): a ``Library`` definition, whose kernels bump the
# version counters of what they mutate themselves.
_LIBRARY = torch.library.Library("riemann_dnn", "FRAGMENT")
_LIBRARY.define(
    "oblique_adam_(Tensor(a!)[] points, Tensor[] grads, Tensor(b!)[] exp_avgs, "
    "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] max_exp_avg_sqs, Tensor[] state_steps, "
    "Tensor lr, float beta1, float beta2, float eps, float weight_decay, bool amsgrad, "
    "bool decoupled_weight_decay, bool maximize, Tensor(e!) found_nonfinite) -> ()"
)


def _bump_versions(args) -> None:
    torch.autograd.graph.increment_version([*args[0], *args[2], *args[3], *args[4], args[14]])


def _eager(args) -> None:
    points, grads, exp_avgs, exp_avg_sqs, maxima, steps, lr, *rest = args
    counts = [float(s) for s in steps]
    oblique_adam_eager_(points, grads, exp_avgs, exp_avg_sqs, maxima, counts, lr, *rest)


# The op's implementations take its arguments in schema order.
def _oblique_adam_any(*args) -> None:
    """Any device: the eager torch implementation."""
    if args[0] and args[0][0].device.type != "cpu":
        _notice(f"tensors on {args[0][0].device}: the native kernel is CPU-only")
    _eager(args)
    _bump_versions(args)


def _oblique_adam_cpu(*args) -> None:
    """CPU: the compiled kernel where it can run, else the eager implementation."""
    library, reason = _load()
    if library is not None:
        reason = _native_blocker(args)
        if not reason:
            _call_native(library.function, *args)
            _bump_versions(args)
            return
    _notice(reason)
    _eager(args)
    _bump_versions(args)


def _oblique_adam_fake(*args) -> None:
    return None


_LIBRARY.impl("oblique_adam_", _oblique_adam_any, "CompositeExplicitAutograd")
_LIBRARY.impl("oblique_adam_", _oblique_adam_cpu, "CPU")
torch.library.register_fake("riemann_dnn::oblique_adam_", _oblique_adam_fake, lib=_LIBRARY)
_OP = torch.ops.riemann_dnn.oblique_adam_.default


def _rates(lr: float | torch.Tensor, points: Sequence[torch.Tensor]) -> torch.Tensor:
    """``lr`` as a 1-D float64 tensor whose length divides every point's row count."""
    if isinstance(lr, torch.Tensor):
        if lr.dim() > 1:
            raise ValueError(
                f"oblique_adam_: lr must be a float, a 0-d tensor or a 1-D tensor of one rate "
                f"per copy, got shape {tuple(lr.shape)}"
            )
        rates = lr.detach().reshape(-1).to(torch.float64)
    else:
        rates = torch.tensor([float(lr)], dtype=torch.float64)
    count = rates.numel()
    for i, p in enumerate(points):
        rows = p.numel() // p.shape[-1]
        if count == 0 or rows % count or (p.dim() == 3 and count not in (1, p.shape[0], rows)):
            raise ValueError(
                f"oblique_adam_: lr has {count} rates but points[{i}] has shape "
                f"{tuple(p.shape)}; expected one rate, one per copy (leading axis) or one per "
                f"row"
            )
    return rates


def _check(points, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, amsgrad):
    lists = {
        "grads": grads,
        "exp_avgs": exp_avgs,
        "exp_avg_sqs": exp_avg_sqs,
        "state_steps": state_steps,
    }
    if amsgrad:
        lists["max_exp_avg_sqs"] = max_exp_avg_sqs
    for name, values in lists.items():
        if len(values) != len(points):
            raise ValueError(
                f"oblique_adam_: got {len(points)} points but {len(values)} {name}; expected "
                f"one per point"
            )
    for i, (p, g) in enumerate(zip(points, grads)):
        if p.dim() not in (2, 3) or p.shape[-1] < 1:
            raise ValueError(
                f"oblique_adam_: points[{i}] must be (rows, n) or (copies, rows, n) with "
                f"n >= 1, got shape {tuple(p.shape)}"
            )
        if p.dtype not in _DTYPE_CODES:
            raise TypeError(
                f"oblique_adam_: points[{i}] has dtype {p.dtype}; expected one of "
                f"{sorted(str(d) for d in _DTYPE_CODES)}"
            )
        if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
            raise ValueError(
                f"oblique_adam_: grads[{i}] is {g.dtype} {tuple(g.shape)} on {g.device}; "
                f"expected {p.dtype} {tuple(p.shape)} on {p.device}"
            )
        want = torch.float64 if p.dtype == torch.float64 else torch.float32
        expected = {"exp_avgs": p.shape, "exp_avg_sqs": (*p.shape[:-1], 1)}
        if amsgrad:
            expected["max_exp_avg_sqs"] = expected["exp_avg_sqs"]
        for name, shape in expected.items():
            t = lists[name][i]
            if tuple(t.shape) != tuple(shape) or t.dtype != want or t.device != p.device:
                raise ValueError(
                    f"oblique_adam_: {name}[{i}] is {t.dtype} {tuple(t.shape)} on {t.device}; "
                    f"expected {want} {tuple(shape)} on {p.device}"
                )


def oblique_adam_(
    points: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    max_exp_avg_sqs: list[torch.Tensor],
    state_steps: list[torch.Tensor],
    *,
    lr: float | torch.Tensor,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    found_nonfinite: torch.Tensor | None = None,
) -> None:
    r"""Riemannian Adam on unit-norm rows, in place: the native fast path.

    Each point is a ``(rows, n)`` tensor (e.g. the filter-row view of a weight) or a stack
    ``(copies, rows, n)`` of such; every row :math:`w` has unit norm. With gradient
    :math:`g`, step :math:`t` (``state_steps``, already counting this step):

    .. math::

        r = P_w(\pm g + \omega w),\quad m \leftarrow \beta_1 m + (1-\beta_1) r,\quad
        v \leftarrow \beta_2 v + (1-\beta_2)\|r\|^2,\quad
        w \leftarrow \frac{w - a m}{\|w - a m\|},\quad m \leftarrow m - \langle w, m\rangle w

    with :math:`a = \lambda / ((1-\beta_1^t)(\sqrt{\hat v}/\sqrt{1-\beta_2^t} + \epsilon))`
    per row (:math:`\hat v = v`, or its running maximum with amsgrad): equal to
    :func:`riemann_dnn.step.adam.riemannian_adam_step` on ``Oblique(rows, n,
    unit="rows")`` with the ``"normalize"`` retraction. Decoupled weight decay does nothing
    on unit rows (:math:`P_w(w) = 0`; see :mod:`riemann_dnn.step.adam`). float16/bfloat16
    points are stepped in float32 with float32 state.

    On CPU the compiled kernel reads each row once (threads: ``torch.get_num_threads()``;
    the numbers do not depend on it); elsewhere, or without a C compiler, the eager torch
    step runs (one notice per process).

    Args:
        points, grads: lists of equal-shaped tensors (grads unchanged).
        exp_avgs: per point, its first moment (point-shaped), zero before the first step.
        exp_avg_sqs, max_exp_avg_sqs: per point, the second moment (and with amsgrad its
            running maximum; else ``[]``), one value per row: shape ``(*rows, 1)``.
            State is float64 for float64 points, else float32.
        state_steps: per point, a 0-d tensor counting the steps including this one.
        lr: a float, a 0-d tensor, or a 1-D tensor of one rate per copy (the leading axis
            of a stacked point) -- in general, one rate per block of consecutive rows.
        betas, eps, weight_decay, amsgrad, decoupled_weight_decay, maximize: as
            ``torch.optim.Adam``.
        found_nonfinite: a 1-element tensor set to 1 when some row had a non-finite
            gradient (or update); such rows are left untouched, state included.

    Example::

        w = torch.nn.functional.normalize(torch.randn(64, 288), dim=1)
        m, v, t = torch.zeros(64, 288), torch.zeros(64, 1), torch.tensor(1.0)
        oblique_adam_([w], [torch.randn(64, 288)], [m], [v], [], [t], lr=1e-3)
    """
    points, grads = list(points), list(grads)
    _check(points, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, amsgrad)
    if not points:
        return
    rates = _rates(lr, points)
    found = found_nonfinite if found_nonfinite is not None else torch.zeros(1)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault((p.device, p.dtype), []).append(i)
    beta1, beta2 = (float(b) for b in betas)
    for (device, _), members in groups.items():
        flag = found if found.device == device else torch.zeros(1, device=device)
        _OP(
            [points[i] for i in members],
            [grads[i] for i in members],
            [exp_avgs[i] for i in members],
            [exp_avg_sqs[i] for i in members],
            [max_exp_avg_sqs[i] for i in members] if amsgrad else [],
            [state_steps[i] for i in members],
            rates if device.type == "cpu" else rates.to(device),
            beta1,
            beta2,
            float(eps),
            float(weight_decay),
            bool(amsgrad),
            bool(decoupled_weight_decay),
            bool(maximize),
            flag,
        )
        if flag is not found:
            found.copy_(torch.maximum(found, flag.to(found.device, found.dtype)))


class PreparedAdamRows:
    """:func:`oblique_adam_` laid out once over fixed unit-row tensors of one dtype on the
    CPU and their state, so that a step costs one C call: shapes and the addresses of the
    points and state tensors are kept; a call passes the gradients' addresses, the rates,
    the step counts and the hyper-parameters.

    Args:
        points: contiguous ``(rows, n)`` views of the parameters (unit rows).
        exp_avgs, exp_avg_sqs, max_exp_avg_sqs: contiguous state of each point, shaped
            ``(rows, n)``, ``(rows, 1)`` and ``(rows, 1)`` (``max_exp_avg_sqs`` ``None``
            without amsgrad); float64 for float64 points, else float32.
        copies: each point's rows are ``copies`` consecutive blocks, block ``k`` stepped
            with the ``k``-th rate of a tensor ``lr``.
    """

    def __init__(self, points, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, copies=1):
        library, reason = _load()
        if library is None:
            raise RuntimeError(f"riemann_dnn: the native Adam kernel is unavailable: {reason}")
        self._fn = library.function
        k = self._k = len(points)
        i64 = ctypes.c_int64 * k
        self._ptr = ctypes.c_void_p * k
        self._dtype = _DTYPE_CODES[points[0].dtype]
        rows = [p.shape[0] for p in points]
        if any(r % copies for r in rows):
            raise ValueError(
                f"PreparedAdamRows: copies={copies} must divide every point's rows, got {rows}"
            )
        self.copies = copies
        self._rows, self._ncols = i64(*rows), i64(*[p.shape[1] for p in points])
        self._per_lr = i64(*[max(r // copies, 1) for r in rows])
        self._w, self._m = _pointers(points), _pointers(exp_avgs)
        self._v = _pointers(exp_avg_sqs)
        self._vmax = None if max_exp_avg_sqs is None else _pointers(max_exp_avg_sqs)
        self._bias1, self._bias2 = (ctypes.c_double * k)(), (ctypes.c_double * k)()
        self._rate = ctypes.c_double()
        self._rates = (ctypes.c_double * copies)()
        self._found = torch.zeros(1)

    def __call__(
        self,
        grads: ctypes.Array,
        *,
        lr: float | torch.Tensor,
        steps: Sequence[float],
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        amsgrad: bool,
        decoupled_weight_decay: bool,
        maximize: bool,
    ) -> int:
        """Step in place with the gradients at ``grads`` (a ctypes array of addresses, one
        per point); ``steps[i]`` counts this step of point ``i``. Returns the number of
        rows left untouched (a non-finite gradient or update)."""
        beta1, beta2 = betas
        for i, t in enumerate(steps):
            self._bias1[i] = 1 - beta1**t
            self._bias2[i] = (1 - beta2**t) ** 0.5
        if isinstance(lr, torch.Tensor) and lr.numel() > 1:
            if lr.dtype == torch.float64 and lr.device.type == "cpu" and lr.is_contiguous():
                rates = lr.data_ptr()  # read in place
            else:
                self._rates[:] = lr.tolist()
                rates = ctypes.addressof(self._rates)
        else:
            self._rate.value = float(lr)
            if self.copies == 1:
                rates = ctypes.addressof(self._rate)
            else:
                self._rates[:] = [self._rate.value] * self.copies
                rates = ctypes.addressof(self._rates)
        bad = self._fn(
            self._k,
            self._rows,
            self._ncols,
            self._w,
            grads,
            self._m,
            self._v,
            self._vmax if amsgrad else None,
            self._dtype,
            rates,
            self._per_lr,
            self._bias1,
            self._bias2,
            beta1,
            beta2,
            eps,
            0.0 if decoupled_weight_decay else weight_decay,
            int(amsgrad),
            int(maximize),
            torch.get_num_threads(),
            None,
        )
        if bad < 0:
            raise RuntimeError(
                "riemann_dnn: the native Adam kernel rejected its arguments or ran out of memory"
            )
        return int(bad)


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every entry of ``tensors`` is finite: one read-only pass of the native
    kernels' check (``rdnn_all_finite``, one call per dtype) for contiguous CPU tensors,
    else torch's (``torch.isfinite`` per tensor). The check a prepared step makes before
    anything moves."""
    library, _ = load()
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        if library is None or t.device.type != "cpu" or not t.is_contiguous():
            if not bool(torch.isfinite(t).all()):
                return False
            continue
        groups.setdefault(t.dtype, []).append(t)
    for dtype, members in groups.items():
        if dtype not in _DTYPE_CODES:
            if not all(bool(torch.isfinite(t).all()) for t in members):
                return False
            continue
        k = len(members)
        numel = (ctypes.c_int64 * k)(*[t.numel() for t in members])
        if not library.function.all_finite(k, numel, _pointers(members), _DTYPE_CODES[dtype]):
            return False
    return True


class FiniteCheck:
    """:func:`all_finite` laid out once over tensors of fixed shapes and dtypes (e.g. the
    gradients of a prepared step's parameters): a call passes the tensors' addresses to
    one native call per dtype; tensors it cannot read that way (not contiguous, another
    dtype or device) take :func:`all_finite`."""

    def __init__(self, like: Sequence[torch.Tensor]):
        library, _ = load()
        self._fn = None if library is None else library.function.all_finite
        self._buckets = []
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(like):
            by_dtype.setdefault(t.dtype, []).append(i)
        for dtype, members in by_dtype.items():
            k = len(members)
            numel = (ctypes.c_int64 * k)(*[like[i].numel() for i in members])
            self._buckets.append((dtype, members, numel, (ctypes.c_void_p * k)()))
        self._numel = [t.numel() for t in like]
        native = all(t.device.type == "cpu" and t.dtype in _DTYPE_CODES for t in like)
        self._native = self._fn is not None and native
        self._tensors: Sequence[torch.Tensor] = ()
        self._bound = False

    def bind(self, tensors: Sequence[torch.Tensor]) -> None:
        """Take ``tensors`` (shaped as at construction) for the next :meth:`check`."""
        self._tensors = tensors
        if not self._native:
            return
        for dtype, members, numel, ptrs in self._buckets:
            for k, i in enumerate(members):
                t = tensors[i]
                if t.dtype is not dtype or not t.is_contiguous() or t.numel() != numel[k]:
                    self._tensors, self._bound = tensors, False
                    return
                ptrs[k] = t.data_ptr()
        self._bound = True

    def check(self) -> bool:
        """Whether every entry of the bound tensors is finite."""
        if not (self._native and self._bound):
            return all_finite(self._tensors)
        return all(
            self._fn(len(members), numel, ptrs, _DTYPE_CODES[dtype])
            for dtype, members, numel, ptrs in self._buckets
        )

    def __call__(self, tensors: Sequence[torch.Tensor]) -> bool:
        """Whether every entry of ``tensors`` (shaped as at construction) is finite."""
        self.bind(tensors)
        return self.check()
