r"""Paired statistics for comparing two methods run on the same seeds (numpy/scipy).

For paired samples :math:`a_i, b_i` (method A and method B on seed :math:`i`), with
differences :math:`d_i = a_i - b_i`:

- the mean difference :math:`\bar d` and its 95 % percentile bootstrap interval (resampling
  the seeds with replacement, ``resamples`` times, from a seeded generator);
- the paired t-test (``scipy.stats.ttest_rel``) and the Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon``; p = 1 when every difference is 0, where scipy gives none);
- :func:`holm`: Holm's step-down correction of a family of p-values.

Example::

    >>> r = paired_comparison([0.020, 0.022, 0.019], [0.021, 0.024, 0.020])
    >>> round(r["mean_diff"], 4)
    -0.0013
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["paired_comparison", "bootstrap_ci", "holm", "welch_t_test"]


def bootstrap_ci(
    diffs: Sequence[float], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (seeds resampled with
    replacement)."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    test_size: int | None = 10_000,
) -> dict[str, float]:
    """Compare paired samples ``a`` and ``b`` (same length, entry ``i`` from seed ``i``).

    Returns ``n``, ``mean_a``, ``mean_b``, ``mean_diff`` (mean of ``a - b``), ``ci_low``,
    ``ci_high`` (95 % bootstrap), ``t``, ``p_paired`` (paired t-test, two-sided),
    ``p_wilcoxon`` (signed-rank, two-sided) and ``effect_images`` (``mean_diff`` times
    ``test_size``, e.g. test images out of 10,000; ``None`` without a test size).
    """
    from scipy import stats

    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(
            f"paired_comparison: a and b must be paired 1-d samples of one length, "
            f"got shapes {a_arr.shape} and {b_arr.shape}"
        )
    d = a_arr - b_arr
    n = int(d.size)
    low, high = bootstrap_ci(d, resamples=resamples, seed=seed)
    t, p_paired = math.nan, math.nan
    if n >= 2:
        if np.all(d == d[0]):  # no spread: t undefined; identical samples differ by nothing
            p_paired = 1.0 if d[0] == 0 else 0.0
        else:
            result = stats.ttest_rel(a_arr, b_arr)
            t, p_paired = float(result.statistic), float(result.pvalue)
    if n == 0:
        p_wilcoxon = math.nan
    elif np.all(d == 0):
        p_wilcoxon = 1.0
    else:
        p_wilcoxon = float(stats.wilcoxon(a_arr, b_arr).pvalue)
    mean_diff = float(d.mean()) if n else math.nan
    return {
        "n": n,
        "mean_a": float(a_arr.mean()) if n else math.nan,
        "mean_b": float(b_arr.mean()) if n else math.nan,
        "mean_diff": mean_diff,
        "ci_low": low,
        "ci_high": high,
        "t": t,
        "p_paired": p_paired,
        "p_wilcoxon": p_wilcoxon,
        "effect_images": None if test_size is None else mean_diff * test_size,
    }


def holm(p_values: Sequence[float]) -> list[float]:
    r"""Holm's step-down adjusted p-values: sort :math:`p_{(1)} \le \dots \le p_{(m)}`, set
    :math:`\tilde p_{(k)} = \max_{j \le k} \min(1, (m - j + 1)\,p_{(j)})`, return them in the
    input order. NaN p-values are left NaN and do not count towards :math:`m`."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def welch_t_test(a: list[float], b: list[float]) -> dict[str, float]:
    """Welch's unequal-variance t-test of mean(a) vs mean(b) (two-sided p-value)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return {"t": math.nan, "p_value": math.nan}
    result = stats.ttest_ind(a, b, equal_var=False)
    return {"t": float(result.statistic), "p_value": float(result.pvalue)}
