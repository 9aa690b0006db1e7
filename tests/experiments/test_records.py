import errno
import json
import math
import os
import pickle
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from riemann_dnn.experiments.records import (
    WriteError,
    atomic_file,
    figure,
    read_json,
    remove_temporaries,
    save_torch,
    strict,
    write_bytes,
    write_json,
    write_text,
)


def test_write_json_is_strict_and_round_trips_nonfinite(tmp_path):
    value = {"a": [1.0, math.nan, math.inf], "b": (-math.inf, "x"), "c": {"d": 2}}
    path = write_json(tmp_path / "sub" / "r.json", value)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict token {name}"))
    back = read_json(path)
    assert back["a"][0] == 1.0 and math.isnan(back["a"][1]) and back["a"][2] == math.inf
    assert back["b"] == [-math.inf, "x"] and back["c"] == {"d": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]  # no temporary left


def test_strict_leaves_finite_values_alone():
    assert strict({"x": [0.5, 1, None, "s"]}) == {"x": [0.5, 1, None, "s"]}


def test_write_text_replaces_atomically(tmp_path):
    path = write_text(tmp_path / "a.md", "old")
    write_text(path, "new")
    assert path.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_failed_json_write_keeps_the_old_file(tmp_path):
    path = write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert read_json(path) == {"ok": 1} and len(list(tmp_path.iterdir())) == 1


def test_figure_saves_a_png(tmp_path):
    with figure(tmp_path / "p.png", 1, 2, figsize=(4, 2)) as (fig, axes):
        axes[0].plot([0, 1], [1, 0])
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(tmp_path.iterdir())) == 1


# -- the one atomic writer: unique temporaries, and write errors named -----------------------
LIMITED_WRITER = """
import sys
from pathlib import Path
from riemann_dnn.experiments.records import WriteError, save_torch, write_bytes
import torch
folder = Path(sys.argv[1])
write_bytes(folder / "small.bin", b"x" * 1000)  # under the limit: written
try:
    save_torch(folder / "big.pt", {"w": torch.zeros(100_000)})  # 400 kB: over it
except WriteError as err:
    print(f"WriteError|{err}|{err.filename}")
"""


def _limit_file_size(limit: int):
    def limit_in_child():  # ignore SIGXFSZ so that a write past the limit raises EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_in_child


def test_write_past_a_file_size_limit_raises_one_error_and_leaves_no_temporary(tmp_path):
    old = torch.arange(5.0)
    save_torch(tmp_path / "big.pt", old)  # the file a failed write must keep
    result = subprocess.run(
        [sys.executable, "-c", LIMITED_WRITER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_file_size(64_000),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    kind, message, filename = result.stdout.strip().split("|")
    assert kind == "WriteError" and filename == str(tmp_path / "big.pt")
    assert message == f"cannot write {tmp_path / 'big.pt'}: File too large", message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.pt", "small.bin"]
    assert torch.equal(torch.load(tmp_path / "big.pt"), old)
    assert (tmp_path / "small.bin").read_bytes() == b"x" * 1000


def test_write_error_survives_pickling_from_a_worker():
    err = WriteError(errno.ENOSPC, os.strerror(errno.ENOSPC), "results/x/run.pt")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is WriteError and back.errno == errno.ENOSPC
    assert str(back) == "cannot write results/x/run.pt: No space left on device"


def test_unwritable_folder_is_a_write_error_naming_the_file(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions: a pseudo file system refuses
        target = Path("/sys/riemann-dnn-test/r.json")
    else:
        (tmp_path / "locked").mkdir()
        (tmp_path / "locked").chmod(0o500)
        target = tmp_path / "locked" / "r.json"
    with pytest.raises(WriteError) as info:
        write_json(target, {"a": 1})
    assert str(info.value).startswith(f"cannot write {target}: "), str(info.value)
    assert info.value.errno in (errno.EACCES, errno.EPERM, errno.ENOENT), info.value


HAMMER = """
import sys, torch
from riemann_dnn.experiments.records import save_torch
for i in range(60):
    save_torch(sys.argv[1], {"writer": int(sys.argv[2]), "i": i, "w": torch.zeros(2000)})
"""


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    """Two processes replacing the same checkpoint (the race of two identical runs): no
    "No such file or directory" from a shared temporary name, and a whole file at the end."""
    target = tmp_path / "checkpoints" / "c.pt"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, str(target), str(k)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    errors = [w.communicate(timeout=300)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    final = torch.load(target)
    assert final["i"] == 59 and final["writer"] in (0, 1)
    assert [p.name for p in target.parent.iterdir()] == ["c.pt"]


def test_atomic_file_creates_files_with_the_umask_like_open(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    written = write_text(tmp_path / "atomic", "x")
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_remove_temporaries_removes_only_the_writers_leftovers(tmp_path):
    (tmp_path / "runs").mkdir()
    left = tmp_path / "runs" / ".r.json.0123abcd.tmp"  # a writer killed mid-write
    left.write_text("{")
    keep = [tmp_path / "runs" / "r.json", tmp_path / ".notes.tmp", tmp_path / "x.tmp"]
    for path in keep:
        path.write_text("keep")
    assert remove_temporaries(tmp_path) == [left]
    assert all(p.exists() for p in keep) and not left.exists()


def test_an_exception_inside_atomic_file_keeps_the_old_file(tmp_path):
    path = write_bytes(tmp_path / "f.bin", b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as file:
        file.write(b"half")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1
