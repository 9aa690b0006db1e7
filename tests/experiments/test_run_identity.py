"""Run identity: records named by the hash of what determines their numbers, never overwritten
by another protocol, and the same numbers however the runs are scheduled."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from riemann_dnn.cli.main import main
from riemann_dnn.experiments.config import RunConfig, quick_protocol
from riemann_dnn.experiments.records import read_json
from riemann_dnn.experiments.runs import run_path
from riemann_dnn.experiments.table2 import TableMismatchError, reproduce_table2

TINY = quick_protocol(selection_epochs=1, min_epochs=1, max_epochs=2)
TINY_CLI = [
    "--source",
    "embedded",
    "--selection-epochs",
    "1",
    "--min-epochs",
    "1",
    "--max-epochs",
    "2",
]


def _records(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    }


def test_run_hash_covers_what_determines_the_numbers():
    base = RunConfig(depth=2, method="un", seed=0, protocol=TINY, data="x", data_checksum="a")
    changed = [
        replace(base, protocol=replace(TINY, max_epochs=3)),
        replace(base, seed=1),
        replace(base, method="bsgd"),
        replace(base, constraint="stiefel"),
        replace(base, retraction="exp"),
        replace(base, data_checksum="b"),
        replace(base, data="y"),
        replace(base, dtype="float64"),
        replace(base, threads=2),
        replace(base, device="cuda"),
        replace(base, world_size=2),
    ]
    hashes = {c.run_hash for c in changed}
    assert len(hashes) == len(changed) and base.run_hash not in hashes
    assert replace(base, rank=3).run_hash == base.run_hash, "the rank is not part of a run"
    path = run_path(Path("out"), base)
    assert path.name == f"depth2-un-seed0-{base.run_hash[:12]}.json", path
    assert base.to_json()["run_hash"] == base.run_hash
    assert (base.to_json()["world_size"], base.to_json()["rank"]) == (1, 0)


def test_run_hash_changes_with_how_a_method_trains(monkeypatch):
    """A method whose optimizer, momentum, rate scale or weight-decay grid changes gets new
    run hashes, so no record of its old definition is reused; the hashes of methods with
    the default settings (every record from before those settings) do not move."""
    from riemann_dnn.experiments import methods

    base = RunConfig(depth=2, method="radam", seed=0, protocol=TINY)
    before = base.run_hash
    legacy = RunConfig(depth=2, method="un", seed=0, protocol=TINY)
    assert "method_training" not in legacy.to_json()
    for change in ({"lr_scale": 1.0}, {"momentum": 0.5}, {"weight_decays": (0.1,)}):
        edited = replace(methods.METHODS["radam"], **change)
        monkeypatch.setitem(methods.METHODS, "radam", edited)
        assert base.run_hash != before, change
        monkeypatch.undo()
    assert base.run_hash == before


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished table (2 runs of UN and B-SGD, depth 2) computed in this process."""
    out = tmp_path_factory.mktemp("table2")
    summary = reproduce_table2(
        out,
        depths=[2],
        methods=["un", "bsgd"],
        runs=2,
        protocol=TINY,
        source="embedded",
        jobs=1,
        threads=1,
        progress=False,
    )
    return out, summary


def test_records_carry_identity_and_world_size(finished):
    out, summary = finished
    records = _records(out)
    assert len(records) == 4
    for name, record in records.items():
        config = record["config"]
        assert name.endswith(f"-{config['run_hash'][:12]}.json"), name
        assert (config["world_size"], config["rank"], config["threads"]) == (1, 0, 1)
        assert len(config["data_checksum"]) == 64 and config["dtype"] == "float32"
    table = read_json(out / "table2.json")
    assert table["world_size"] == 1 and table["identity"]["threads"] == 1
    assert summary["grid"] == {"depths": [2], "methods": ["un", "bsgd"], "runs": 2, "seed": 0}


def test_jobs_do_not_change_the_numbers(finished, tmp_path, capsys):
    """jobs=2 (worker processes) gives bit-identical records to jobs=1 (in process)."""
    out, _ = finished
    reproduce_table2(
        tmp_path,
        depths=[2],
        methods=["un", "bsgd"],
        runs=2,
        protocol=TINY,
        source="embedded",
        jobs=2,
        threads=1,
        progress=True,
    )
    bars = capsys.readouterr().err
    assert "100%" in bars.split("\r")[-1], f"the bar should end at 100 %: {bars[-300:]!r}"
    one, two = _records(out), _records(tmp_path)
    assert one.keys() == two.keys()
    for name in one:
        for key in ("test_error", "curves", "selection", "chosen_lr", "epochs", "config"):
            assert one[name][key] == two[name][key], f"{name}: {key} differs"


