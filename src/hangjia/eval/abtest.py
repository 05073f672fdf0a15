"""The statistics of an A/B test between two model versions: intervals for each arm, and tests of their difference.

wilson(k, n)                       95% interval of a rate (thumbs up, abstentions): right at small n and near 0 or 1
two_proportions(k1, n1, k2, n2)    z-test of two rates (pooled), two-sided p
mean_interval(xs)                  a mean with its t interval (ratings 1-5)
welch(xs, ys)                      Welch's t-test of two means, two-sided p
wins(k, n)                         preference wins in two-draft comparisons: exact binomial test against 50%
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    value: float | None
    low: float | None
    high: float | None
    n: int

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def wilson(k: int, n: int, z: float = Z95) -> Interval:
    if n == 0:
        return Interval(None, None, None, 0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n)


def two_proportions(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """Two-sided p-value of the pooled z-test that two rates are equal (None when either arm is empty or the pooled
    rate is 0 or 1, where there is no difference to test)."""
    if n1 == 0 or n2 == 0:
        return None
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return None
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (k1 / n1 - k2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def mean_interval(xs: Sequence[float]) -> Interval:
    from scipy import stats

    n = len(xs)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, None, None, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def welch(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    from scipy import stats

    if len(xs) < 2 or len(ys) < 2:
        return None
    result = stats.ttest_ind(xs, ys, equal_var=False)
    p = float(result.pvalue)
    return None if math.isnan(p) else p  # both arms constant and equal: nothing to test


def wins(k: int, n: int) -> float | None:
    """Two-sided p-value that a version wins k of n head-to-head picks by chance (50%)."""
    from scipy import stats

    return None if n == 0 else float(stats.binomtest(k, n, 0.5).pvalue)
