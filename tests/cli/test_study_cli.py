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
