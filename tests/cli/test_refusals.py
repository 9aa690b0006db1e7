"""Every bad input is refused before the work: exit 2, one line on stderr naming the option,
within a few seconds, and no result file changed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from riemann_dnn.cli.main import main

REPO = Path(__file__).resolve().parents[2]
TABLE2 = ["reproduce", "table2", "--quick", "--runs", "1", "--depths", "2", "--methods", "un"]
SENSITIVITY = [
    "reproduce",
    "sensitivity",
    "--quick",
    "--runs",
    "1",
    "--depths",
    "2",
    "--methods",
    "un",
    "--batch-sizes",
    "100",
    "--reductions",
    "sum",
]
TRAIN = ["train", "archbn", "--quick"]
SYMMETRY = ["symmetry", "--steps", "2"]
SEGMENT = [
    "segment",
    "--epochs",
    "1",
    "--train-scenes",
    "16",
    "--test-scenes",
    "8",
    "--width",
    "4",
    "--depth",
    "2",
]
BENCH = ["bench", "retractions", "--sizes", "8x16", "--steps", "0"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def _unwritable(tmp: Path) -> Path:
    if os.geteuid() == 0:  # root writes through permissions: a pseudo file system refuses
        return Path("/sys/riemann-dnn-test")
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked / "out"


# (id, argv with {file}/{out}/{unwritable} placeholders, extra environment, text the line
# must hold). Each one is a finding of the "runs a user can trust" issue.
CASES = [
    ("table2-out-is-a-file", TABLE2 + ["--out", "{file}"], {}, "--out"),
    ("table2-out-under-a-file", TABLE2 + ["--out", "{file}/sub"], {}, "--out"),
    ("table2-out-unwritable", TABLE2 + ["--out", "{unwritable}"], {}, "--out"),
    ("train-out-under-a-file", TRAIN + ["--out", "{file}/sub"], {}, "--out"),
    ("symmetry-out-under-a-file", SYMMETRY + ["--out", "{file}/sub"], {}, "--out"),
    ("bench-out-under-a-file", BENCH + ["--out", "{file}/sub"], {}, "--out"),
    ("segment-out-under-a-file", SEGMENT + ["--out", "{file}/sub"], {}, "--out"),
    pytest.param(
        "table2-cuda",
        TABLE2 + ["--device", "cuda", "--out", "{out}"],
        {},
        "--device cuda",
        marks=NO_CUDA,
    ),
    pytest.param(
        "sensitivity-cuda",
        SENSITIVITY + ["--device", "cuda", "--out", "{out}"],
        {},
        "--device cuda",
        marks=NO_CUDA,
    ),
    pytest.param(
        "train-cuda",
        TRAIN + ["--device", "cuda", "--out", "{out}"],
        {},
        "--device cuda",
        marks=NO_CUDA,
    ),
    pytest.param(
        "symmetry-cuda",
        SYMMETRY + ["--device", "cuda", "--out", "{out}"],
        {},
        "--device cuda",
        marks=NO_CUDA,
    ),
    pytest.param("demo-cuda", ["demo", "--device", "cuda"], {}, "--device cuda", marks=NO_CUDA),
    pytest.param(
        "segment-cuda",
        SEGMENT + ["--device", "cuda", "--out", "{out}"],
        {},
        "--device cuda",
        marks=NO_CUDA,
    ),
    pytest.param(
        "bench-cuda",
        BENCH + ["--device", "cuda", "--out", "{out}"],
        {},
        "--device cuda",
        marks=NO_CUDA,
    ),
    ("table2-jobs-0", TABLE2 + ["--jobs", "0", "--out", "{out}"], {}, "--jobs"),
    ("segment-jobs-0", SEGMENT + ["--jobs", "0", "--out", "{out}"], {}, "--jobs"),
    ("table2-threads-0", TABLE2 + ["--threads", "0", "--out", "{out}"], {}, "--threads"),
    (
        "train-quick-max-epochs-negative",
        TRAIN + ["--max-epochs", "-3", "--out", "{out}"],
        {},
        "--max-epochs",
    ),
    ("train-min-above-max", TRAIN + ["--min-epochs", "20", "--out", "{out}"], {}, "--min-epochs"),
    (
        "table2-data-env-nowhere",
        TABLE2 + ["--out", "{out}"],
        {"RIEMANN_DNN_DATA": "{tmp}/nowhere"},
        "RIEMANN_DNN_DATA",
    ),
    (
        "train-data-env-nowhere",
        TRAIN + ["--out", "{out}"],
        {"RIEMANN_DNN_DATA": "{tmp}/nowhere"},
        "RIEMANN_DNN_DATA",
    ),
    (
        "table2-data-dir-nowhere",
        TABLE2 + ["--data-dir", "{tmp}/nowhere", "--out", "{out}"],
        {},
        "--data-dir",
    ),
    (
        "table2-duplicate-depths",
        [
            "reproduce",
            "table2",
            "--quick",
            "--runs",
            "1",
            "--depths",
            "2",
            "2",
            "--methods",
            "un",
            "--out",
            "{out}",
        ],
        {},
        "--depths",
    ),
    (
        "table2-duplicate-methods",
        [
            "reproduce",
            "table2",
            "--quick",
            "--runs",
            "1",
            "--depths",
            "2",
            "--methods",
            "un",
            "bsgd",
            "un",
            "--out",
            "{out}",
        ],
        {},
        "--methods",
    ),
    (
        "sensitivity-duplicate-batch",
        SENSITIVITY + ["--batch-sizes", "10", "10", "--out", "{out}"],
        {},
        "--batch-sizes",
    ),
    (
        "table2-retraction-bogus",
        TABLE2 + ["--retraction", "bogus", "--out", "{out}"],
        {},
        "--retraction bogus",
    ),
    ("bench-archbn-runs-0", BENCH + ["--archbn-runs", "0", "--out", "{out}"], {}, "--archbn-runs"),
    (
        "bench-bad-size",
        ["bench", "retractions", "--sizes", "big", "--out", "{out}"],
        {},
        "--sizes big",
    ),
    (
        "segment-duplicate-method",
        SEGMENT + ["--method", "un", "un", "--out", "{out}"],
        {},
        "--method",
    ),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    }


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's refusals
        code = exit_info.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "argv", "env", "names"),
    [c if hasattr(c, "values") else pytest.param(*c, id=c[0]) for c in CASES],
)
def test_bad_input_is_refused_before_the_work(
    name, argv, env, names, tmp_path, capsys, monkeypatch, full_mnist_dir
):
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    (results / "runs" / "depth2-un-seed0-000000000000.json").write_text("{}")
    (results / "table2.json").write_text("{}")
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    places = {
        "file": str(afile),
        "out": str(results),
        "tmp": str(tmp_path),
        "unwritable": str(_unwritable(tmp_path)),
    }
    monkeypatch.setenv("RIEMANN_DNN_DATA", str(full_mnist_dir.parent))
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(**places))
    argv = [a.format(**places) for a in argv]
    before = _snapshot(tmp_path)
    start = time.perf_counter()
    code, err = _run(argv, capsys)
    elapsed = time.perf_counter() - start
    assert code == 2, f"{name}: exit {code}, stderr {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{name}: stderr should be one line, got {err!r}"
    assert names in lines[0] and "error:" in lines[0], f"{name}: {lines[0]!r}"
    assert "Traceback" not in err
    assert elapsed < 5.0, f"{name}: refused after {elapsed:.1f} s, not before the work"
    assert _snapshot(tmp_path) == before, f"{name}: files changed"


def test_debug_variable_shows_the_traceback(tmp_path):
    env = {**os.environ, "RIEMANN_DNN_DEBUG": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "riemann_dnn.cli",
            *TABLE2,
            "--retraction",
            "bogus",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr, result.stderr[-2000:]
