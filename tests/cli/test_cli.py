"""The riemann-dnn command line: help, version, demo, reproduce/train on real digits, errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from riemann_dnn import __version__
from riemann_dnn.cli.main import main
from riemann_dnn.experiments.records import read_json

REPO = Path(__file__).resolve().parents[2]


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("reproduce", "train", "demo"):
        assert command in out


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "riemann_dnn.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "riemann-dnn" in result.stdout


def test_installed_console_script_runs(tmp_path):
    """The ``riemann-dnn`` script next to the interpreter (what ``pip install`` made), run on
    this checkout's code (PYTHONPATH first), refuses a bad input in one line with exit 2."""
    script = Path(sys.executable).parent / (
        "riemann-dnn.exe" if os.name == "nt" else "riemann-dnn"
    )
    if not script.exists():
        pytest.skip(f"no console script at {script} (package not installed in this env)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, env=env, timeout=120
    )
    assert version.returncode == 0 and __version__ in version.stdout, version
    refused = subprocess.run(
        [str(script), "reproduce", "table2", "--jobs", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert refused.returncode == 2, refused
    assert refused.stderr.count("\n") == 1 and "--jobs" in refused.stderr, refused.stderr


def test_demo_solves_the_product_problem(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    cost = float(out.split("cost:")[1].split()[0])
    assert cost < 1e-12, out


def test_reproduce_table2_quick_writes_its_files(tmp_path, capsys):
    code = main(
        [
            "reproduce",
            "table2",
            "--quick",
            "--runs",
            "2",
            "--depths",
            "2",
            "--methods",
            "un",
            "bsgd",
            "--source",
            "embedded",
            "--jobs",
            "1",
            "--selection-epochs",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    summary = read_json(tmp_path / "table2.json")
    assert {(r["depth"], r["method"]) for r in summary["rows"]} == {(2, "un"), (2, "bsgd")}
    assert all(r["mean"] < 0.5 for r in summary["rows"]), summary["rows"]
    assert "2" in summary["un_vs_bsgd"]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4
    assert (tmp_path / "table2.png").exists()
    assert "| 2 | UN |" in capsys.readouterr().out


def test_train_archbn_writes_one_run(tmp_path):
    code = main(
        [
            "train",
            "archbn",
            "--depth",
            "2",
            "--method",
            "bsgd",
            "--quick",
            "--source",
            "embedded",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    record = read_json(tmp_path / "run.json")
    assert record["config"]["method"] == "bsgd" and record["test_error"] < 0.5
    assert (tmp_path / "run.md").exists() and (tmp_path / "run.png").exists()


def test_missing_data_is_one_clear_message(tmp_path, capsys):
    code = main(
        ["train", "archbn", "--source", "full", "--data-dir", str(tmp_path / "none"), "--quick"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "MNIST" in err and "Traceback" not in err


def test_bad_options_are_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "table2", "--methods", "no-such-method"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "table2", "--runs", "0", "--source", "embedded"])
    assert exit_info.value.code == 2
    assert "--runs: must be >= 1, got 0" in capsys.readouterr().err
