"""Statistics from raw per-step samples: steady-state detection, median with a distribution-free
95% confidence interval, percentiles. Pure numpy; every figure can be recomputed from the
samples stored with a run.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass
class SteadyState:
    start: int  # index of the first steady step
    reason: str


def detect_steady_state(step_s: list[float] | np.ndarray, min_warmup: int = 1, batch: int = 5) -> SteadyState:
    """Where warm-up ends, by MSER-5 (White 1997; the Marginal Standard Error Rule used to delete
    initialisation bias in simulation output): cut the prefix d (in batches of `batch` steps)
    that minimises the squared standard error of the mean of what is left, searching only the
    first half so the rule cannot throw most of the data away. Step 0 (compilation, allocator
    growth, autotuning) is always excluded."""
    x = np.asarray(step_s, dtype=float)
    n = len(x)
    if n <= min_warmup:
        return SteadyState(min(min_warmup, n), "too few steps to detect a steady state")
    # Batch means of the steps after the mandatory warm-up.
    body = x[min_warmup:]
    nb = len(body) // batch
    if nb < 4:
        return SteadyState(min_warmup, f"first {min_warmup} step(s) excluded (compilation and allocation); too few steps for MSER")
    means = body[: nb * batch].reshape(nb, batch).mean(axis=1)
    best_d, best_se = 0, math.inf
    for d in range(0, nb // 2 + 1):
        rest = means[d:]
        se = rest.var() / len(rest)
        if se < best_se - 1e-18:
            best_d, best_se = d, se
    start = min_warmup + best_d * batch
    # MSER may cut a prefix that only looks different by noise; refine to the first step that
    # is within 3 robust deviations of the steady median.
    steady = x[start:]
    med = float(np.median(steady))
    mad = float(np.median(np.abs(steady - med))) * 1.4826 or med * 0.01
    refined = start
    while refined > min_warmup and abs(x[refined - 1] - med) <= 3 * mad:
        refined -= 1
    if refined == min_warmup:
        reason = f"first {min_warmup} step(s) excluded (compilation and allocation); the rest is steady (MSER-5)"
    else:
        warm = x[min_warmup:refined]
        reason = (
            f"steps 0-{refined - 1} excluded: step 0 compiles and allocates, then MSER-5 found warm-up "
            f"(mean {np.mean(warm) * 1e3:.3g} ms vs steady median {med * 1e3:.3g} ms)"
        )
    return SteadyState(refined, reason)


def median_ci(values: list[float] | np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """Median and its distribution-free CI from order statistics: the interval between the j-th
    smallest and the j-th largest value, j the binomial rank at which the median lies outside
    with probability at most alpha (z's two-sided level) -- exact up to 1,000 values, the normal
    approximation to the binomial beyond. Needs no assumption about the shape of the
    distribution. Under 6 values no 95% interval of ranks exists, and min-max is returned."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan
    j = median_rank(n, math.erfc(z / math.sqrt(2.0)))
    return float(np.median(v)), float(v[j - 1]), float(v[n - j])


def median_rank(n: int, alpha: float) -> int:
    """1-based rank j of the lower end of the median's (1 - alpha) interval [x(j), x(n+1-j)]:
    the largest j with P(Binomial(n, 1/2) <= j - 1) <= alpha / 2; 1 where none is (n small)."""
    if n > 1000:  # normal approximation: j = n/2 - z sqrt(n)/2, rounded down (conservative)
        z = statistics.NormalDist().inv_cdf(1.0 - alpha / 2.0)
        return max(1, math.floor(n / 2.0 - z * math.sqrt(n) / 2.0))
    pmf, below, j = 0.5**n, 0.0, 0  # P(B = j), P(B < j); 0.5**1000 is still a normal float
    # grow j while the interval [x(j+1), x(n-j)] still keeps the level
    while j < n // 2 and below + pmf <= alpha / 2.0:
        below += pmf
        pmf *= (n - j) / (j + 1)
        j += 1
    return max(1, j)


def relative_half_width(values) -> float:
    med, lo, hi = median_ci(values)
    if not med or math.isnan(med):
        return math.inf
    return (hi - lo) / 2.0 / med


def window_rate_ci(units, seconds, z: float = Z95, period: int | None = None) -> tuple[float, float, float]:
    """Units per second over the whole window (sum of units / sum of seconds) and its CI by the
    delta method for a ratio of means. This is the throughput of a run whose steps wait for input
    in bursts (a loader's workers deliver batches in waves): most steps then wait for nothing, so
    the median step would hide the waiting that the wall clock shows.

    Steps that repeat a fixed cycle of sizes (a pool of resident batches stepped in turn) are
    taken a whole rotation at a time (`rotations`): each rotation carries the same work, so the
    CI measures the timing noise and not the fixed differences between the batches, which would
    otherwise count as noise and keep the CI wide however long the run. `period`: the cycle to
    use (that of another series of the same steps, e.g. their units for their samples)."""
    u, t = rotations(units, seconds, period)
    n = len(t)
    if n == 0 or t.sum() <= 0:
        return math.nan, math.nan, math.nan
    rate = float(u.sum() / t.sum())
    if n < 3:
        return rate, math.nan, math.nan
    residual = u - rate * t  # the ratio's linearized error per step (or rotation)
    se = float(np.std(residual, ddof=1) / math.sqrt(n) / t.mean())
    return rate, rate - z * se, rate + z * se


def rotation_period(units, max_period: int = 64) -> int:
    """The length of the cycle the steps' sizes repeat (2 for two resident batches of different
    lengths stepped in turn), or 1 where they do not repeat (batches from disk) or do not vary.
    A cycle counts only if the window holds at least three of it."""
    u = np.asarray(units, dtype=float)
    tolerance = 1e-9 * max(1.0, float(np.abs(u).max())) if len(u) else 0.0
    for period in range(1, min(max_period, len(u) // 3) + 1):
        if np.all(np.abs(u[period:] - u[:-period]) <= tolerance):
            return period
    return 1


def rotations(units, seconds, period: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(units, seconds) summed over whole cycles of `rotation_period` (the steps left after the last
    whole cycle are dropped, so every batch weighs the same); the steps unchanged where the sizes
    do not cycle."""
    u = np.asarray(units, dtype=float)
    t = np.asarray(seconds, dtype=float)
    period = rotation_period(u) if period is None else period
    if period == 1:
        return u, t
    whole = len(u) // period * period
    return u[:whole].reshape(-1, period).sum(1), t[:whole].reshape(-1, period).sum(1)


def sizes_vary(units) -> bool:
    """Whether steps carried different amounts of work (tokens, audio seconds): more than one
    distinct unit count, beyond float rounding."""
    u = np.asarray(units, dtype=float)
    return len(u) > 1 and float(u.max() - u.min()) > 1e-9 * max(1.0, float(np.abs(u).max()))


def window_relative_half_width(units, seconds) -> float:
    rate, lo, hi = window_rate_ci(units, seconds)
    if not rate or math.isnan(lo):
        return math.inf
    return (hi - lo) / 2.0 / rate


def percentiles(values, qs=(50, 90, 99)) -> dict[int, float]:
    v = np.asarray(values, dtype=float)
    return {q: float(np.percentile(v, q)) for q in qs} if len(v) else {q: math.nan for q in qs}


def summarize_steps(step_s, units_per_step, window_rate: bool = False) -> dict[str, float]:
    """Throughput and step-time statistics of the steady window, with units in the names. The
    throughput is the median of the per-step rates, or with `window_rate` the window's units over
    its wall time (`window_rate_ci`)."""
    t = np.asarray(step_s, dtype=float)
    u = np.asarray(units_per_step, dtype=float)
    rate = u / t
    med, lo, hi = window_rate_ci(u, t) if window_rate else median_ci(rate)
    p = percentiles(t * 1e3, (10, 25, 50, 75, 90, 99))
    return {
        "units_per_s": med,
        "units_per_s_ci95_low": lo,
        "units_per_s_ci95_high": hi,
        "units_per_s_ci95_half_width_pct": (hi - lo) / 2.0 / med * 100.0 if med else math.nan,
        "units_per_s_mean": float(u.sum() / t.sum()),
        "step_time_ms_mean": float(t.mean() * 1e3),
        "step_time_ms_p50": p[50],
        "step_time_ms_p90": p[90],
        "step_time_ms_p99": p[99],
        "step_time_ms_iqr": p[75] - p[25],
        "step_time_cv_pct": float(t.std() / t.mean() * 100.0) if len(t) > 1 else 0.0,
        "timed_steps": int(len(t)),
    }


@dataclass
class ChangePoint:
    index: int  # first step of the new regime (an index into the series given)
    before_median: float
    after_median: float

    @property
    def change_pct(self) -> float:
        return (self.after_median / self.before_median - 1.0) * 100.0 if self.before_median else math.inf


def change_points(values, min_size: int = 5, min_change_pct: float = 5.0, penalty: float = 8.0, max_points: int = 5) -> list[ChangePoint]:
    """Changes of regime in a series of step times, by binary segmentation (Scott & Knott 1974).

    Works on log step times, so a change is a ratio. A split at k is kept when it lowers the sum
    of squared deviations from the segment means by more than `penalty` x sigma^2 x log(n) (a BIC-like
    cost for one more mean), where sigma is estimated robustly from the first differences
    (MAD / sqrt 2, unaffected by the shift itself); each side needs `min_size` points and the medians
    must differ by `min_change_pct` (geometric means), so slow drifts and single outliers are not called regimes.
    Segments are split again until nothing passes, at most `max_points` times."""
    x = np.log(np.clip(np.asarray(values, dtype=float), 1e-12, None))
    n = len(x)
    if n < 2 * min_size:
        return []
    diffs = np.diff(x)
    sigma = float(np.median(np.abs(diffs - np.median(diffs)))) * 1.4826 / math.sqrt(2)
    sigma = max(sigma, 1e-3)  # a perfectly quiet series: 0.1% is the smallest change worth a cost
    threshold = penalty * sigma**2 * math.log(n)
    found: list[int] = []
    segments = [(0, n)]
    while segments and len(found) < max_points:
        lo, hi = segments.pop()
        k = _best_split(x[lo:hi], min_size)
        if k is None:
            continue
        seg, cut = x[lo:hi], k
        gain = _sse(seg) - _sse(seg[:cut]) - _sse(seg[cut:])
        ratio = math.exp(abs(seg[:cut].mean() - seg[cut:].mean()))  # of geometric means: one regime inside a segment still counts
        if gain > threshold and (ratio - 1.0) * 100.0 >= min_change_pct:
            found.append(lo + cut)
            segments += [(lo, lo + cut), (lo + cut, hi)]
    # Keep a change only where the medians of its two neighbouring segments differ too: a lone
    # outlier near an end moves a short segment's mean but not its median.
    raw = np.exp(x)
    found.sort()
    while True:
        bounds = [0, *found, n]
        points = [ChangePoint(k, float(np.median(raw[bounds[i]:k])), float(np.median(raw[k:bounds[i + 2]]))) for i, k in enumerate(found)]
        weak = [p for p in points if abs(p.change_pct) < min_change_pct]
        if not weak:
            return points
        found.remove(min(weak, key=lambda p: abs(p.change_pct)).index)


def _sse(seg: np.ndarray) -> float:
    return float(((seg - seg.mean()) ** 2).sum()) if len(seg) else 0.0


def _best_split(seg: np.ndarray, min_size: int) -> int | None:
    """The split of `seg` that most lowers the squared deviations (CUSUM of the mean, O(n))."""
    n = len(seg)
    if n < 2 * min_size:
        return None
    csum = np.cumsum(seg)
    total = csum[-1]
    k = np.arange(min_size, n - min_size + 1)
    left = csum[k - 1]
    # Reduction in SSE from splitting at k: k (n - k) / n x (mean_left - mean_right)^2
    gain = (left / k - (total - left) / (n - k)) ** 2 * k * (n - k) / n
    return int(k[int(np.argmax(gain))])
