"""The package's one worker pool: spawned processes that die with their parent.

:func:`worker_pool` is a :class:`~concurrent.futures.ProcessPoolExecutor` (``spawn`` start
method) whose workers

- die with the process that started them: on Linux the kernel sends them ``SIGKILL`` when it
  exits (``prctl(PR_SET_PDEATHSIG)``), elsewhere a watchdog thread exits when the parent's
  pid changes -- so ``kill -9`` of the main process leaves no orphan training on;
- ignore ``SIGINT``: Ctrl-C goes to the main process, which cancels the queued tasks and
  terminates the workers instead of waiting for them (``shutdown(wait=False,
  cancel_futures=True)`` then ``terminate``), so it exits within about a second;
- keep freed memory in their heap (:func:`~.allocator.retain_freed_memory`), as the
  command-line process does;
- run with a fixed torch intra-op thread count (``threads``, default 1), the same as the
  in-process path, so a run's numbers do not depend on ``--jobs`` or the core count;
- send warnings to the parent through ``messages`` (a ``multiprocessing`` queue of the
  pool's context, e.g. from :func:`pool_context`), where they can be printed above a progress
  bar, instead of writing into it.

>>> with worker_pool(2, threads=1) as pool:  # doctest: +SKIP
...     results = list(pool.map(work, tasks))
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["worker_pool", "pool_context", "die_with_parent", "send_message"]

_PR_SET_PDEATHSIG = 1
_MESSAGES: Any = None  # the worker's queue to the parent (set by the initializer)


def pool_context() -> multiprocessing.context.BaseContext:
    """The start method of the pool (``spawn``: no forked torch state in the workers)."""
    return multiprocessing.get_context("spawn")


def die_with_parent(parent_pid: int, *, poll_s: float = 0.5) -> None:
    """Make this process exit when ``parent_pid`` does: ``PR_SET_PDEATHSIG`` on Linux (the
    kernel kills us with ``SIGKILL``), plus a daemon thread that polls :func:`os.getppid`
    (the portable fallback, and a guard for a parent that died before the prctl call)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the watchdog alone
            pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def send_message(kind: str, payload: Any) -> bool:
    """Send ``(kind, payload)`` to the parent's message queue from a worker; False when
    there is none (not in a worker, or the pool was made without ``messages``)."""
    if _MESSAGES is None:
        return False
    _MESSAGES.put((kind, payload))
    return True


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    if not send_message("warning", text):
        sys.stderr.write(text + "\n")


def _initialize(
    parent_pid: int,
    threads: int,
    messages: Any,
    initializer: Callable[..., None] | None,
    initargs: tuple,
) -> None:
    global _MESSAGES
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    import torch

    from .allocator import retain_freed_memory

    retain_freed_memory()
    torch.set_num_threads(threads)
    _MESSAGES = messages
    if messages is not None:
        warnings.showwarning = _show_warning
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def worker_pool(
    jobs: int,
    *,
    threads: int = 1,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    messages: Any = None,
) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``jobs`` spawned worker processes with ``threads`` torch threads each (see
    the module docstring). On leaving normally it waits for the submitted tasks; on an error
    or ``KeyboardInterrupt`` it cancels the queued ones and terminates the workers at once."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=pool_context(),
        initializer=_initialize,
        initargs=(os.getpid(), threads, messages, initializer, initargs),
    )
    try:
        yield pool
    except BaseException:
        _abort(pool)
        raise
    pool.shutdown(wait=True)


def _abort(pool: ProcessPoolExecutor, grace_s: float = 0.5) -> None:
    """Cancel the queued tasks and stop the workers now (running tasks are lost)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
