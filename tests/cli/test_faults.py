"""Runs under contention and faults, with real processes: two runs into one ``--out`` (one
finishes, the other is refused in one line naming the holder, or waits), a disk that fills
up (one line naming the file, no temporary left, finished records intact), Ctrl-C and
``kill -9`` (the lock is released, never stale)."""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from riemann_dnn.cli.main import main
from riemann_dnn.experiments.lock import LOCK_FILE, LOCKS_AVAILABLE, lock_output
from riemann_dnn.experiments.records import read_json

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not LOCKS_AVAILABLE, reason="no fcntl.flock here")

#: A run of a few seconds on the embedded subset.
TINY = [
    "reproduce",
    "table2",
    "--runs",
    "1",
    "--depths",
    "2",
    "--source",
    "embedded",
    "--selection-epochs",
    "1",
    "--min-epochs",
    "1",
    "--max-epochs",
    "2",
]


def _start(argv: list[str], **options) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RIEMANN_DNN_DATA"}
    return subprocess.Popen(
        [sys.executable, "-m", "riemann_dnn.cli", *argv],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _last_line(err: str) -> str:
    return err.strip().replace("\r", "\n").splitlines()[-1]


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != LOCK_FILE
    }


def _check_contention(codes: list[int], errors: list[str], refusal: tuple[str, ...]) -> None:
    """Neither run crashed: one finished, and the other finished too (it came after) or was
    refused in one line with exit 2 for one of the ``refusal`` reasons."""
    assert 0 in codes and set(codes) <= {0, 2}, list(zip(codes, errors))
    for code, err in zip(codes, errors):
        assert "Traceback" not in err, err[-3000:]
        if code == 2:
            line = _last_line(err)
            assert line.startswith("riemann-dnn reproduce table2: error: --out "), line
            assert any(reason in line for reason in refusal), line


def test_two_identical_runs_started_together(tmp_path):
    out = tmp_path / "out"
    argv = [*TINY, "--methods", "un", "bsgd", "--jobs", "1", "--out", str(out)]
    runs = [_start(argv), _start(argv)]
    codes, errors = zip(*(_finish(r) for r in runs))
    _check_contention(list(codes), list(errors), ("in use by pid",))
    table = read_json(out / "table2.json")
    assert {(r["depth"], r["method"]) for r in table["rows"]} == {(2, "un"), (2, "bsgd")}
    assert len(list(out.glob("runs/*.json"))) == 2 and not _temporaries(out)


def test_two_protocols_started_together_keep_the_finished_table(tmp_path):
    out = tmp_path / "out"
    common = [*TINY, "--methods", "un", "--jobs", "1", "--out", str(out)]
    runs = [
        _start([*common, "--loss-reduction", "sum"]),
        _start([*common, "--loss-reduction", "mean"]),
    ]
    codes, errors = zip(*(_finish(r) for r in runs))
    _check_contention(list(codes), list(errors), ("in use by pid", "another protocol"))
    table = read_json(out / "table2.json")
    assert codes.count(0) == 1, "a second protocol was written over the first"
    winner = ("sum", "mean")[codes.index(0)]
    assert table["identity"]["protocol"]["loss_reduction"] == winner


def test_a_locked_out_is_refused_in_one_line_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    with lock_output(out, command="riemann-dnn reproduce study --out x"):
        proc = _start([*TINY, "--methods", "un", "--out", str(out)])
        code, err = _finish(proc)
    assert code == 2, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"in use by pid {os.getpid()} on " in lines[0], lines[0]
    assert "(riemann-dnn reproduce study --out x, started 20" in lines[0], lines[0]
    assert "--wait" in lines[0] and not list(out.glob("runs/*"))


def _read_until(proc: subprocess.Popen, text: str, timeout: float = 120) -> str:
    """The lines ``proc`` writes on stderr up to the first one holding ``text``."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stderr.readline() if ready else ""
        if not line:
            pytest.fail(f"no {text!r} on stderr: {seen[-3000:]}")
        seen += line
    return seen


def test_wait_runs_once_the_holder_is_done(tmp_path):
    out = tmp_path / "out"
    lock = lock_output(out, command="the holder")
    try:
        proc = _start([*TINY, "--methods", "un", "--wait", "--out", str(out)])
        told = _read_until(proc, "waiting")
        assert f"is in use by pid {os.getpid()} on " in told and "(the holder, " in told, told
        time.sleep(1.0)
        assert proc.poll() is None and not (out / "runs").exists(), "it did not wait"
    finally:
        lock.release()
    code, err = _finish(proc)
    assert code == 0, err[-3000:]
    assert (out / "table2.json").exists()


def _wait_for_lock(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (out / LOCK_FILE).read_text() if (out / LOCK_FILE).exists() else ""
        if text and json.loads(text)["pid"] == proc.pid:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    pytest.fail("the run never took the lock")


@pytest.mark.parametrize("how", ["ctrl-c", "kill-9"])
def test_an_interrupted_or_killed_run_leaves_the_out_free(tmp_path, how, sigint_default):
    out = tmp_path / "out"
    long_run = [*TINY, "--methods", "un", "--max-epochs", "60", "--min-epochs", "60"]
    proc = _start(
        [*long_run, "--jobs", "1", "--out", str(out)],
        start_new_session=True,
        preexec_fn=sigint_default,
    )
    try:
        _wait_for_lock(out, proc)
        time.sleep(2.0)  # into the training
        os.kill(proc.pid, signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
        code, err = _finish(proc, timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == (130 if how == "ctrl-c" else -signal.SIGKILL), err[-3000:]
    if how == "ctrl-c":
        assert not (out / LOCK_FILE).exists() and not _temporaries(out)
    with lock_output(out):  # not stale: free at once
        pass
    if how == "kill-9":  # the next run takes the directory and removes what the kill left
        code, err = _finish(_start([*TINY, "--methods", "un", "--jobs", "1", "--out", str(out)]))
        assert code == 0, err[-3000:]
        assert not _temporaries(out)


def _limit_file_size(limit: int):
    def limit_in_child():  # ignore SIGXFSZ so that a write past the limit raises EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_in_child


def test_a_full_disk_ends_in_one_line_and_keeps_the_finished_records(tmp_path, capsys):
    """The workers' checkpoints cannot be written (a file-size limit stands in for a full
    disk): exit 1, the last line names the file and the reason, no temporary file is left,
    and the records and table of the earlier run are byte for byte the same."""
    out = tmp_path / "out"
    assert main([*TINY, "--methods", "un", "--jobs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    before = _files(out)
    proc = _start(
        [*TINY, "--methods", "un", "bsgd", "sgd", "--jobs", "2", "--out", str(out)],
        preexec_fn=_limit_file_size(64_000),  # a checkpoint of depth 2 is ~0.5 MB
    )
    code, err = _finish(proc)
    line = _last_line(err)
    assert code == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert line.startswith(f"riemann-dnn reproduce table2: error: cannot write {out}/"), line
    assert ": File too large" in line, line
    assert not _temporaries(out), _temporaries(out)
    after = _files(out)
    assert {k: after.get(k) for k in before} == before, "a finished file changed"
