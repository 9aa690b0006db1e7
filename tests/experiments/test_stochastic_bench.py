"""``riemann-dnn bench stochastic``: the files it writes, paired seeds and deterministic output
(timings aside), the step-size rule, and its refusals (one line, exit 2, before any work)."""

from __future__ import annotations

import json

import pytest
import torch

from riemann_dnn.cli.main import main
from riemann_dnn.experiments.records import read_json
from riemann_dnn.experiments.stochastic import (
    QUICK,
    first_pass_below,
    linear_rate,
    run_stochastic_bench,
    write_stochastic_report,
)

TINY = QUICK.with_options(
    problems=("pca-synthetic", "completion"),
    passes=4.0,
    batch_size=20,
    synthetic={"num_samples": 200, "dim": 8, "rank": 2, "eigengap": 0.5},
    completion={"num_samples": 100, "dim": 20, "rank": 2, "oversampling": 3.0},
    vr_steps=(0.2, 0.5),
    sgd_steps=((0.5, 1.0), (1.0, 1.0)),
)

_TIMINGS = ("solve_time", "wall_seconds")


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in _TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_the_bench_writes_its_files_and_is_deterministic(tmp_path):
    first = run_stochastic_bench(TINY)
    again = run_stochastic_bench(TINY)
    assert _without_timings(first) == _without_timings(again)
    paths = write_stochastic_report(first, tmp_path)
    assert [p.name for p in paths] == ["stochastic.json", "stochastic.md", "stochastic.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    saved = read_json(tmp_path / "stochastic.json")
    assert _without_timings(saved) == json.loads(json.dumps(_without_timings(first)))
    text = (tmp_path / "stochastic.md").read_text()
    assert "## pca-synthetic" in text and "test RMSE" in text and "R-SRG" in text
    synthetic = first["problems"]["pca-synthetic"]
    # each retraction with its natural transport for R-SVRG and R-SRG, R-SGD with polar
    pairs = {(r["solver"], r["retraction"], r["transport"]) for r in synthetic["runs"]}
    assert ("svrg", "exp", "parallel") in pairs and ("srg", "qr", "differentiated") in pairs
    assert {p for p in pairs if p[0] == "sgd"} == {("sgd", "polar", None)}
    # paired seeds: every run of one seed starts from the same point
    starts = {r["gap"][0] for r in synthetic["runs"]}
    assert len(starts) == 1
    # the rule: the lowest final gap (below 1e-12 counts as equal), then the fewest passes
    for solver, chosen in synthetic["chosen_step"].items():
        grid = [r for r in synthetic["selection"] if r["solver"] == solver]
        assert len(grid) == 2
        best = min(
            grid,
            key=lambda r: (max(r["final_gap"], 1e-12), r["passes_to_1e-10"] or float("inf")),
        )
        assert best["step"] == chosen
    completion = first["problems"]["completion"]["runs"]
    assert all(len(r["test_rmse"]) == len(r["passes"]) for r in completion)


def test_rate_and_first_pass_helpers():
    passes = [0.0, 1.0, 2.0, 3.0, 4.0]
    gaps = [1.0, 1e-4, 1e-6, 1e-8, 1e-14]
    assert linear_rate(passes, gaps) == pytest.approx(-2.0)
    assert linear_rate(passes[:3], gaps[:3]) is None
    assert (
        first_pass_below(passes, gaps, 1e-7) == 3.0 and first_pass_below(passes, gaps, 0) is None
    )


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--batch-size", "5000"], "--batch-size 5000: larger than the 2000 samples"),
        (["--seeds", "0", "0"], "--seeds 0 0: 0 is given more than once"),
        (["--device", "tpu"], "--device tpu"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_any_work(tmp_path, capsys, argv, pattern):
    out = tmp_path / "out"
    code = main(["bench", "stochastic", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 or code is None, err
    assert pattern in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--problems", "pca-cifar"], "invalid choice: 'pca-cifar'"),
        (["--passes", "0"], "argument --passes: must be a positive finite number, got 0"),
        (["--transports", "teleport"], "invalid choice: 'teleport'"),
    ],
)
def test_argparse_refusals_exit_2_in_one_line(capsys, argv, pattern):
    with pytest.raises(SystemExit) as raised:
        main(["bench", "stochastic", *argv])
    err = capsys.readouterr().err
    assert raised.value.code == 2 and pattern in err and err.count("\n") == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    assert main(["bench", "stochastic", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err
