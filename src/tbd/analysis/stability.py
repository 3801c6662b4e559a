"""Step-time stability from a run's raw samples: jitter and periodic stalls.

`tbd analyze latest` prints it. Works on every run, profiled or not: it reads the per-step
times the harness stored and looks only at the steady window (warm-up excluded by the same
detector the harness used).
- Jitter: coefficient of variation (std / mean) and the ratios p90/p50 and p99/p50.
- Stalls: steps slower than the median by more than max(5 robust deviations, 10%).
- Periodic stalls: stalls whose spacing is (mostly) one period, or a clear peak of the
  autocorrelation of the step-time series at some lag; the share of time they cost is the
  excess of the stalled steps over the median.
Stalls that fall on the harness's chunk boundaries (where it synchronizes the device and reads
its counters) are flagged as a possible artifact of measuring.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from tbd.harness import stats

MIN_STEPS = 20  # fewer steady steps than this: jitter only, no period search


def analyze_steps(step_s: list[float], chunk_ends: list[int] | None = None) -> dict[str, Any]:
    if not step_s:
        return {"steps": 0, "note": "no step times stored"}
    start = stats.detect_steady_state(step_s).start
    x = np.asarray(step_s[start:] if len(step_s) - start >= 3 else step_s, dtype=float)
    offset = start if len(step_s) - start >= 3 else 0
    med = float(np.median(x))
    p = stats.percentiles(x, (50, 90, 99))
    out: dict[str, Any] = {
        "steps": int(len(x)),
        "first_step": offset,
        "median_ms": med * 1e3,
        "cv_pct": float(x.std() / x.mean() * 100.0) if len(x) > 1 else 0.0,
        "p90_over_p50": p[90] / p[50] if p[50] else math.nan,
        "p99_over_p50": p[99] / p[50] if p[50] else math.nan,
    }
    mad = float(np.median(np.abs(x - med))) * 1.4826
    threshold = med + max(5.0 * mad, 0.10 * med)
    stalls = [int(i) for i in np.nonzero(x > threshold)[0]]
    excess = float(np.sum(x[stalls] - med)) if stalls else 0.0
    out.update({
        "stall_threshold_ms": threshold * 1e3,
        "stalls": len(stalls),
        "stall_steps": [i + offset for i in stalls][:50],
        "stall_excess_ms_mean": excess / len(stalls) * 1e3 if stalls else 0.0,
        "stall_time_share_pct": excess / float(np.sum(x)) * 100.0,
        "period_steps": None,
        "period_source": None,
    })
    if len(x) >= MIN_STEPS:
        period, source = _period(x, stalls)
        out["period_steps"], out["period_source"] = period, source
        lag, value = _acf_peak(x)
        out["acf_peak"] = {"lag": lag, "value": value}
    if stalls and chunk_ends:
        # Step index i of the stored series starts chunk k when i == chunk_ends[k-1].
        starts = {0, *chunk_ends}
        on_edges = sum(1 for i in stalls if (i + offset) in starts)
        out["stalls_on_chunk_edges"] = on_edges
    out["verdict"] = _verdict(out)
    return out


def _period(x: np.ndarray, stalls: list[int]) -> tuple[int | None, str | None]:
    """A regular spacing of stalls (at least 3, most gaps equal within one step), else an
    autocorrelation peak that stands out of the noise."""
    if len(stalls) >= 3:
        gaps = np.diff(stalls)
        common, _ = Counter(int(g) for g in gaps).most_common(1)[0]
        near = int(np.sum(np.abs(gaps - common) <= 1))
        if common >= 2 and near >= max(2, math.ceil(0.6 * len(gaps))):
            return common, f"{near} of {len(gaps)} gaps between stalls are {common}±1 steps"
    lag, value = _acf_peak(x)
    if lag and value > max(0.3, 3.0 / math.sqrt(len(x))):
        return lag, f"autocorrelation {value:.2f} at lag {lag}"
    return None, None


def _acf_peak(x: np.ndarray) -> tuple[int | None, float]:
    """(lag, value) of the highest autocorrelation at lags 2..n/3 (lag 1 is mere drift)."""
    y = x - x.mean()
    denom = float(np.dot(y, y))
    if denom <= 0 or len(x) < 8:
        return None, 0.0
    best, best_lag = -1.0, None
    for lag in range(2, len(x) // 3 + 1):
        r = float(np.dot(y[:-lag], y[lag:])) / denom
        if r > best:
            best, best_lag = r, lag
    return best_lag, best


def _verdict(s: dict[str, Any]) -> str:
    parts = [f"CV {s['cv_pct']:.1f}%, p99/p50 {s['p99_over_p50']:.2f}"]
    if s["cv_pct"] < 2 and s["p99_over_p50"] < 1.1:
        parts.append("steady")
    elif s["cv_pct"] > 10 or s["p99_over_p50"] > 1.5:
        parts.append("jittery")
    if s.get("period_steps"):
        parts.append(f"periodic stall every {s['period_steps']} steps ({s['period_source']}), costing {s['stall_time_share_pct']:.1f}% of the time")
    elif s["stalls"]:
        parts.append(f"{s['stalls']} irregular stall(s) costing {s['stall_time_share_pct']:.1f}% of the time")
    if s.get("stalls_on_chunk_edges"):
        parts.append(f"{s['stalls_on_chunk_edges']} stall(s) on the harness's chunk edges (device sync points; partly an artifact of measuring)")
    return "; ".join(parts)
