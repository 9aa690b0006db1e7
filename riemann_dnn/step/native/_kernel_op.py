"""What the torch ops of this folder share (``riemann_dnn::oblique_sgd_`` in :mod:`.ops`,
``riemann_dnn::oblique_adam_`` in :mod:`.adam_ops`): the dtype codes of the C kernels, the
checks of their arguments, the marshalling of a call and the registration of an op whose
CPU kernel is the compiled one where it can run and the eager torch step elsewhere.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch

#: The C kernels' dtype codes.
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def pointers(tensors: Sequence[torch.Tensor]) -> ctypes.Array:
    """The tensors' data addresses as a ctypes array."""
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


class FallbackNotice:
    """Warns, once per process, that the eager path replaces the native ``kernel``."""

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.given = False

    def __call__(self, reason: str) -> None:
        if self.given:
            return
        self.given = True
        warnings.warn(
            f"riemann_dnn: native {self.kernel} kernel not used ({reason}); falling back to "
            f"the eager torch step (same numbers, slower). To enable it, install a C compiler "
            f"(gcc or clang, or set CC) and use contiguous CPU tensors; RIEMANN_DNN_NATIVE=0 "
            f"disables it.",
            RuntimeWarning,
            stacklevel=4,
        )


def native_blocker(named: Iterable[tuple[str, Sequence[torch.Tensor]]], lr) -> str:
    """Why these tensors (lists by name) and rates cannot take the native kernel (``""`` if
    they can)."""
    for name, tensors in named:
        for i, t in enumerate(tensors):
            if not t.is_contiguous():
                return f"{name}[{i}] is not contiguous"
    if lr.device.type != "cpu":
        return f"lr is on {lr.device}"
    return ""


def rates_of(op: str, lr: float | torch.Tensor, points: Sequence[torch.Tensor]) -> torch.Tensor:
    """``lr`` as a 1-D float64 tensor whose length divides every point's row count."""
    if isinstance(lr, torch.Tensor):
        if lr.dim() > 1:
            raise ValueError(
                f"{op}: lr must be a float, a 0-d tensor or a 1-D tensor of one rate per "
                f"copy, got shape {tuple(lr.shape)}"
            )
        values = lr.detach().reshape(-1)
        if values.dtype != torch.float64:
            values = values.to(torch.float64)
    else:
        values = torch.tensor([float(lr)], dtype=torch.float64)
    count = values.numel()
    for i, p in enumerate(points):
        rows = p.numel() // p.shape[-1]
        if count == 0 or rows % count or (p.dim() == 3 and count not in (1, p.shape[0], rows)):
            raise ValueError(
                f"{op}: lr has {count} rates but points[{i}] has shape {tuple(p.shape)}; "
                f"expected one rate, one per copy (leading axis) or one per row"
            )
    return values


def check_point(op: str, i: int, p: torch.Tensor, g: torch.Tensor) -> None:
    """``points[i]`` is a ``(rows, n)`` or ``(copies, rows, n)`` tensor of a kernel dtype and
    ``grads[i]`` matches it."""
    if p.dim() not in (2, 3) or p.shape[-1] < 1:
        raise ValueError(
            f"{op}: points[{i}] must be (rows, n) or (copies, rows, n) with n >= 1, got "
            f"shape {tuple(p.shape)}"
        )
    if p.dtype not in DTYPE_CODES:
        raise TypeError(
            f"{op}: points[{i}] has dtype {p.dtype}; expected one of "
            f"{sorted(str(d) for d in DTYPE_CODES)}"
        )
    if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
        raise ValueError(
            f"{op}: grads[{i}] is {g.dtype} {tuple(g.shape)} on {g.device}; expected "
            f"{p.dtype} {tuple(p.shape)} on {p.device}"
        )


def call_native(
    op: str, points: Sequence[torch.Tensor], lr: torch.Tensor, found: torch.Tensor, call
) -> None:
    """One call of a native kernel over ``points``: ``call(rates, rows, ncols, rows_per_lr,
    flag)`` gets the rates as a float64 CPU tensor, each point's row count, row length and
    rows per rate (ctypes arrays) and the address of a float32 flag the kernel sets to 1 when it leaves a row
    untouched (``found`` itself when it can be written in place); it returns the number of
    such rows, or a negative number when the kernel refused its arguments."""
    k = len(points)
    values = lr if lr.dtype == torch.float64 and lr.is_contiguous() else lr.to(torch.float64)
    rows = [p.numel() // p.shape[-1] for p in points]
    count = values.numel()
    i64 = ctypes.c_int64 * k
    per_lr = i64(*[r // count if r >= count else 1 for r in rows])
    if found.dtype == torch.float32 and found.device.type == "cpu" and found.is_contiguous():
        flag, scratch = found, None
    else:
        flag = scratch = torch.zeros(1)
    ncols = i64(*[p.shape[-1] for p in points])
    bad = call(values, i64(*rows), ncols, per_lr, flag.data_ptr())
    if bad < 0:
        raise RuntimeError(
            f"riemann_dnn::{op}: the native kernel rejected its arguments or ran out of memory"
        )
    if scratch is not None and bad:
        found.fill_(1)


def register_op(
    library: torch.library.Library,
    name: str,
    schema: str,
    *,
    load: Callable[[], tuple],
    blocker: Callable[[tuple], str],
    native: Callable,
    eager: Callable[[tuple], None],
    mutated: Callable[[tuple], list[torch.Tensor]],
    notice: FallbackNotice,
):
    """Defines ``riemann_dnn::<name>(<schema>)`` in ``library`` and returns its overload.

    Its CPU kernel calls ``native(function, *args)`` (``function``: the library ``load()``
    gives) where ``load`` and ``blocker(args)`` allow it, else ``eager(args)`` after
    ``notice``; on any other device ``eager(args)``. Each bumps the version counters of
    ``mutated(args)``; the fake (meta) implementation does nothing.
    """

    def any_device(*args) -> None:
        """Any device: the eager torch implementation."""
        if args[0] and args[0][0].device.type != "cpu":
            notice(f"tensors on {args[0][0].device}: the native kernel is CPU-only")
        eager(args)
        torch.autograd.graph.increment_version(mutated(args))

    def cpu(*args) -> None:
        """CPU: the compiled kernel where it can run, else the eager implementation."""
        found, reason = load()
        if found is not None:
            reason = blocker(args)
            if not reason:
                native(found.function, *args)
                torch.autograd.graph.increment_version(mutated(args))
                return
        notice(reason)
        eager(args)
        torch.autograd.graph.increment_version(mutated(args))

    def fake(*args) -> None:
        return None

    library.define(f"{name}({schema}) -> ()")
    library.impl(name, any_device, "CompositeExplicitAutograd")
    library.impl(name, cpu, "CPU")
    torch.library.register_fake(f"riemann_dnn::{name}", fake, lib=library)
    return getattr(torch.ops.riemann_dnn, name).default
