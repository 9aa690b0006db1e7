"""Table 2 summary, significance test and report files."""

import json
import math
import statistics

import pytest
from scipy import stats

from riemann_dnn.experiments.records import read_json
from riemann_dnn.experiments.stats import welch_t_test
from riemann_dnn.experiments.table2_report import PAPER_TABLE2, summarize, write_report


def _record(depth, method, seed, error):
    return {
        "config": {"depth": depth, "method": method, "seed": seed},
        "test_error": error,
        "chosen_lr": 0.01,
        "epochs": 30,
        "stop_reason": "validation_error_flat",
        "epoch_seconds": [2.0, 2.0],
        "ensemble_size": 2,
        "curves": {"val_error": [0.05, 0.03, 0.02]},
    }


RECORDS = [_record(2, "un", s, e) for s, e in enumerate([0.020, 0.018, 0.019])] + [
    _record(2, "bsgd", s, e) for s, e in enumerate([0.022, 0.024, 0.021])
]


def test_summary_means_stds_and_welch_test():
    summary = summarize(RECORDS)
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["un"]["mean"] == pytest.approx(0.019)
    assert rows["un"]["std"] == pytest.approx(statistics.stdev([0.020, 0.018, 0.019]))
    assert (rows["un"]["paper_mean"], rows["un"]["paper_std"]) == PAPER_TABLE2[(2, "un")]
    expected = stats.ttest_ind([0.020, 0.018, 0.019], [0.022, 0.024, 0.021], equal_var=False)
    test = summary["un_vs_bsgd"]["2"]
    assert test["p_value"] == pytest.approx(expected.pvalue)
    assert test["mean_difference_un_minus_bsgd"] == pytest.approx(0.019 - 0.022 - 1e-3 / 3)
    assert test["epoch_time_ratio_un_over_bsgd"] == pytest.approx(1.0)


def test_welch_needs_two_runs_per_side():
    result = welch_t_test([0.1], [0.2, 0.3])
    assert math.isnan(result["p_value"]) and math.isnan(result["t"]), result


def test_report_files(tmp_path):
    summary = summarize(RECORDS)
    write_report(summary, RECORDS, tmp_path)
    assert read_json(tmp_path / "table2.json") == summary
    markdown = (tmp_path / "table2.md").read_text()
    assert "0.0199 ± 0.0046" in markdown  # the paper's UN depth-2 cell beside ours
    assert "p-value" in markdown
    assert (tmp_path / "table2.png").stat().st_size > 10_000


def test_report_json_is_strict_when_the_t_test_is_undefined(tmp_path):
    """One run per side: t and p are NaN; table2.json holds them as "nan" (strict JSON) and
    read_json gives NaN back."""
    records = [RECORDS[0], RECORDS[3]]
    write_report(summarize(records), records, tmp_path)
    text = (tmp_path / "table2.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict token {name}"))
    test = read_json(tmp_path / "table2.json")["un_vs_bsgd"]["2"]
    assert math.isnan(test["t"]) and math.isnan(test["p_value"]), test
