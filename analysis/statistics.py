"""Statistics over seeds: the mean with a 95% bootstrap interval, and the paired comparison of
two methods over the seeds both ran (docs/analysis.md, "Statistics over seeds").

- Interval: the percentile bootstrap of the mean (``scipy.stats.bootstrap``, 9,999 resamples,
  a fixed random state, so that the same values always give the same interval and tables are
  reproducible). Only from ``MIN_SEEDS_FOR_INTERVAL`` (3) values on: one value has no spread,
  and two values can only resample to their range, which is no 95% interval.
- Paired test: the exact two-sided sign-flip permutation test of the mean paired difference
  (every one of the 2^n sign patterns). With n pairs its p-value cannot be below 2 / 2^n.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_METHOD = "percentile"
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_RANDOM_STATE = 0
MIN_SEEDS_FOR_INTERVAL = 3
# Beyond this many pairs the 2^n sign patterns are sampled (fixed random state) instead of enumerated.
EXACT_SIGN_FLIP_MAX = 16
PAIRED_TEST = "exact sign-flip permutation test (two-sided)"
SAMPLED_PAIRED_TEST = f"sign-flip permutation test (two-sided, {BOOTSTRAP_RESAMPLES} sampled sign patterns)"

# scipy >= 1.15 calls the seed `rng`, older versions (still allowed by the requirements) `random_state`;
# both take a Generator, so every version draws the same resamples.
_SEED_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def _finite(values: Sequence[float]) -> np.ndarray:
    """The values as floats, without missing ones (None, NaN)."""
    arr = np.asarray([math.nan if v is None else v for v in values], dtype=float)
    return arr[~np.isnan(arr)]


def bootstrap_interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the mean; (nan, nan) below 3 values."""
    arr = _finite(values)
    if arr.size < MIN_SEEDS_FOR_INTERVAL:
        return math.nan, math.nan
    if np.ptp(arr) == 0:  # every resample has the same mean: the interval is that value
        return float(arr[0]), float(arr[0])
    res = stats.bootstrap((arr,), np.mean, confidence_level=CONFIDENCE, method=BOOTSTRAP_METHOD,
                          n_resamples=BOOTSTRAP_RESAMPLES, vectorized=True,
                          **{_SEED_KEYWORD: np.random.default_rng(BOOTSTRAP_RANDOM_STATE)})
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float, int]:
    """(mean, interval low, interval high, n) of the values, the interval nan below 3 values."""
    arr = _finite(values)
    if arr.size == 0:
        return math.nan, math.nan, math.nan, 0
    low, high = bootstrap_interval(arr)
    return float(arr.mean()), low, high, int(arr.size)


def smallest_sign_flip_p(n: int) -> float:
    """The smallest two-sided p-value an exact sign-flip test on n pairs can give: 2 / 2^n
    (every difference of one sign; 1 for one pair)."""
    return min(1.0, 2.0 / 2**n) if n > 0 else math.nan


def sign_flip_p(differences: Sequence[float]) -> float:
    """Two-sided p-value of the mean difference against zero: the share of sign patterns whose
    mean difference is at least as far from zero as the observed one (the observed pattern
    counts), every pattern enumerated up to EXACT_SIGN_FLIP_MAX pairs."""
    d = _finite(differences)
    n = d.size
    if n == 0:
        return math.nan
    observed = abs(d.mean())
    # Ties up to rounding count as "at least as far": accuracies are ratios of test-set counts.
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if n <= EXACT_SIGN_FLIP_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        rng = np.random.default_rng(BOOTSTRAP_RANDOM_STATE)
        signs = np.vstack([np.ones(n), rng.choice((1.0, -1.0), size=(BOOTSTRAP_RESAMPLES, n))])
    means = np.abs(signs @ d) / n
    return float(np.mean(means >= observed - tol))


def paired_comparison(first: Sequence[float], second: Sequence[float]) -> dict:
    """Per-seed pairs (first[i], second[i]): the mean of first - second, its 95% bootstrap
    interval (3 pairs or more), the sign-flip p-value, the smallest p these n pairs allow and
    the test's name."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one partner each: {a.size} against {b.size}")
    diff = a - b
    mean, low, high, n = mean_interval(diff)
    return {"n": n, "difference_mean": mean, "difference_ci_low": low, "difference_ci_high": high,
            "p_value": sign_flip_p(diff), "p_min": smallest_sign_flip_p(n),
            "test": PAIRED_TEST if n <= EXACT_SIGN_FLIP_MAX else SAMPLED_PAIRED_TEST}
