"""Interval arithmetic on half-open time spans [start, end), in microseconds.

`pytest tests/analysis/test_intervals.py` exercises it. GPU utilization is the length of the
union of kernel intervals over the window; "GPU idle while the host is not waiting" is the
window minus the kernel union minus the host's sync waits. Everything here works on plain lists
of (start, end) tuples, sorted and merged, so the cost is O(n log n) for n events.
"""

from __future__ import annotations

from collections.abc import Iterable

Span = tuple[float, float]


def union(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint spans covering exactly the points covered by any input span."""
    merged: list[list[float]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def length(spans: Iterable[Span]) -> float:
    """Total length of a list of spans that are already disjoint (e.g. from `union`)."""
    return sum(b - a for a, b in spans)


def covered(spans: Iterable[Span]) -> float:
    """Length of the union of any spans (overlaps counted once)."""
    return length(union(spans))


def clip(spans: Iterable[Span], window: Span) -> list[Span]:
    lo, hi = window
    return [(max(a, lo), min(b, hi)) for a, b in spans if b > lo and a < hi]


def intersect(a: list[Span], b: list[Span]) -> list[Span]:
    """Intersection of two disjoint sorted span lists (two-pointer sweep)."""
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: list[Span], b: list[Span]) -> list[Span]:
    """Points of `a` not in `b`; both disjoint and sorted."""
    out: list[Span] = []
    j = 0
    for start, end in a:
        cur = start
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            if cur >= end:
                break
            k += 1
        if cur < end:
            out.append((cur, end))
    return out


def complement(spans: list[Span], window: Span) -> list[Span]:
    """The gaps of disjoint sorted `spans` inside `window`."""
    return subtract([window], spans)


def gaps(spans: list[Span], window: Span) -> list[float]:
    """Lengths of the idle gaps between disjoint sorted spans inside `window`."""
    return [b - a for a, b in complement(spans, window)]


def comm_overlap(comm: Iterable[Span], compute: Iterable[Span], steps: int) -> dict[str, float | None]:
    """Communication time per step and its overlap with computation, from the spans of one
    rank's trace (the framework's plugin says which spans are which).
    overlap = time in which communication and computation both run / communication time."""
    comm, compute = union(comm), union(compute)
    everything = comm + compute
    window = max(b for _, b in everything) - min(a for a, _ in everything) if everything else 0.0
    comm_us = length(comm)
    both_us = length(intersect(comm, compute))
    return {
        "steps": steps,
        "comm_ms_per_step": comm_us / 1e3 / steps,
        "compute_ms_per_step": length(compute) / 1e3 / steps,
        "comm_overlap_pct": both_us / comm_us * 100.0 if comm_us else None,
        "exposed_comm_ms_per_step": (comm_us - both_us) / 1e3 / steps,
        "window_ms_per_step": window / 1e3 / steps,  # first to last activity of the traced steps
    }
