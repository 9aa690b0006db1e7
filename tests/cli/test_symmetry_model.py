"""``riemann-dnn symmetry --model package.module:factory``: any importable model's symmetries,
weight by weight, and the refusals of bad --model and --input-shape values."""

from __future__ import annotations

import json
import textwrap

import pytest

from riemann_dnn.cli.main import main

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build():
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.GroupNorm(4, 8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 3),
        )


    NOT_A_MODEL = 3


    def not_a_module():
        return 3
    """
)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A module outside the repository, importable as ``user_models``."""
    (tmp_path / "user_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_models"


@pytest.mark.parametrize("shape", [None, "2,3,16,16"])
def test_model_table_is_printed_and_written(factory_module, tmp_path, capsys, shape):
    out = tmp_path / "out"
    argv = ["symmetry", "--model", f"{factory_module}:build", "--out", str(out)]
    argv += [] if shape is None else ["--input-shape", shape]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| 0.weight | 8x3x3x3 | group (4) | oblique:groups=4 | 0 -> 1 (group_norm) |" in printed
    assert "| 3.weight | 8x8x3x3 | filter | oblique | 3 -> 4 (batch_norm) |" in printed
    record = json.loads((out / "explain.json").read_text())
    kinds = {row["name"]: row["kind"] for row in record["weights"]}
    assert kinds == {"0.weight": "group", "3.weight": "filter", "8.weight": "none"}
    assert record["meta"]["input_shapes"] == [[2, 3, 16, 16] if shape else [4, 3, 32, 32]]
    assert "# Symmetries of `user_models:build`" in (out / "explain.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "user_models"], "is not 'package.module:factory'"),
        (["--model", "no_such_package_xyz:build"], "cannot import 'no_such_package_xyz'"),
        (["--model", "user_models:nope"], "has no attribute 'nope'"),
        (["--model", "user_models:NOT_A_MODEL"], "not a callable"),
        (["--model", "user_models:not_a_module"], "not a torch.nn.Module"),
        (["--model", "user_models:build", "--input-shape", "2,5,16,16"], "does not run on"),
        (["--model", "user_models:build", "--input-shape", "2,x"], "--input-shape"),
        (["--model", "user_models:build", "--input-shape", "2,0,3"], "must be >= 1"),
        (["--input-shape", "2,3,16,16"], "only with --model"),
    ],
)
def test_bad_model_options_are_refused_in_one_line(
    factory_module, tmp_path, capsys, argv, message
):
    try:
        code = main(["symmetry", *argv, "--out", str(tmp_path / "out")])
    except SystemExit as exit_:  # argparse's refusals
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "explain.json").exists()
