"""Was the machine quiet while a run measured? Warnings from the step times and the conditions.

`assess(step_s, steady_start, conditions)` returns {noisy, warnings, run_warnings, change_points,
cv_pct} (`run_warnings`: those from the run's own step times; the others are about the machine):
- a change of regime inside the steady window (`stats.change_points`), which warm-up detection
  cannot see because it only looks at the start;
- step times whose coefficient of variation exceeds CV_WARN_PCT (pyperf warns above 10% too);
- other processes busy on the CPUs, a load average above the usable CPUs (before or after), a
  'powersave' CPU governor; on a GPU, clock throttling for power or heat and other processes.
`compare_conditions(a, b)` says how the conditions of two sets of runs differed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tbd.harness import stats

CV_WARN_PCT = 10.0
OTHERS_WARN_SHARE = 0.25  # other processes using this share of the usable CPUs


def assess(step_s: list[float], steady_start: int, conditions: dict[str, Any] | None) -> dict[str, Any]:
    steady = np.asarray(step_s[steady_start:], dtype=float)
    warnings: list[str] = []
    points = stats.change_points(steady) if len(steady) else []
    for p in points:
        warnings.append(f"step times changed regime at step {steady_start + p.index}: {p.before_median * 1e3:.3g} ms -> "
                        f"{p.after_median * 1e3:.3g} ms ({p.change_pct:+.0f}%); the throughput mixes both")
    cv = float(steady.std() / steady.mean() * 100.0) if len(steady) > 1 and steady.mean() > 0 else None
    if cv is not None and cv > CV_WARN_PCT:
        warnings.append(f"step times vary by {cv:.0f}% (coefficient of variation, over {CV_WARN_PCT:g}%)")
    run_warnings = list(warnings)  # what this run's own step times show; the rest is about the machine
    warnings += condition_warnings(conditions or {})
    return {"noisy": bool(warnings), "warnings": warnings, "run_warnings": run_warnings, "cv_pct": cv,
            "change_points": [{"step": steady_start + p.index, "before_ms": p.before_median * 1e3, "after_ms": p.after_median * 1e3,
                               "change_pct": p.change_pct} for p in points],
            "detector": "binary segmentation of log step times (BIC-like penalty, robust sigma), tbd.harness.stats.change_points"}


def condition_warnings(c: dict[str, Any]) -> list[str]:
    out = []
    usable = c.get("usable_cpus") or c.get("cpus") or 1
    others = c.get("others_cpu_cores")
    if others is not None and others >= OTHERS_WARN_SHARE * usable:
        busiest = ", ".join(f"{p['name']} ({p['cpu_pct']:.0f}%)" for p in c.get("busiest_others") or [])
        out.append(f"other processes kept {others:.1f} of {usable} CPU(s) busy during the run" + (f": {busiest}" if busiest else ""))
    loads = [((c.get(when) or {}).get("load_avg") or [None])[0] for when in ("before", "after")]
    if any(x is not None and x > usable for x in loads):
        out.append(f"load average {' -> '.join(f'{x:.1f}' for x in loads if x is not None)} (before -> after) on {usable} usable CPU(s)")
    if c.get("cpu_governor") == "powersave":
        out.append("CPU frequency governor is 'powersave'")
    for when in ("before", "after"):
        gpu = (c.get(when) or {}).get("gpu") or {}
        bad = [r for r in gpu.get("throttle_reasons") or [] if r not in ("applications clocks setting", "sync boost", "display clocks setting")]
        if bad:
            out.append(f"GPU clocks throttled {when} the run: {', '.join(bad)}")
    after_gpu = (c.get("after") or {}).get("gpu") or {}
    others_gpu = after_gpu.get("other_processes")
    busy = {pid: util for pid, util in (after_gpu.get("other_processes_sm_util_pct") or {}).items() if util > 0}
    if others_gpu or busy:
        used = f", up to {max(busy.values())}% of the SMs" if busy else ""
        out.append(f"{len(others_gpu or busy)} other process(es) on the GPU{used}")
    return list(dict.fromkeys(out))


MACHINE_CAUSES = (("other processes kept", "other processes busy on the CPUs"), ("load average", "load average above the usable CPUs"),
                  ("CPU frequency governor", "'powersave' CPU governor"), ("GPU clocks throttled", "GPU clocks throttled"),
                  ("other process(es) on the GPU", "other processes on the GPU"))


def machine_cause(warning: str) -> str | None:
    """The cause a machine-level warning names, without its numbers (to count runs per cause)."""
    for marker, cause in MACHINE_CAUSES:
        if marker in warning:
            return cause
    return None


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The few condition facts two runs are compared on."""
    c = (record.get("environment") or {}).get("conditions") or {}
    noise = (record.get("method") or {}).get("noise") or {}
    gpu = (c.get("after") or {}).get("gpu") or {}
    return {"noisy": noise.get("noisy"), "others_cpu_cores": c.get("others_cpu_cores"),
            "load_avg": ((c.get("before") or {}).get("load_avg") or [None])[0], "intra_op_threads": c.get("intra_op_threads"),
            "cpu_governor": c.get("cpu_governor"), "sm_clock_mhz": gpu.get("sm_clock_mhz")}


def compare_conditions(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[str]:
    """Lines saying how the measuring conditions of A and B differed (empty when alike or unknown)."""
    sa, sb = [summary(r) for r in a], [summary(r) for r in b]
    out = []
    noisy_a, noisy_b = sum(bool(s["noisy"]) for s in sa), sum(bool(s["noisy"]) for s in sb)
    if noisy_a or noisy_b:
        out.append(f"noisy conditions: {noisy_a} of {len(sa)} run(s) of A and {noisy_b} of {len(sb)} of B had noise warnings "
                   "('tbd results show ID' lists them)")

    def mean(ss, key):
        vals = [s[key] for s in ss if s[key] is not None]
        return sum(vals) / len(vals) if vals else None

    oa, ob = mean(sa, "others_cpu_cores"), mean(sb, "others_cpu_cores")
    if oa is not None and ob is not None and abs(oa - ob) >= 0.5:
        out.append(f"other processes' CPU use differed: A {oa:.1f} cores, B {ob:.1f} cores on average")
    for key, what in (("intra_op_threads", "intra-op threads"), ("cpu_governor", "CPU governor")):
        va, vb = {s[key] for s in sa if s[key] is not None}, {s[key] for s in sb if s[key] is not None}
        if va and vb and va != vb:
            out.append(f"{what} differed: A {', '.join(map(str, sorted(va)))} vs B {', '.join(map(str, sorted(vb)))}")
    ca, cb = mean(sa, "sm_clock_mhz"), mean(sb, "sm_clock_mhz")
    if ca and cb and abs(ca / cb - 1) > 0.05:
        out.append(f"GPU SM clock differed: A {ca:.0f} MHz, B {cb:.0f} MHz")
    return out
