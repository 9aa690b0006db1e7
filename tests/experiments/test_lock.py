"""The output lock: one holder at a time, named to the others, never stale after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from riemann_dnn.experiments.lock import (
    LOCK_FILE,
    LOCKS_AVAILABLE,
    OutputLockedError,
    lock_output,
)

pytestmark = pytest.mark.skipif(not LOCKS_AVAILABLE, reason="no fcntl.flock here")

HOLDER = """
import sys, time
from riemann_dnn.experiments.lock import lock_output
lock = lock_output(sys.argv[1], command="riemann-dnn test-holder")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold(folder, seconds: float = 600.0) -> subprocess.Popen:
    """A process that takes the lock of ``folder`` and holds it ``seconds``."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_process_is_refused_with_the_holder_named(tmp_path):
    holder = _hold(tmp_path)
    try:
        with pytest.raises(OutputLockedError) as info:
            lock_output(tmp_path, command="second")
        assert info.value.holder["pid"] == holder.pid
        message = str(info.value)
        assert f"pid {holder.pid}" in message and "riemann-dnn test-holder" in message
        assert "started 20" in message, message
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = _hold(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid  # left behind
    with lock_output(tmp_path, command="next") as lock:  # and blocks nobody
        assert lock.held
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()  # a release leaves the folder as it was


def test_wait_blocks_until_the_holder_exits(tmp_path):
    """The holder keeps the lock 1.5 s after saying so; the waiter gets it only then. (Not
    "after the holder's process has ended": an exiting process releases its locks a moment
    before ``poll()`` can see it gone, which made this test flaky on a loaded machine.)"""
    holder = _hold(tmp_path, seconds=1.5)
    seen = []
    start = time.monotonic()
    with lock_output(tmp_path, wait=True, on_wait=seen.append):
        waited = time.monotonic() - start
    holder.wait(timeout=60)
    assert waited > 1.0, f"got the lock after {waited:.2f} s, while the holder held it"
    assert [h["pid"] for h in seen] == [holder.pid]


def test_one_process_cannot_take_a_folder_twice(tmp_path):
    """Two commands in one process (e.g. a test calling main twice) do not share a lock."""
    with lock_output(tmp_path):
        with pytest.raises(OutputLockedError):
            lock_output(tmp_path)
    with lock_output(tmp_path):  # released by the ``with``
        pass


def test_concurrent_lockers_exclude_each_other(tmp_path):
    """Threads hammering one lock: never two holders at once."""
    inside, overlaps = [], []

    def work():
        for _ in range(20):
            with lock_output(tmp_path, wait=True):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(len(inside))
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not overlaps


def _lock_unnamed(folder):
    """Lock ``folder``'s lock file the way a holder does before it writes its name."""
    import fcntl

    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_holder_that_has_not_yet_written_its_name_is_still_named(tmp_path):
    """A holder locks, then writes: a refusal in between waits briefly for the name (this
    race made CI see "its pid could not be read" with two runs started together)."""
    fd = _lock_unnamed(tmp_path)
    name = threading.Timer(0.3, os.pwrite, (fd, json.dumps({"pid": 4321}).encode(), 0))
    name.start()
    try:
        with pytest.raises(OutputLockedError) as info:
            lock_output(tmp_path)
        assert info.value.holder["pid"] == 4321, str(info.value)
    finally:
        name.join()
        os.close(fd)


def test_a_holder_that_never_writes_its_name_is_refused_after_the_grace(tmp_path):
    fd = _lock_unnamed(tmp_path)
    try:
        start = time.monotonic()
        with pytest.raises(OutputLockedError, match="its pid could not be read"):
            lock_output(tmp_path)
        assert time.monotonic() - start < 10
    finally:
        os.close(fd)
