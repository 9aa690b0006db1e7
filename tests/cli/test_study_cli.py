"""``reproduce study`` and the named protocols of ``reproduce table2`` (parsing only)."""

import pytest

from riemann_dnn.cli.main import build_parser, main
from riemann_dnn.cli.reproduce import _protocol
from riemann_dnn.experiments.config import PROTOCOLS, Protocol, quick_protocol


def test_table2_defaults_stay_the_paper_protocol():
    parser = build_parser()
    assert _protocol(parser.parse_args(["reproduce", "table2"])) == Protocol()
    assert _protocol(parser.parse_args(["reproduce", "table2", "--quick"])) == quick_protocol()
    assert PROTOCOLS["paper-sum"] == Protocol()


def test_table2_takes_the_study_protocol_by_name():
    args = build_parser().parse_args(["reproduce", "table2", "--protocol", "study"])
    protocol = _protocol(args)
    assert protocol.loss_reduction == "mean" and protocol.stop_on_accepted
    assert protocol.lr_candidates == PROTOCOLS["study"].lr_candidates and protocol.lr_extend == 2
    args = build_parser().parse_args(
        ["reproduce", "table2", "--protocol", "study", "--loss-reduction", "sum"]
    )
    assert _protocol(args).loss_reduction == "sum"  # an explicit option overrides the name


def test_study_parses_and_rejects_bad_jobs(capsys):
    args = build_parser().parse_args(
        ["reproduce", "study", "--quick", "--jobs", "2", "--data-dir", "/somewhere", "--out", "x"]
    )
    assert (args.quick, args.jobs, args.threads, args.protocol) == (True, 2, 1, "study")
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "study", "--quick", "--jobs", "0"])
    assert exit_.value.code == 2
    assert "--jobs: must be >= 1, got 0" in capsys.readouterr().err


def test_study_refuses_a_bad_device_data_dir_or_out_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    for option, value, message in (
        ("--device", "nonsense", "--device nonsense: not a torch device"),
        ("--data-dir", str(tmp_path / "missing"), "no MNIST IDX files there"),
    ):
        assert main(["reproduce", "study", "--quick", option, value, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # refused before creating anything
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["reproduce", "study", "--quick", "--out", str(afile)]) == 2
    assert "is a file; give a directory" in capsys.readouterr().err


def test_study_refuses_the_new_arms_without_adamp_in_one_line(tmp_path, capsys, monkeypatch):
    import sys

    out = tmp_path / "out"
    monkeypatch.setitem(sys.modules, "adamp", None)  # import adamp raises ImportError
    for arms in (["momentum"], ["sgd", "adam"]):
        code = main(["reproduce", "study", "--quick", "--optimizers", *arms, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "need the adamp package" in err and 'pip install "riemann-dnn[study]"' in err
        assert f"--optimizers {arms[-1]}" in err
    assert not out.exists()


def test_study_parses_optimizers():
    args = build_parser().parse_args(["reproduce", "study", "--optimizers", "sgd", "adam"])
    assert args.optimizers == ["sgd", "adam"]
    assert build_parser().parse_args(["reproduce", "study"]).optimizers == ["sgd"]


def test_table2_and_segment_refuse_adamp_methods_without_the_package(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "adamp", None)
    for argv in (
        ["reproduce", "table2", "--quick", "--methods", "un", "sgdp"],
        ["segment", "--method", "un", "adamp"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "needs the adamp package" in err, err


def test_study_with_the_new_arms_runs_through_the_cli_and_writes_the_report(
    tmp_path, capsys, monkeypatch
):
    """``reproduce study --quick --optimizers momentum adam`` end to end through ``main``, at a
    tiny scale (the quick plan shrunk; the methods, comparisons and files are the CLI's)."""
    import json
    from dataclasses import replace

    from riemann_dnn.experiments import study

    tiny = replace(
        PROTOCOLS["study"],
        lr_candidates=(1.0, 0.1),
        selection_train=100,
        selection_val=100,
        selection_epochs=1,
        validation=200,
        train_images=200,
        min_epochs=1,
        max_epochs=1,
        lr_extend=0,
        bn_estimate=100,
    )
    monkeypatch.setattr(
        study,
        "_plan",
        lambda quick: study.StudyPlan(mlp_depths=(2,), mlp_seeds=2, mlp_protocol=tiny),
    )
    out = tmp_path / "out"
    argv = ["reproduce", "study", "--quick", "--optimizers", "momentum", "adam"]
    argv += ["--archs", "mlp", "--source", "embedded", "--jobs", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'study.json'}" in printed and "(7 cells, 5 comparisons)" in printed
    result = json.loads((out / "study.json").read_text())
    assert [(c["a"], c["b"]) for c in result["comparisons"]] == [
        ("un-mom", "bsgd-mom"),
        ("un-mom", "sgdp"),
        ("radam", "adam"),
        ("radam", "adamw"),
        ("radam", "adamp"),
    ]
    assert {c["method"] for c in result["cells"]} == {
        "un-mom",
        "bsgd-mom",
        "sgdp",
        "radam",
        "adam",
        "adamw",
        "adamp",
    }
    assert all(c["n"] == 2 for c in result["comparisons"])
    report = (out / "study.md").read_text()
    assert "SGDP, momentum 0.9" in report and "AdamP" in report
    assert (out / "study.png").stat().st_size > 0


def test_study_segnet_seeds_replace_the_cells_seeds(capsys):
    from riemann_dnn.experiments.study import study_plan

    args = build_parser().parse_args(["reproduce", "study", "--segnet-seeds", "4"])
    assert args.segnet_seeds == 4
    assert study_plan(segnet_seeds=4).segnet.seeds == 4
    assert study_plan().segnet.seeds == 8 and study_plan(True).segnet.seeds == 2
    assert study_plan(archs=("mlp",), segnet_seeds=4).segnet is None
    assert main(["reproduce", "study", "--quick", "--segnet-seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        "--segnet-seeds 1: the paired statistics need at least 2" in err
        and len(err.strip().splitlines()) == 1
    ), err
