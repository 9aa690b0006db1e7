"""One run at a time per output directory.

:func:`lock_output` takes an exclusive ``flock`` on ``<folder>/.riemann-dnn.lock`` and writes
the holder (pid, host, command, start time) into it. A second run into the same folder is
refused with :class:`OutputLockedError`, which names the holder, or waits (``wait=True``).
The kernel releases a ``flock`` when its process exits, however it exits (normal exit,
Ctrl-C, ``kill -9``), so the lock never goes stale: a lock file left behind by a killed run
blocks nobody. A release removes the file while still holding it; a locker checks, once it
holds a lock, that the file it locked is still the one at the path (else it tries again), so
a waiter and a newcomer never hold two different files.

>>> with lock_output("results/table2", command="riemann-dnn reproduce table2"):  # doctest: +SKIP
...     ...  # write into results/table2; a second run is refused meanwhile

Needs :func:`fcntl.flock` (Linux, macOS); where it is missing, :func:`lock_output` locks
nothing (:data:`LOCKS_AVAILABLE` is False).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = [
    "LOCK_FILE",
    "LOCKS_AVAILABLE",
    "OutputLock",
    "OutputLockedError",
    "describe_holder",
    "lock_output",
]

#: The lock file of an output directory.
LOCK_FILE = ".riemann-dnn.lock"

#: Whether this platform can lock (``fcntl.flock``).
LOCKS_AVAILABLE = fcntl is not None


#: How long a refused locker waits for a new holder to write its name into the lock file
#: (a holder locks the file first, then writes).
_NAMING_GRACE_S = 2.0


class OutputLockedError(RuntimeError):
    """The output directory is locked by another run; ``holder`` is what it wrote (pid,
    host, command, started), empty when it could not be read."""

    def __init__(self, folder: Path, holder: dict):
        self.folder, self.holder = folder, holder
        super().__init__(f"{folder} is in use by {describe_holder(holder)}")


def describe_holder(holder: dict) -> str:
    """``pid 123 on host (riemann-dnn reproduce table2 ..., started 2025-01-31 12:00:00)``."""
    if not holder.get("pid"):
        return "another run (its pid could not be read)"
    return (
        f"pid {holder['pid']} on {holder.get('host', '?')} "
        f"({holder.get('command', '?')}, started {holder.get('started', '?')})"
    )


class OutputLock:
    """A held lock of :func:`lock_output`; :meth:`release` (or leaving its ``with`` block)
    gives it up. The process's exit releases it too."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder, self._fd = folder, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file (while still holding it), then unlock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            (self.folder / LOCK_FILE).unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing the last descriptor unlocks

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock_output(
    folder: str | Path,
    *,
    command: str | None = None,
    wait: bool = False,
    on_wait: Callable[[dict], None] | None = None,
) -> OutputLock:
    """Lock ``folder`` (created if missing) for this process and write the holder into its
    lock file: ``{"pid", "host", "command", "started"}`` (``command`` defaults to this
    process's command line). When another process holds it: raise
    :class:`OutputLockedError` naming the holder, or with ``wait`` call ``on_wait(holder)``
    and block until it is released (Ctrl-C interrupts the wait)."""
    folder = Path(folder)
    if not LOCKS_AVAILABLE:  # pragma: no cover - Windows
        return OutputLock(folder, None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    told, unnamed_until = False, time.monotonic() + _NAMING_GRACE_S
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if not _try_lock(fd):
                holder = _read_holder(fd)
                if not holder.get("pid") and time.monotonic() < unnamed_until:
                    os.close(fd)  # it has locked but not yet written its name: look again
                    time.sleep(0.01)
                    continue
                if not wait:
                    raise OutputLockedError(folder, holder)
                if on_wait is not None and not told:
                    on_wait(holder)
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed it as we waited: lock the one at the path now
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with contextlib.suppress(OSError):  # on a full disk the lock holds, unnamed
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
    return OutputLock(folder, fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
