import json
import math

import pytest

from riemann_dnn.experiments.records import figure, read_json, strict, write_json, write_text


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
