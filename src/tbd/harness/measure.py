"""The measurement loop: run chunks of steps until the steady-state throughput is known to the
target precision or a budget runs out (the time budget starts after the first, compiling,
step), then derive every metric from the raw samples.

Method (recorded with each run): steps run in chunks sized to about half a second, with one
device sync per chunk; warm-up is detected from the step times (`stats.detect_steady_state`)
and excluded; the loop stops once at least `min_timed_steps` steady steps give a 95% CI of the
median throughput within +-`target_ci_pct` over at least `min_window_s` seconds, or at `max_steps`,
or when the time budget runs out.

The time budget `max_time_s` is for the steady window: step 0 (compilation) never counts, and
detected warm-up may take up to `WARMUP_ALLOWANCE` x `max_time_s` more before the run stops and
says it could not reach a steady state. Every run ends with a convergence verdict
(`convergence`): 'ok' (CI within target), 'unconverged' (a budget ran out first; the reached CI
is kept) or 'insufficient' (fewer than `min_timed_steps` steady steps: no CI is meaningful).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tbd.errors import RunFailure
from tbd.harness import noise, stats
from tbd.metrics.conditions import ConditionsMonitor
from tbd.metrics.peaks import peak_flops
from tbd.metrics.sampling import Probe, Reading, cpu_window_note, nvml_window_note

CHUNK_TARGET_S = 0.5
MAX_CHUNK = 50
WARMUP_ALLOWANCE = 1.0  # warm-up after step 0 may take this x max_time_s on top of the steady window
MIN_CI_STEPS = 3  # below this many steady steps no CI is computed at all


@dataclass
class Measurement:
    step_s: list[float] = field(default_factory=list)
    units: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    chunk_ends: list[int] = field(default_factory=list)  # step index after each chunk
    readings: list[Reading] = field(default_factory=list)  # one before the first chunk, one per chunk
    stop_reason: str = ""
    # Sessions that compile their step (JAX's jit, ...) expose `compile_count` and `compile_s`;
    # the count after each chunk shows a step that keeps recompiling (None: not reported).
    compiles: list[int] | None = None
    compile_s: float | None = None
    conditions: dict[str, Any] = field(default_factory=dict)  # load, other processes, clocks (tbd.metrics.conditions)
    # The session's memory() when the first pass over the resident batches ended, before its peak
    # counter was reset (None: not reset, the final peak covers the whole run).
    warmup_memory: dict[str, Any] | None = None
    # Runs on a dataset on disk: per step, host seconds blocked waiting for the batch and device
    # seconds idle for it (None: synthetic data, nothing to wait for).
    input_wait_s: list[float] | None = None
    input_stall_s: list[float] | None = None
    # The workload's reason its slow steps are part of the work (WorkloadSpec.irregular_steps).
    irregular_steps: str = ""


def measure(session, config, progress: Callable[[dict], None] | None = None, probe: Probe | None = None,
            irregular_steps: str = "") -> Measurement:
    m = Measurement(irregular_steps=irregular_steps)
    monitor = ConditionsMonitor(probe.gpu_index if probe else None)
    monitor.start()
    try:
        _loop(m, session, config, progress, probe)
    finally:
        m.conditions = monitor.stop()
    return m


def _loop(m: Measurement, session, config, progress, probe) -> None:
    m.readings.append(probe.read()) if probe else None
    chunk = 1
    started = None
    while True:
        times = session.run_steps(chunk)
        m.step_s += times.seconds
        m.units += times.units
        m.samples += times.samples
        # (getattr: a user's session for tbd.measure may return its own record of step times)
        wait, stall = getattr(times, "input_wait_s", None), getattr(times, "input_stall_s", None)
        if wait is not None:
            m.input_wait_s = (m.input_wait_s or []) + wait
            m.input_stall_s = (m.input_stall_s or []) + (stall or [math.nan] * len(wait))
        m.chunk_ends.append(len(m.step_s))
        _read_compiles(session, m)
        if m.warmup_memory is None and len(m.step_s) >= max(1, config.data_pool):
            m.warmup_memory = mark_steady_memory(session)
        # The time budget starts after the first step, so a slow compilation cannot eat it; for a
        # session that compiles per input shape, after the first pass through its batches (each
        # may have a shape of its own, so each may compile).
        first_pass = first_pass_steps(m, config)
        if started is None and len(m.step_s) >= first_pass:
            started = time.perf_counter()
        if started is None:
            chunk = 1
            continue
        if probe:
            m.readings.append(probe.read())
        loss = session.last_loss()  # None: a user's step that reports no loss (tbd.measure)
        if loss is not None and not math.isfinite(loss):
            raise RunFailure(f"loss became {loss} at step {len(m.step_s)}; try a lower learning rate or another precision", kind="nan")
        steady = steady_state(m, config)
        timed = m.step_s[steady.start :]
        if len(timed) < MIN_CI_STEPS:
            rel = math.inf
        elif window_rated(m):
            rel = stats.window_relative_half_width(m.units[steady.start :], timed)
        else:
            rel = stats.relative_half_width([u / t for u, t in zip(m.units[steady.start :], timed)])
        elapsed = time.perf_counter() - started
        window_s = sum(timed)  # the steady window: what the time budget is for
        if progress:
            progress({"steps": len(m.step_s), "max_steps": config.max_steps, "elapsed_s": elapsed, "ci_pct": rel * 100, "loss": loss})
        enough = len(timed) >= config.min_timed_steps and sum(timed) >= config.min_window_s
        if enough and rel * 100 <= config.target_ci_pct:
            m.stop_reason = f"95% CI of the throughput within +-{config.target_ci_pct}% ({rel * 100:.2f}%)"
            break
        if len(m.step_s) >= config.max_steps:
            m.stop_reason = f"step budget reached ({config.max_steps} steps; CI +-{rel * 100:.2f}%)"
            break
        if window_s >= config.max_time_s:
            m.stop_reason = f"time budget reached ({config.max_time_s:g} s of steady steps; CI {_ci_text(rel)})"
            break
        cap_s = (1 + WARMUP_ALLOWANCE) * config.max_time_s
        if elapsed >= cap_s:
            m.stop_reason = (f"no steady state within the budget: warm-up after step 0 took {elapsed - window_s:.3g} s, "
                             f"{window_s:.3g} s steady (CI {_ci_text(rel)})")
            break
        recent = sorted(m.step_s[-5:])[len(m.step_s[-5:]) // 2]
        chunk = max(1, min(MAX_CHUNK, int(CHUNK_TARGET_S / max(recent, 1e-6)), config.max_steps - len(m.step_s)))
        left_s = min(config.max_time_s - window_s, cap_s - elapsed)
        per_step = max(recent, 1e-6)
        chunk = min(chunk, max(1, int(min(left_s, MAX_CHUNK * per_step) / per_step)))  # (a budget of 1e308 s would overflow int())


def mark_steady_memory(session) -> dict[str, Any] | None:
    """Once every resident batch has been met (and with it every input shape, so cuDNN's
    autotuner and compilers have tried their candidates with their large workspaces), read the
    peak so far and reset the session's peak counter: the final peak is then the steady steps'
    own. Sessions without `reset_peak_memory` keep one peak for the whole run."""
    reset = getattr(session, "reset_peak_memory", None)
    if reset is None:
        return {}
    before = session.memory()
    return before if reset() else {}


def first_pass_steps(m: Measurement, config) -> int:
    """Steps that may compile: the first only, or one per resident batch where the session
    reports compilations (a compiling session meets each batch's shape once)."""
    return max(1, config.data_pool) if m.compiles is not None else 1


def steady_state(m: Measurement, config) -> stats.SteadyState:
    """MSER's warm-up, never shorter than the first pass of a compiling session."""
    steady = stats.detect_steady_state(m.step_s)
    first = first_pass_steps(m, config)
    if steady.start < first:  # (an empty steady window until the first pass is done)
        return stats.SteadyState(first, f"first {first} step(s) excluded (one compilation per resident batch); {steady.reason}")
    return steady


def _ci_text(rel: float) -> str:
    return f"+-{rel * 100:.2f}%" if math.isfinite(rel) else "not computable (too few steady steps)"


def convergence(timed_steps: int, ci_pct: float | None, config) -> dict[str, Any]:
    """The verdict on a measurement: did it reach its target precision?

    'insufficient': fewer than `min_timed_steps` (and at least MIN_CI_STEPS) steady steps, so the
    CI is not shown at all; 'unconverged': enough steps but the 95% CI is wider than the target
    (a budget ran out first); 'ok': the CI is within the target."""
    need = max(MIN_CI_STEPS, min(config.min_timed_steps, config.max_steps - 1))
    if timed_steps < need or ci_pct is None or not math.isfinite(ci_pct):
        status = "insufficient"
        why = f"{timed_steps} steady step(s); a CI needs {need}"
    elif ci_pct > config.target_ci_pct:
        status = "unconverged"
        why = f"95% CI +-{ci_pct:.2f}% when the budget ran out, target +-{config.target_ci_pct:g}%"
    else:
        status, why = "ok", f"95% CI +-{ci_pct:.2f}% within the target +-{config.target_ci_pct:g}%"
    return {"status": status, "reason": why, "ci_pct": ci_pct if status != "insufficient" else None,
            "target_ci_pct": config.target_ci_pct, "timed_steps": timed_steps, "min_timed_steps": need}


def _read_compiles(session, m: Measurement) -> None:
    count = getattr(session, "compile_count", None)
    if count is None:
        return
    m.compiles = (m.compiles or []) + [int(count)]
    seconds = getattr(session, "compile_s", None)
    m.compile_s = float(seconds) if seconds is not None else None


def recompilations(m: Measurement, data_pool: int) -> int | None:
    """Compilations after the first pass through the pool. Once every resident batch has been
    stepped, each input shape has been seen, so a further compilation means the step is compiled
    again for shapes it already had, or at every step (a defect). A step of the first pass may
    compile several times (torch.compile: one graph per graph break, the backward graph), so
    chunks that start within the first pass are not counted."""
    if m.compiles is None:
        return None
    starts = [0] + m.chunk_ends[:-1]
    before = [0] + m.compiles[:-1]
    return sum(max(0, after - b) for start, b, after in zip(starts, before, m.compiles) if start >= data_pool)


def derive_metrics(m: Measurement, config, spec, device_name: str, cores: int, counted_flops: tuple[float, str] | None = None,
                   peak: tuple[float, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, method) of the steady window; metric names carry their units. `counted_flops`
    (FLOPs per sample, how counted) stands in for the spec's analytic count where the session
    counted them; `peak` (FLOP/s, source) for the table's peak where the caller knows better."""
    steady = steady_state(m, config)
    timed_s = m.step_s[steady.start :]
    timed_units = m.units[steady.start :]
    timed_samples = m.samples[steady.start :]
    no_steady = not timed_s
    if no_steady:  # too few steps: report what there is rather than nothing, but never step 0's compilation
        first = 1 if len(m.step_s) > 1 else 0
        steady = stats.SteadyState(first, "no step left after warm-up; every step after step 0 used" if first
                                   else "one step only: its time includes the compilation")
        timed_s, timed_units, timed_samples = m.step_s[first:], m.units[first:], m.samples[first:]
    window_rate = window_rated(m)
    summary = stats.summarize_steps(timed_s, timed_units, window_rate=window_rate)
    # Samples over the same whole rotations as the units (a batch's sample count may not vary where its tokens do).
    samples_med, samples_lo, samples_hi = (stats.window_rate_ci(timed_samples, timed_s, period=stats.rotation_period(timed_units)) if window_rate
                                           else stats.median_ci([s / t for s, t in zip(timed_samples, timed_s)]))
    unit = spec.unit
    metrics: dict[str, Any] = {
        "samples_per_s": samples_med,
        "samples_per_s_ci95_low": samples_lo,
        "samples_per_s_ci95_high": samples_hi,
        f"{unit}_per_s": summary["units_per_s"],
        f"{unit}_per_s_ci95_low": summary["units_per_s_ci95_low"],
        f"{unit}_per_s_ci95_high": summary["units_per_s_ci95_high"],
        f"{unit}_per_s_window_mean": summary["units_per_s_mean"],
        "throughput_ci95_half_width_pct": summary["units_per_s_ci95_half_width_pct"],
        **{k: v for k, v in summary.items() if k.startswith("step_time") or k == "timed_steps"},
        "warmup_steps": steady.start,
        "total_steps": len(m.step_s),
        # Where the time went before the steady window: step 0 compiles and allocates.
        "compile_time_s": m.step_s[0] if m.step_s else None,
        "warmup_time_s": float(sum(m.step_s[1 : steady.start])),
        "steady_window_s": float(sum(timed_s)),
    }
    verdict = convergence(0 if no_steady else len(timed_s), metrics["throughput_ci95_half_width_pct"], config)
    bounds = [f"{name}_per_s_ci95_{end}" for name in ("samples", unit) for end in ("low", "high")]
    if verdict["status"] == "insufficient":  # a CI from one or two steps (or none) would only mislead
        metrics["throughput_ci95_half_width_pct"] = None
        metrics.update(dict.fromkeys(bounds))
    for name in bounds[::2]:  # the window rate's normal interval can reach below 0, which no throughput does
        if metrics[name] is not None:
            metrics[name] = max(0.0, metrics[name])
    # FLOPs and MFU: model FLOPs per sample (analytic, or counted) x samples per second / peak.
    flops_note = spec.flops_note
    if counted_flops is not None:
        flops_per_sample, flops_note = counted_flops
    else:
        flops_per_sample = spec.train_flops_per_sample(config.resolved_flavor())
    achieved = float(flops_per_sample) * samples_med if flops_per_sample is not None else None
    metrics["model_flops_per_sample"] = float(flops_per_sample) if flops_per_sample is not None else None
    metrics["model_tflops_per_s"] = achieved / 1e12 if achieved is not None else None
    peak, peak_source = peak or peak_flops(device_name if config.device == "cuda" else None, config.precision)
    metrics["mfu_pct"] = achieved / peak * 100.0 if peak and achieved is not None else None
    metrics.update(_window_readings(m, steady.start, cores, sum(timed_samples)))
    metrics.update(input_metrics(m, steady.start))
    # From a dataset on disk, batches of a new length bucket keep arriving and each compiles once:
    # counting compilations after "the first pass" of a resident pool does not apply.
    recompiled = None if getattr(config, "data", None) else recompilations(m, config.data_pool)
    if m.compiles is not None:
        metrics["compile_count"] = m.compiles[-1]
        metrics["compile_s"] = m.compile_s
        metrics["recompiles_after_first_pass"] = recompiled
    method = {
        "warmup": {"excluded_steps": list(range(steady.start)), "reason": steady.reason, "detector": "MSER-5 on step times, step 0 always excluded"},
        "stop_reason": m.stop_reason,
        "convergence": verdict,
        "noise": noise.assess(m.step_s, steady.start, m.conditions),
        "target_ci_pct": config.target_ci_pct,
        "confidence_interval": ("95% CI of the window rate by the delta method for a ratio of means, over whole rotations "
                                "of the resident batches where the step sizes cycle" if window_rate
                                else "95% CI of the median from order statistics (distribution-free)"),
        "throughput": (f"{unit} over the steady window / its wall time ({_window_reason(m)})" if window_rate
                       else f"median over steady steps of {unit} per step / step time"),
        "throughput_statistic": "window" if window_rate else "median",
        "flops": flops_note,
        "peak_flops": {"tflops": peak / 1e12 if peak else None, "source": peak_source, "precision": config.precision},
        "utilization_window": "whole chunks after warm-up (chunk edges are host sync points)",
    }
    if recompiled:
        method["recompilation_defect"] = (
            f"the step compiled {recompiled} more time(s) after every one of the {config.data_pool} resident batches had "
            "been stepped once: it recompiles for shapes it has seen, or for sizes inside the step that change with the data "
            "(bucket the shapes to a fixed set, or mark the varying dimensions dynamic)")
    return metrics, method


def fed_from_disk(m: Measurement) -> bool:
    """Steps that took their batches from a loader (the session reported the waits)."""
    return m.input_wait_s is not None and len(m.input_wait_s) == len(m.step_s)


def window_rated(m: Measurement) -> bool:
    """Whether the throughput is the window's units over its wall time rather than the median
    per-step rate: for steps fed from disk (waits come in bursts) and for steps of different sizes
    (variable-length batches: the per-step rates then alternate between the batches' own rates, and
    their median neither converges nor weighs each batch by its work), and for workloads whose
    slow steps are part of the work (`WorkloadSpec.irregular_steps`)."""
    return fed_from_disk(m) or stats.sizes_vary(m.units) or bool(m.irregular_steps)


def _window_reason(m: Measurement) -> str:
    if fed_from_disk(m):
        return "input from disk: batches arrive in bursts, so the median step would hide the waiting"
    if m.irregular_steps and not stats.sizes_vary(m.units):
        return f"{m.irregular_steps}: the median step would hide those steps"
    return "batches of different sizes: the median of per-step rates would alternate between them"


def input_metrics(m: Measurement, start: int) -> dict[str, Any]:
    """Time waiting for input over the steady window (runs on a dataset on disk): per step in ms
    and as a share of the window's time, on the host and on the device."""
    if m.input_wait_s is None or len(m.input_wait_s) != len(m.step_s):
        return {}
    window = sum(m.step_s[start:])
    out: dict[str, Any] = {}
    for name, values in (("input_wait_host", m.input_wait_s[start:]), ("input_stall_device", (m.input_stall_s or [])[start:])):
        values = [v for v in values if math.isfinite(v)]
        out[f"{name}_ms_per_step"] = sum(values) / len(values) * 1e3 if values else None
        out[f"{name}_pct"] = min(100.0, sum(values) / window * 100.0) if values and window > 0 else None
    return out


def _window_readings(m: Measurement, steady_start: int, cores: int, timed_samples: float) -> dict[str, Any]:
    """CPU and GPU utilization and energy over the chunks that lie wholly in the steady window."""
    if len(m.readings) < 2:
        return {}
    # Chunk i covers steps [starts[i], chunk_ends[i]), between readings i and i + 1.
    starts = [0] + m.chunk_ends[:-1]
    first = next((i for i, s in enumerate(starts) if s >= steady_start), len(starts) - 1)
    begin, end = m.readings[first], m.readings[-1]
    window_s = end.host_s - begin.host_s
    if window_s <= 0:
        return {}
    samples_in_window = sum(m.samples[starts[first] :])
    cpu_note = cpu_window_note(window_s)
    out: dict[str, Any] = {
        "cpu_util_pct": None if cpu_note else (end.cpu_s - begin.cpu_s) / (window_s * cores) * 100.0,
        "cpu_cores_busy": None if cpu_note else (end.cpu_s - begin.cpu_s) / window_s,
        "utilization_window_s": window_s,
    }
    if cpu_note:
        out["cpu_util_note"] = cpu_note
    util = [u for r in m.readings[first + 1 :] for u in r.gpu_util_samples]
    mem = [u for r in m.readings[first + 1 :] for u in r.gpu_mem_util_samples]
    note = nvml_window_note(window_s) if util else None
    out["gpu_util_nvml_pct"] = sum(util) / len(util) if util and not note else None
    out["gpu_mem_bw_util_nvml_pct"] = sum(mem) / len(mem) if mem and not note else None
    if note:
        out["gpu_util_nvml_note"] = note
    if begin.energy_mj is not None and end.energy_mj is not None and samples_in_window:
        joules = (end.energy_mj - begin.energy_mj) / 1e3
        out["energy_j"] = joules
        out["energy_j_per_sample"] = joules / samples_in_window
        out["gpu_power_w_mean"] = joules / window_s
    else:
        out["energy_j_per_sample"] = None
        if begin.energy_mj is None or end.energy_mj is None:
            out["energy_note"] = "not measurable here: tbd reads NVML's GPU energy counter, and this run's device has none"
    return out
