"""``--constraint`` takes its names from the manifold registry (riemann_dnn.params), and
``bench retractions --manifolds`` from the bench's own registry; a wrong name is one line."""

from __future__ import annotations

import pytest

from riemann_dnn.cli.main import main
from riemann_dnn.cli.reproduce import constraint_names
from riemann_dnn.experiments.retractions import RETRACTIONS
from riemann_dnn.params import MANIFOLD_NAMES


def test_constraint_names_are_the_registry_without_euclidean():
    assert constraint_names() == [n for n in MANIFOLD_NAMES if n != "euclidean"]
    assert {"oblique", "sphere", "stiefel", "grassmann"} <= set(constraint_names())


@pytest.mark.parametrize("command", [["reproduce", "table2"], ["train", "archbn"]])
@pytest.mark.parametrize("name", ["euclidean", "torus"])
def test_a_constraint_outside_the_registry_is_one_line(command, name, capsys, tmp_path):
    code = main([*command, "--constraint", name, "--source", "embedded", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--constraint {name}" in err and ", ".join(constraint_names()) in err
    assert not list(tmp_path.iterdir()), "refused before any work"


def test_bench_manifolds_come_from_the_bench_registry(capsys, tmp_path):
    code = main(["bench", "retractions", "--manifolds", "sphere", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert ", ".join(RETRACTIONS) in err
