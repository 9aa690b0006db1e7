"""Keep freed memory in the process's heap, for training loops (glibc on Linux).

A training step allocates and frees the same large tensors (activations, gradients) at
every step. glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB, raised
dynamically) with fresh ``mmap`` pages, gives them back to the kernel on ``free``, and trims
the top of its heap beyond 128 KiB of free space, so every step pays page faults (and zeroed
pages) to get the memory back: 12.6 million minor faults in one full ``reproduce table2``
run (docs/performance.md). :func:`retain_freed_memory` raises both thresholds with
``mallopt``, so freed blocks are reused. The numbers a run computes do not change; its peak
memory is what it was, but it stays reserved until the process exits.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MAX_MMAP_THRESHOLD = 32 << 20  # glibc's cap on 64-bit (HEAP_MAX_SIZE / 2)


def retain_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Serve blocks up to 32 MiB from the heap and keep up to ``trim_threshold`` bytes of
    freed memory at its top (``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``).

    Returns whether it applied: not off glibc (musl's ``mallopt`` does nothing), nor when
    the environment already tunes ``malloc`` (``MALLOC_*``, ``GLIBC_TUNABLES``), which wins.
    """
    if not sys.platform.startswith("linux"):
        return False
    if "GLIBC_TUNABLES" in os.environ or any(key.startswith("MALLOC_") for key in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, min(trim_threshold, 2**31 - 1))
    )
