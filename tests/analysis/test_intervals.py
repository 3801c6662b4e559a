"""Interval arithmetic behind GPU utilization and launch-bound idle time."""

from tbd.metrics import intervals as iv


def test_union_merges_overlaps_and_touching_spans():
    spans = [(5, 7), (0, 2), (1, 3), (3, 4), (10, 10), (6, 9)]
    assert iv.union(spans) == [(0, 4), (5, 9)]
    assert iv.covered(spans) == 8


def test_nested_kernels_on_two_streams_count_once():
    # A long kernel on stream A with two short ones on stream B inside it.
    assert iv.covered([(0, 100), (10, 20), (30, 40)]) == 100


def test_intersect_subtract_complement():
    a = [(0, 10), (20, 30)]
    b = [(5, 25)]
    assert iv.intersect(a, b) == [(5, 10), (20, 25)]
    assert iv.subtract(a, b) == [(0, 5), (25, 30)]
    assert iv.subtract([(0, 10)], [(2, 3), (5, 6), (9, 12)]) == [(0, 2), (3, 5), (6, 9)]
    assert iv.complement([(2, 3), (5, 8)], (0, 10)) == [(0, 2), (3, 5), (8, 10)]
    assert iv.gaps([(2, 3), (5, 8)], (0, 10)) == [2, 2, 2]


def test_clip_to_window():
    assert iv.clip([(-5, 5), (8, 20), (30, 40)], (0, 10)) == [(0, 5), (8, 10)]


def test_utilization_example():
    # Window 100 us; kernels cover 0-40 and 50-80 (one overlapping pair): 70% busy.
    kernels = iv.union(iv.clip([(0, 30), (20, 40), (50, 80)], (0, 100)))
    assert iv.length(kernels) / 100 == 0.7
    idle = iv.complement(kernels, (0, 100))
    # The host waits in a sync from 80 to 95: idle not spent waiting is 40-50 and 95-100.
    assert iv.length(iv.subtract(idle, [(80, 95)])) == 15
