"""The study's paired statistics against scipy's and against hand-computed values."""

import math

import numpy as np
import pytest
from scipy import stats

from riemann_dnn.experiments.stats import bootstrap_ci, holm, paired_comparison


def _samples(seed=0, n=12):
    rng = np.random.default_rng(seed)
    a = 0.02 + 0.003 * rng.standard_normal(n)
    return a, a + 0.001 + 0.002 * rng.standard_normal(n)


def test_paired_tests_match_scipy():
    a, b = _samples()
    result = paired_comparison(a, b)
    t = stats.ttest_rel(a, b)
    w = stats.wilcoxon(a, b)
    assert result["n"] == 12
    assert result["t"] == pytest.approx(t.statistic, rel=1e-12)
    assert result["p_paired"] == pytest.approx(t.pvalue, rel=1e-12)
    assert result["p_wilcoxon"] == pytest.approx(w.pvalue, rel=1e-12)
    assert result["mean_diff"] == pytest.approx(float(np.mean(a - b)), abs=1e-15)
    assert result["effect_images"] == pytest.approx(result["mean_diff"] * 10_000)


def test_bootstrap_ci_is_seeded_and_matches_a_direct_resampling():
    a, b = _samples(1)
    d = a - b
    low, high = bootstrap_ci(d, resamples=10_000, seed=3)
    assert (low, high) == bootstrap_ci(d, resamples=10_000, seed=3)
    rng = np.random.default_rng(3)
    means = d[rng.integers(0, d.size, size=(10_000, d.size))].mean(1)
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert low < d.mean() < high
    # against scipy's percentile bootstrap (another generator): the same interval to sampling
    ref = stats.bootstrap(
        (d,), np.mean, n_resamples=10_000, method="percentile", random_state=0
    ).confidence_interval
    width = high - low
    assert abs(low - ref.low) < 0.1 * width and abs(high - ref.high) < 0.1 * width, (
        low,
        high,
        ref,
    )


def test_all_zero_differences_give_p_one_not_an_error():
    a = [0.02, 0.03, 0.025]
    result = paired_comparison(a, list(a))
    assert result["mean_diff"] == 0 and result["p_wilcoxon"] == 1.0
    assert result["p_paired"] == 1.0 and math.isnan(result["t"])
    assert (result["ci_low"], result["ci_high"]) == (0.0, 0.0)


def test_unpaired_shapes_are_rejected():
    with pytest.raises(ValueError, match="paired"):
        paired_comparison([1.0, 2.0], [1.0])


def test_holm_matches_a_hand_example():
    # sorted 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1, kept >= 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.01, float("nan"), 0.02])
    assert (
        math.isnan(adjusted[1])
        and adjusted[0] == pytest.approx(0.02)
        and adjusted[2] == pytest.approx(0.02)
    )
