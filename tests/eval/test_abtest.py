"""The A/B statistics against known values (textbook cases and scipy's own tests)."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from hangjia.eval.abtest import mean_interval, two_proportions, welch, wilson, wins


def test_wilson_interval_matches_the_textbook():
    # Newcombe (1998), Statistics in Medicine 17: 81/263 → 0.2553 to 0.3662.
    interval = wilson(81, 263)
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.2553, 0.3662)
    assert wilson(0, 10).low == 0.0 and wilson(0, 10).high > 0.25  # no successes still leaves room
    assert wilson(0, 0).value is None


def test_two_proportions_is_the_uncorrected_chi_square():
    table = [[45, 55], [30, 70]]
    chi2 = stats.chi2_contingency(table, correction=False)
    assert two_proportions(45, 100, 30, 100) == pytest.approx(chi2.pvalue, rel=1e-9)
    assert two_proportions(5, 10, 5, 10) == pytest.approx(1.0)
    assert two_proportions(0, 10, 0, 10) is None and two_proportions(1, 0, 1, 5) is None


def test_welch_and_the_mean_interval():
    a, b = [5, 4, 5, 5, 4, 5, 3, 5], [2, 3, 2, 1, 3, 2, 2, 3]
    assert welch(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch(a, b) < 0.001 and welch(a, a) == pytest.approx(1.0)
    interval = mean_interval([4, 5, 3, 4, 4])
    half = stats.t.ppf(0.975, 4) * math.sqrt(0.5) / math.sqrt(5)
    assert interval.value == 4 and interval.low == pytest.approx(4 - half) and interval.high == pytest.approx(4 + half)


def test_head_to_head_wins_by_the_exact_binomial():
    assert wins(15, 20) == pytest.approx(0.04138946533203125)  # 2 × P(X ≥ 15), X ~ Bin(20, 0.5)
    assert wins(10, 20) == pytest.approx(1.0) and wins(0, 0) is None
