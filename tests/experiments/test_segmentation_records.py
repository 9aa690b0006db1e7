"""Segmentation writes every JSON, Markdown and PNG through experiments.records: strict JSON
(non-finite floats as strings that read_json reads back), atomic text, headless figures."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pytest

import riemann_dnn.experiments.segmentation as segmentation
from riemann_dnn.data import load_digit_scenes
from riemann_dnn.experiments.records import figure, read_json
from riemann_dnn.experiments.segmentation import (
    SegmentationConfig,
    train_segmentation,
    write_run_report,
)

MINI = dict(width=4, kernel=3, batch_size=16, lr=0.1, train_scenes=48, test_scenes=16)


@pytest.fixture(scope="module")
def tiny():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_digit_scenes(train_scenes=48, test_scenes=16, seed=0, source="embedded")


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_run_records_are_strict_and_read_back(tmp_path, tiny):
    result = train_segmentation(
        SegmentationConfig(epochs=1, **MINI), tmp_path, data=tiny, progress=False
    )
    path = tmp_path / "metrics.json"
    assert _strict(path.read_text()) == read_json(path)
    for key in ("global_accuracy", "class_accuracy", "mean_iou", "confusion"):
        assert read_json(path)["final"][key] == result.record["final"][key], key
    assert (tmp_path / "predictions.png").stat().st_size > 0
    # a non-finite metric is written as a string and comes back as a float
    record = json.loads(json.dumps(result.record))
    record["final"]["mean_iou"] = float("nan")
    out = tmp_path / "again"
    out.mkdir()
    write_run_report(record, result.model, tiny[1], out, figure_images=0)
    assert _strict((out / "metrics.json").read_text())["final"]["mean_iou"] == "nan"
    assert math.isnan(read_json(out / "metrics.json")["final"]["mean_iou"])
    assert "| mIoU | — |" in (out / "metrics.md").read_text()
    assert not list(out.glob(".*tmp*")), "a temporary file was left behind"


def test_the_package_writes_files_only_through_records():
    package = Path(segmentation.__file__).parent
    pattern = re.compile(r"matplotlib\.use\(|json\.dumps?\(|\.write_text\(|\.savefig\(|open\(")
    hits = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(package.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits


def test_the_figure_helper_leaves_the_rect_it_is_given_for_a_legend(tmp_path):
    with figure(tmp_path / "f.png", 2, 2, figsize=(4, 4), rect=(0, 0.2, 1, 1)) as (fig, axes):
        fig.legend(handles=[], loc="lower center")
    assert min(ax.get_position().y0 for ax in axes.flat) >= 0.2
    assert (tmp_path / "f.png").stat().st_size > 0
