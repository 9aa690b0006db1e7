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
BYOM = ["byom", "--quick"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
NO_MPS = pytest.mark.skipif(
    torch.backends.mps.is_available(), reason="refusing --device mps needs a machine without it"
)


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
CASES += [
    pytest.param(
        f"{command}-{device}",
        argv + ["--device", device] + ([] if command == "demo" else ["--out", "{out}"]),
        {},
        f"--device {device}",
        marks=NO_MPS if device == "mps" else NO_CUDA,
    )
    for command, argv in [
        ("table2", TABLE2),
        ("sensitivity", SENSITIVITY),
        ("train", TRAIN),
        ("symmetry", SYMMETRY),
        ("demo", ["demo"]),
        ("segment", SEGMENT),
        ("bench", BENCH),
    ]
    for device in ("cuda", "mps")
]

STUDY = ["reproduce", "study", "--quick"]
DEMO = ["demo"]

# Every option of every command, each bad value: (command, its options, what the line names).
# A command's "--out {out}" is added (but for demo), so any refusal after the output directory
# is made shows as a changed file.
BAD_OPTIONS = {
    "table2": (
        TABLE2,
        [
            (["--runs", "0"], "--runs"),
            (["--depths", "0"], "--depths"),
            (["--methods", "bogus"], "--methods"),
            (["--batch-size", "0"], "--batch-size"),
            (["--batch-size", "1"], "--batch-size 1: BatchNorm"),
            (["--batch-size", "100000"], "--batch-size 100000: more than the 1000 images"),
            (["--batch-size", "999"], "--batch-size 999: an epoch over the 1000 images"),
            (["--loss-reduction", "bogus"], "--loss-reduction"),
            (["--min-epochs", "0"], "--min-epochs"),
            (["--selection-epochs", "0"], "--selection-epochs"),
            (["--lr-candidates", "0"], "--lr-candidates"),
            (["--lr-candidates", "nan"], "--lr-candidates"),
            (["--lr-candidates", "0.1", "0.1"], "--lr-candidates"),
            (["--source", "bogus"], "--source"),
            (["--seed", "-1"], "--seed"),
            (["--constraint", "bogus"], "--constraint"),
            (["--protocol", "bogus"], "--protocol"),
            (["--threads", "999"], "--threads: 999 is more than the"),
            (["--jobs", "-2"], "--jobs"),
        ],
    ),
    "sensitivity": (
        SENSITIVITY,
        [
            (["--batch-sizes", "0"], "--batch-sizes"),
            (["--batch-sizes", "10", "2000"], "--batch-sizes 2000: more than the 1000"),
            (["--reductions", "bogus"], "--reductions"),
            (["--reductions", "sum", "sum"], "--reductions"),
            (["--methods", "bsgd-wd"], "--methods"),
            (["--runs", "0"], "--runs"),
            (["--threads", "999"], "--threads"),
        ],
    ),
    "train": (
        TRAIN,
        [
            (["--depth", "0"], "--depth"),
            (["--method", "bogus"], "--method"),
            (["--amp", "bogus"], "--amp"),
            (["--batch-size", "100000"], "--batch-size 100000"),
            (["--seed", "-3"], "--seed"),
            (["--retraction", "bogus"], "--retraction bogus"),
        ],
    ),
    "study": (
        STUDY,
        [
            (["--archs", "bogus"], "--archs"),
            (["--archs", "mlp", "mlp"], "--archs mlp mlp"),
            (["--mlp-scale", "bogus"], "--mlp-scale"),
            (["--optimizers", "rmsprop"], "--optimizers"),
            (["--optimizers", "adam", "adam"], "--optimizers adam adam"),
            (["--segnet-seeds", "0"], "--segnet-seeds"),
            (["--segnet-seeds", "1"], "--segnet-seeds 1"),
            (["--protocol", "bogus"], "--protocol"),
            (["--jobs", "0"], "--jobs"),
            (["--threads", "999"], "--threads"),
            (["--source", "embedded", "--data-dir", "{tmp}"], "--source embedded --data-dir"),
            (["--device", "bogus"], "--device bogus"),
        ],
    ),
    "study-full": (
        ["reproduce", "study", "--source", "embedded", "--archs", "mlp"],
        [([], "--archs mlp: the study's mlp protocol needs more training images")],
    ),
    "symmetry": (
        SYMMETRY,
        [
            (["--depth", "0"], "--depth"),
            (["--seed", "-1"], "--seed"),
            (["--steps", "0"], "--steps"),
            (["--copies", "1"], "--copies 1"),
            (["--lr", "0"], "--lr"),
            (["--batch-size", "1"], "--batch-size 1: BatchNorm"),
            (["--batch-size", "20000"], "--batch-size 20000: more than the 10000"),
            (["--train-images", "100", "--batch-size", "200"], "--batch-size 200"),
            (["--alpha-spread", "0.5"], "--alpha-spread"),
            (["--alpha-spread", "inf"], "--alpha-spread"),
            (["--check-batch", "1"], "--check-batch 1"),
            (["--check-batch", "70000"], "--check-batch 70000"),
            (["--train-images", "0"], "--train-images"),
            (["--train-images", "70000"], "--train-images 70000"),
            (["--bn-eps", "0"], "--bn-eps"),
            (["--bn-eps", "-1e-5"], "--bn-eps"),
            (["--dtype", "float16"], "--dtype"),
            (["--source", "bogus"], "--source"),
            (["--threads", "999"], "--threads"),
        ],
    ),
    "segment": (
        SEGMENT,
        [
            (["--model", "unet"], "--model"),
            (["--data", "bogus"], "data="),
            (["--data", "camvid:{tmp}/nowhere"], "--data camvid:"),
            (["--method", "sgd"], "--method"),
            (["--epochs", "0"], "--epochs"),
            (["--width", "0"], "--width"),
            (["--depth", "0"], "--depth"),
            (["--depth", "9"], "--canvas 64: too small"),
            (["--model", "segnet", "--depth", "6"], "--model segnet --depth 6"),
            (["--kernel", "4"], "--kernel 4"),
            (["--canvas", "8"], "--canvas 8"),
            (["--canvas", "28", "--depth", "5"], "--canvas 28: too small"),
            (["--batch-size", "0"], "--batch-size"),
            (["--batch-size", "17"], "--batch-size 17: more than the 16 scenes"),
            (["--batch-size", "14", "--lr", "0.1", "0.01"], "--batch-size 14: more than the 13"),
            (["--lr", "0"], "--lr"),
            (["--lr", "0.1", "0.1"], "--lr"),
            (["--momentum", "1.5"], "--momentum"),
            (["--momentum", "-0.1"], "--momentum"),
            (["--weight-decay", "-1"], "--weight-decay"),
            (["--class-weights", "bogus"], "--class-weights"),
            (["--seed", "-1"], "--seed"),
            (["--seed", "1", "1"], "--seed"),
            (["--door", "bogus"], "--door"),
            (["--door", "pymanopt", "--resume"], "--resume: --door pymanopt"),
            (["--amp", "fp8"], "--amp"),
            (["--threads", "999"], "--threads"),
            (["--train-scenes", "0"], "--train-scenes"),
            (["--test-scenes", "0"], "--test-scenes"),
            (["--data-seed", "-1"], "--data-seed"),
            (["--data-dir", "{tmp}/nowhere"], "--data-dir"),
            (["--size", "10", "10"], "--size 10 10"),
            (["--size", "0", "10"], "--size"),
            (["--holdout", "1.5", "--lr", "0.1", "0.01"], "--holdout"),
            (["--holdout", "0", "--lr", "0.1", "0.01"], "--holdout"),
            (["--holdout", "0.01", "--lr", "0.1", "0.01"], "--holdout 0.01: holds out 0"),
            (["--selection-epochs", "0"], "--selection-epochs"),
        ],
    ),
    "bench": (
        BENCH,
        [
            (["--sizes", "8x16", "8x16"], "--sizes"),
            (["--sizes", "0x16"], "--sizes 0x16"),
            (["--dtypes", "float16"], "--dtypes"),
            (["--dtypes", "float32", "float32"], "--dtypes"),
            (["--steps", "-1"], "--steps"),
            (["--drift-sizes", "x"], "--drift-sizes x"),
            (["--order-size", "8"], "--order-size 8"),
            (["--manifolds", "sphere"], "--manifolds"),
            (["--manifolds", "oblique", "oblique"], "--manifolds"),
            (["--budget", "0"], "--budget"),
            (["--archbn-runs", "0"], "--archbn-runs"),
            (["--archbn", "--data-dir", "{tmp}/nowhere"], "--data-dir"),
            (["--seed", "-1"], "--seed"),
            (["--threads", "999"], "--threads"),
            (["--device", "bogus"], "--device bogus"),
        ],
    ),
    "byom": (
        BYOM,
        [
            (["--archs", "bogus"], "--archs"),
            (["--archs", "convnext", "convnext"], "--archs"),
            (["--methods", "bsgd-wd"], "--methods"),
            (["--methods", "un", "un"], "--methods"),
            (["--seeds", "0"], "--seeds"),
            (["--epochs", "0"], "--epochs"),
            (["--width", "6"], "--width 6"),
            (["--train-images", "0"], "--train-images"),
            (["--train-images", "70000"], "--train-images 70000"),
            (["--validation-images", "0"], "--validation-images"),
            (["--test-images", "0"], "--test-images"),
            (["--test-images", "99999999"], "--test-images 99999999"),
            (["--lr-candidates", "0"], "--lr-candidates"),
            (["--lr-candidates", "0.1", "0.1"], "--lr-candidates"),
            (["--lr-candidates", "0.1", "--lr-extend", "1"], "--lr-extend 1"),
            (["--lr-extend", "-1"], "--lr-extend"),
            (["--schedule", "bogus"], "--schedule"),
            (["--batch-size", "0"], "--batch-size"),
            (["--source", "bogus"], "--source"),
            (["--jobs", "0"], "--jobs"),
            (["--threads", "999"], "--threads"),
        ],
    ),
    "demo": (DEMO, [(["--seed", "-1"], "--seed"), (["--device", "bogus"], "--device bogus")]),
}
CASES += [
    pytest.param(
        f"{command}{' '.join(extra)}",
        base + extra + ([] if command == "demo" else ["--out", "{out}"]),
        {},
        names,
        id=f"{command}{'-'.join([''] + extra)}",
    )
    for command, (base, bad) in BAD_OPTIONS.items()
    for extra, names in bad
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


@pytest.mark.parametrize(
    ("jobs", "threads", "local", "expected", "notice"),
    [
        (None, 1, 1, 4, False),  # as many as fit
        (3, 1, 1, 3, False),
        (999, 1, 1, 4, True),
        (4, 2, 1, 2, True),  # workers x threads never outnumber the cores
        (None, 4, 1, 1, False),
        (None, 1, 2, 2, False),  # two torchrun processes on this host share its cores
        (3, 1, 2, 2, True),
    ],
)
def test_jobs_are_capped_at_the_cores_with_a_one_line_notice(
    jobs, threads, local, expected, notice, monkeypatch, capsys
):
    from riemann_dnn.cli import options

    monkeypatch.setattr(options, "available_cores", lambda: 4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    assert options.check_jobs(jobs, threads) == expected
    err = capsys.readouterr().err
    if notice:
        assert err.count("\n") == 1 and f"--jobs {jobs} capped at {expected} (4 CPU" in err, err
    else:
        assert err == ""


def test_threads_above_the_cores_are_refused_and_at_most_them_accepted(monkeypatch):
    from riemann_dnn.cli import options

    monkeypatch.setattr(options, "available_cores", lambda: 3)
    parser = options.Parser(prog="p")
    options.add_threads(parser)
    assert parser.parse_args(["--threads", "3"]).threads == 3
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--threads", "4"])
    assert info.value.code == 2
