"""A kernel trace of a few steady steps after the timed ones: `tbd run resnet50 --profile`.

The harness calls `trace_run` while the session is still live; the framework's plugin captures
the trace (torch.profiler, jax.profiler) into `<store>/traces/<run id>.json.gz`, for Perfetto /
chrome://tracing and `tbd analyze`, and this records where it is, the profiled step times, and
the host's CPU use and NVML's utilization over the same window. Analysis of the trace happens
later, outside the run (`tbd.analysis.capture.after_launch`). A profiling failure never fails
the run: it is recorded as `analysis.error`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tbd import registry
from tbd.metrics.sampling import NVML_MIN_WINDOW_S, HostMeter
from tbd.results.store import default_home

DEFAULT_STEPS = 5
TRACE_SECONDS = 3.0  # on a CPU: fewer steps for slow steps, so a trace stays small and quick
MAX_GPU_STEPS = 200  # on a GPU the window must span NVML_MIN_WINDOW_S; this bounds the trace


def trace_relpath(run_id: str) -> str:
    return f"traces/{run_id}.json.gz"


def choose_steps(step_ms: float | None, device: str = "cpu") -> int:
    """Steps to trace. On a GPU, enough for the window to span a few NVML sample periods, so the
    trace's kernel utilization and NVML's counter describe the same window; on a CPU, a few."""
    if not step_ms:
        return DEFAULT_STEPS
    if device == "cuda":
        return max(2, min(MAX_GPU_STEPS, math.ceil(NVML_MIN_WINDOW_S * 1e3 / step_ms)))
    return max(2, min(DEFAULT_STEPS, int(TRACE_SECONDS * 1e3 / step_ms)))


def trace_session(session, config, run_id: str, steps: int | None = None, home: str | Path | None = None,
                  host: bool = True) -> dict[str, Any]:
    """Trace `steps` steps of a live session; the `analysis` part of the run's record."""
    steps = steps or DEFAULT_STEPS
    rel = trace_relpath(run_id)
    path = (Path(home).expanduser() if home else default_home()) / rel
    out: dict[str, Any] = {"trace": None}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        meter = HostMeter(gpu=config.device == "cuda")  # entered by the capture around the steps only
        info = registry.framework(config.framework).capture_trace(session, steps, path, host, meter)
    except Exception as exc:  # the timed run is done and good: keep it, say why there is no trace
        out["error"] = f"profiling failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return out
    out["trace"] = {"path": rel, "format": "chrome-trace-json-gz", "steps": steps, "bytes": path.stat().st_size,
                    **info, **{f"window_{k}": v for k, v in meter.result.items()}}
    return out


def trace_run(session, config, record) -> dict[str, Any]:
    """What the harness calls after the timed steps when `config.profile` is set; the config's
    `profile_steps` (--profile-steps) overrides the automatic choice. For tbd tune's trials,
    `profile_max_s` shortens a trace of slow steps (the profiler's stop and export grow with the
    steps: seconds per step of a large model) and `profile_min_rate` skips the trace of a run too
    slow to be kept (its trace would never be read)."""
    metrics = record.get("metrics") or {}
    floor = getattr(config, "profile_min_rate", None)
    unit = (record.get("workload") or {}).get("unit", "samples")
    rate = metrics.get(f"{unit}_per_s")
    if floor and rate is not None and rate < floor:
        return {"trace": None, "skipped": f"not traced: {rate:.4g} {unit}/s is below the {floor:.4g} a trace was asked for"}
    step_ms = metrics.get("step_time_ms_p50")
    steps = getattr(config, "profile_steps", None) or choose_steps(step_ms, config.device)
    most_s = getattr(config, "profile_max_s", None)
    if most_s and step_ms:
        steps = max(2, min(steps, int(most_s * 1e3 / step_ms)))
    return trace_session(session, config, record["id"], steps=steps)