def test_another_protocol_never_overwrites_a_finished_table(finished, capsys):
    """The issue's command on a finished directory: refused before any training, in one
    line naming the difference; nothing in the directory changes."""
    out, _ = finished
    before = _snapshot(out)
    with pytest.raises(TableMismatchError, match="max_epochs: 2 there, 3 here"):
        reproduce_table2(
            out,
            depths=[2],
            methods=["un"],
            runs=1,
            source="embedded",
            protocol=replace(TINY, max_epochs=3),
            jobs=1,
            progress=False,
        )
    code = main(
        [
            "reproduce",
            "table2",
            "--runs",
            "1",
            "--depths",
            "2",
            "--methods",
            "un",
            "--min-epochs",
            "1",
            "--max-epochs",
            "3",
            "--selection-epochs",
            "1",
            "--source",
            "embedded",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--out" in err and "max_epochs" in err, err
    assert _snapshot(out) == before


def test_resume_reuses_only_records_of_the_same_hash(finished, tmp_path):
    out, _ = finished
    target = tmp_path / "resume"
    (target / "runs").mkdir(parents=True)
    for path in (out / "runs").glob("*.json"):
        (target / "runs" / path.name).write_text(path.read_text())
    before = _snapshot(target / "runs")
    reproduce_table2(
        target,
        depths=[2],
        methods=["un", "bsgd"],
        runs=2,
        protocol=TINY,
        source="embedded",
        jobs=1,
        progress=False,
    )
    assert _snapshot(target / "runs") == before, "finished records must be reused as they are"
    reproduce_table2(
        target / "threads2",
        depths=[2],
        methods=["un"],
        runs=1,
        protocol=TINY,
        source="embedded",
        jobs=1,
        threads=2,
        progress=False,
    )
    (record,) = _records(target / "threads2").values()
    assert record["config"]["threads"] == 2 and record["torch_threads"] == 2


def test_quick_and_full_default_to_different_directories(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "reproduce",
                "table2",
                "--quick",
                "--runs",
                "1",
                "--depths",
                "2",
                "--methods",
                "bsgd",
                "--jobs",
                "1",
                *TINY_CLI,
            ]
        )
        == 0
    )
    assert (tmp_path / "results" / "table2-quick" / "table2.json").exists()
    assert not (tmp_path / "results" / "table2").exists()
    assert "Table 2 reproduction" in capsys.readouterr().out


def test_train_archbn_report_says_what_ran(tmp_path, capsys):
    assert (
        main(["train", "archbn", "--method", "bsgd", "--quick", *TINY_CLI, "--out", str(tmp_path)])
        == 0
    )
    markdown = (tmp_path / "run.md").read_text()
    assert markdown.startswith(
        "# ArchBN depth 2, B-SGD: one run (seed 0) of the custom protocol"
    ), markdown[:200]
    assert "Data: `embedded`" in markdown and "`?`" not in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| 2 | B-SGD"))
    assert "± 0.0000" not in row, row
    # the same command again reuses the run; another protocol is refused
    assert (
        main(["train", "archbn", "--method", "bsgd", "--quick", *TINY_CLI, "--out", str(tmp_path)])
        == 0
    )
    assert "not retrained" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "archbn",
                "--method",
                "bsgd",
                "--quick",
                "--source",
                "embedded",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )


def test_sensitivity_report_names_its_protocol_and_grid(tmp_path):
    from riemann_dnn.experiments.sensitivity import batch_reduction_study

    result = batch_reduction_study(
        tmp_path,
        batch_sizes=[100],
        reductions=["sum"],
        depths=[2],
        methods=["bsgd"],
        runs=1,
        protocol=TINY,
        source="embedded",
        jobs=1,
        progress=False,
    )
    markdown = (tmp_path / "sensitivity.md").read_text()
    assert "Full protocol" not in markdown and "Custom protocol" in markdown, markdown
    assert "Grid: batch sizes [100] × reductions ['sum']" in markdown, markdown
    assert "Data: `embedded`" in markdown and result["quick"] is False
    assert read_json(tmp_path / "sensitivity.json")["cells"] == result["cells"]
    assert (tmp_path / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = _snapshot(tmp_path)
    with pytest.raises(TableMismatchError, match="max_epochs: 2 there, 3 here"):
        batch_reduction_study(
            tmp_path,
            batch_sizes=[100],
            reductions=["sum"],
            depths=[2],
            methods=["bsgd"],
            runs=1,
            protocol=replace(TINY, max_epochs=3),
            source="embedded",
            jobs=1,
            progress=False,
        )
    assert _snapshot(tmp_path) == before
