"""Confidence intervals use Student's t with the right degrees of freedom: the t quantile (written from its
definition in stats.py) against a printed table and scipy, and the intervals the report and gate quote."""

import math

import pytest

from optkit import stats

# two-sided 95% (p = 0.975) critical values of Student's t, as printed in statistics tables
TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042, 60: 2.000, 120: 1.980}


def test_t95_matches_the_printed_table():
    for df, value in TABLE.items():
        assert stats.t95(df) == pytest.approx(value, abs=6e-4), df
    assert stats.t95(10**6) == pytest.approx(1.96, abs=1e-3)  # the normal limit


def test_t_quantile_matches_scipy():
    scipy_t = pytest.importorskip("scipy.stats").t
    for df in [*range(1, 31), 60, 120, 0.5, 2.5, 1000]:
        for p in (0.5, 0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.025, 1e-6):
            assert stats.t_quantile(p, df) == pytest.approx(scipy_t.ppf(p, df), rel=1e-8, abs=1e-10), (p, df)


def test_paired_intervals_use_t_with_n_minus_1_df():
    ref = [2.0 + 0.01 * i for i in range(16)]
    new = [r + 0.02 + (0.03 if i % 2 else -0.03) for i, r in enumerate(ref)]
    diffs = [b - a for a, b in zip(ref, new)]
    mean = sum(diffs) / 16
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 15 / 16)
    lo, hi = stats.paired_ratio_ci(ref, new)
    assert lo == pytest.approx(math.exp(mean - 2.131449546 * se) - 1, rel=1e-9)  # t(15), not 1.96
    assert hi == pytest.approx(math.exp(mean + 2.131449546 * se) - 1, rel=1e-9)
    m, lo, hi = stats.paired_mean_ci(ref[:5], new[:5])
    d5 = diffs[:5]
    se5 = math.sqrt(sum((d - sum(d5) / 5) ** 2 for d in d5) / 4 / 5)
    assert hi - m == pytest.approx(2.776445105 * se5, rel=1e-9)  # t(4)
    assert stats.paired_mean_ci([1.0], [2.0]) == (1.0, 1.0, 1.0)  # one sample: no interval to speak of


def test_bad_arguments_are_refused():
    for p, df in ((0, 3), (1, 3), (0.5, 0), (float("nan"), 3)):
        with pytest.raises(ValueError):
            stats.t_quantile(p, df)
