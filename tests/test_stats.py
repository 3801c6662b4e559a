import numpy as np
import pytest

from tbd.harness import stats


def test_steady_state_finds_a_warmup_prefix():
    rng = np.random.default_rng(0)
    warm = [5.0] + list(np.linspace(2.0, 1.1, 14))  # compile step, then slowly settling
    steady = list(1.0 + 0.01 * rng.standard_normal(80))
    found = stats.detect_steady_state(warm + steady)
    assert 10 <= found.start <= 20
    assert "MSER" in found.reason


def test_steady_run_loses_only_the_first_step():
    rng = np.random.default_rng(1)
    x = [3.0] + list(1.0 + 0.01 * rng.standard_normal(60))
    assert stats.detect_steady_state(x).start == 1


def test_median_ci_covers_the_median_and_shrinks_with_n():
    rng = np.random.default_rng(2)
    small = rng.normal(100, 5, 30)
    large = rng.normal(100, 5, 3000)
    for v in (small, large):
        med, lo, hi = stats.median_ci(v)
        assert lo <= med <= hi
    assert stats.relative_half_width(large) < stats.relative_half_width(small) / 5


def test_median_ci_coverage_is_about_95_percent():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(400):
        v = rng.exponential(1.0, 101)  # skewed: true median ln 2
        _, lo, hi = stats.median_ci(v)
        hits += lo <= np.log(2) <= hi
    assert 0.91 <= hits / 400 <= 0.99


def test_median_ci_ranks_are_the_exact_binomial_ones_and_symmetric():
    """Nine ratios: the 95% interval is the 2nd to the 8th value (coverage 96.1%; the 1st to the
    8th would be lopsided); six values give min-max (96.9%); the normal approximation beyond
    1,000 values continues the exact ranks."""
    v = [0.825, 0.873, 0.933, 1.047, 1.072, 1.125, 1.136, 1.154, 1.168]
    assert stats.median_ci(v) == (1.072, 0.873, 1.154)
    assert stats.median_rank(6, 0.05) == 1 and stats.median_rank(20, 0.05) == 6
    assert abs(stats.median_rank(1001, 0.05) - stats.median_rank(1000, 0.05)) <= 1
    for n in (9, 20, 101):
        _, lo, hi = stats.median_ci(list(range(n)))
        assert lo == n - 1 - hi


def test_summary_has_units_in_names():
    s = stats.summarize_steps([0.1, 0.1, 0.2], [10, 10, 10])
    assert s["units_per_s"] == pytest.approx(100.0)
    assert s["step_time_ms_p50"] == pytest.approx(100.0)
    assert s["timed_steps"] == 3


def test_window_rate_sees_the_waits_a_median_hides():
    # A loader whose workers deliver in waves: three steps in four find their batch ready (0.05 s),
    # the fourth waits 0.45 s. The median step says 20 batches/s; the wall clock says 8.
    seconds = [0.05, 0.05, 0.05, 0.5] * 25
    units = [1.0] * len(seconds)
    rate, lo, hi = stats.window_rate_ci(units, seconds)
    assert rate == pytest.approx(100 / 16.25)
    assert lo < rate < hi and (hi - lo) / 2 / rate < 0.25
    assert stats.summarize_steps(seconds, units)["units_per_s"] == pytest.approx(20.0)
    assert stats.summarize_steps(seconds, units, window_rate=True)["units_per_s"] == pytest.approx(rate)


def test_window_rate_ci_coverage_is_about_95_percent():
    rng = np.random.default_rng(4)
    hits = 0
    for _ in range(400):
        t = rng.exponential(0.1, 200) + 0.05  # true mean step 0.15 s, 1 unit each: 6.667 units/s
        _, lo, hi = stats.window_rate_ci(np.ones_like(t), t)
        hits += lo <= 1 / 0.15 <= hi
    assert 0.91 <= hits / 400 <= 0.985
