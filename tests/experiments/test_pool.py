"""The worker pool: workers die with their parent, Ctrl-C stops everything at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from riemann_dnn.experiments.pool import worker_pool

REPO = Path(__file__).resolve().parents[2]
LINUX = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc; psutil may not be installed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_table2(tmp_path: Path, preexec_fn=None) -> subprocess.Popen:
    """A table2 run with 4 ensembles on 2 workers (2 queued) that trains for minutes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "riemann_dnn.cli",
            "reproduce",
            "table2",
            "--runs",
            "1",
            "--depths",
            "2",
            "4",
            "--methods",
            "un",
            "bsgd",
            "--jobs",
            "2",
            "--source",
            "embedded",
            "--selection-epochs",
            "50",
            "--min-epochs",
            "50",
            "--max-epochs",
            "60",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )


def _wait_for_workers(proc: subprocess.Popen, count: int, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [
            p
            for p in _children(proc.pid)
            if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
            and "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
        ]
        if len(workers) >= count:
            time.sleep(3)  # let them import torch and start training
            return workers
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {count} workers after {timeout} s")


@LINUX
def test_workers_die_when_the_parent_is_killed(tmp_path):
    proc = _start_table2(tmp_path)
    try:
        workers = _wait_for_workers(proc, 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = [w for w in workers if _alive(w)]
        assert not orphans, f"workers {orphans} outlived their parent"
    finally:
        for w in workers if "workers" in dir() else []:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


@LINUX
def test_ctrl_c_exits_at_once_without_starting_queued_work(tmp_path, sigint_default):
    proc = _start_table2(tmp_path, preexec_fn=sigint_default)
    try:
        workers = _wait_for_workers(proc, 2)
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)  # only the parent: workers must not need it
        code = proc.wait(15)
        elapsed = time.monotonic() - start
        err = proc.stderr.read().decode()
        assert code == 130, err[-2000:]
        assert elapsed < 3.0, f"Ctrl-C took {elapsed:.1f} s"
        assert "interrupted" in err and "Traceback" not in err, err[-2000:]
        time.sleep(0.5)
        assert not [w for w in workers if _alive(w)], "workers still running"
        assert not list((tmp_path / "out").glob("runs/*.json")), "no run can have finished"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _mark_and_sleep(path: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


def test_an_error_in_the_block_cancels_queued_tasks_and_stops_workers(tmp_path):
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt), worker_pool(2, threads=1) as pool:
        pids = {pool.submit(_sleep, 0.0).result() for _ in range(4)}
        for i in range(6):
            pool.submit(_mark_and_sleep, str(tmp_path / f"task{i}"), 30.0)
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("task*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt
    assert time.monotonic() - start < 35, "the pool waited for its tasks"
    time.sleep(1.0)
    started = sorted(p.name for p in tmp_path.glob("task*"))
    assert started == ["task0", "task1"], f"queued tasks started after the interrupt: {started}"
    assert not [p for p in pids if _alive(p)], "workers still running"


def test_workers_use_the_given_thread_count():
    with worker_pool(1, threads=2) as pool:
        assert pool.submit(_threads).result() == 2


def _threads() -> int:
    import torch

    return torch.get_num_threads()
