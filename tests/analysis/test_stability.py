"""Jitter and periodic stalls from step-time series with known structure."""

import numpy as np

from tbd.analysis.stability import analyze_steps


def test_periodic_stall_found_with_its_period_and_cost():
    rng = np.random.default_rng(0)
    steps = list(0.100 + rng.normal(0, 0.001, 120))
    steps[0] = 2.0  # compile step, excluded as warm-up
    for i in range(10, 120, 10):
        steps[i] = 0.180  # +80 ms every 10 steps (a GC pass, a log write, ...)
    s = analyze_steps(steps)
    assert s["period_steps"] == 10
    assert s["stalls"] >= 10
    # 11 stalls x ~80 ms over ~12.9 s of steps.
    assert 5.0 < s["stall_time_share_pct"] < 8.0
    assert "periodic stall every 10 steps" in s["verdict"]
    assert s["p99_over_p50"] > 1.5


def test_steady_series_has_no_stall_and_low_jitter():
    rng = np.random.default_rng(1)
    steps = [1.0] + list(0.050 + rng.normal(0, 0.0002, 80))
    s = analyze_steps(steps)
    assert s["stalls"] == 0 and s["period_steps"] is None
    assert s["cv_pct"] < 1.0
    assert "steady" in s["verdict"]


def test_stalls_on_chunk_edges_are_flagged():
    steps = [1.0] + [0.05] * 60
    chunk_ends = [1, 11, 21, 31, 41, 51, 61]
    for i in chunk_ends[1:-1]:
        steps[i] = 0.09
    s = analyze_steps(steps, chunk_ends)
    assert s["stalls"] == 5 and s["stalls_on_chunk_edges"] == 5
    assert "chunk edges" in s["verdict"]


def test_few_or_no_steps():
    assert analyze_steps([])["steps"] == 0
    s = analyze_steps([0.5, 0.1, 0.1])
    assert s["steps"] >= 2 and s["period_steps"] is None
