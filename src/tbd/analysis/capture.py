"""Profiling entry points the harness and the CLI call; framework-neutral dispatch.

`tbd run resnet50 --profile` reaches `profile_run` from the runner after the timed steps (the
session is still live), which traces a few more steady steps with the framework's profiler,
writes the trace for Perfetto / chrome://tracing to `<store>/traces/<run id>.json.gz` and
attaches where it is, the profiled step times, the host's CPU use and NVML's utilization over
the same window, and a first summary. A profiling failure never fails the run: it is recorded
as `analysis.error`. `after_launch` (in the CLI process, after the run's child exited) moves
the trace into the store the user chose and runs the Nsight Compute pass if asked for.
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tbd.results.store import default_home

CAPTURE_MODULES = {"torch": "tbd.analysis.torch_trace", "jax": "tbd.analysis.jax_trace"}
DEFAULT_STEPS = 5
TRACE_SECONDS = 3.0  # fewer steps for slow steps, so a trace stays small and quick


def trace_relpath(run_id: str) -> str:
    return f"traces/{run_id}.json.gz"


def choose_steps(step_ms: float | None) -> int:
    if not step_ms:
        return DEFAULT_STEPS
    return max(2, min(DEFAULT_STEPS, int(TRACE_SECONDS * 1e3 / step_ms)))


class HostMeter:
    """Wall time, process CPU time and NVML utilization samples over a `with` block."""

    def __init__(self, gpu: bool):
        import psutil

        self.process = psutil.Process()
        self.sampler = None
        if gpu:
            from tbd.metrics.devices import nvml

            if nvml() is not None:
                from tbd.metrics.sampling import NvmlSampler

                self.sampler = NvmlSampler(0, period_s=0.02)
        self.result: dict[str, Any] = {}

    def __enter__(self) -> "HostMeter":
        if self.sampler:
            self.sampler.start()
        t = self.process.cpu_times()
        self._cpu0, self._t0 = t.user + t.system, time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        t = self.process.cpu_times()
        wall = time.perf_counter() - self._t0
        cpu = t.user + t.system - self._cpu0
        cores = os.cpu_count() or 1
        self.result = {"wall_s": wall, "cpu_s": cpu, "cpu_cores_busy": cpu / wall if wall else None,
                       "cpu_util_pct": cpu / (wall * cores) * 100.0 if wall else None, "cores": cores}
        if self.sampler:
            util, _ = self.sampler.drain()
            self.sampler.stop()
            self.result["nvml_util_pct"] = sum(util) / len(util) if util else None
            self.result["nvml_samples"] = len(util)


def profile_session(session, config, run_id: str, steps: int | None = None, home: str | Path | None = None, host: bool = True) -> dict[str, Any]:
    """Trace `steps` steps of a live session; the analysis part of the run's record."""
    from tbd.analysis.summary import summarize
    from tbd.analysis.trace import load_trace

    steps = steps or DEFAULT_STEPS
    rel = trace_relpath(run_id)
    path = Path(home).expanduser() if home else default_home()
    path = path / rel
    out: dict[str, Any] = {"trace": None}
    if config.framework not in CAPTURE_MODULES:
        out["error"] = f"no profiler hook for framework {config.framework}"
        return out
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        module = importlib.import_module(CAPTURE_MODULES[config.framework])
        meter = HostMeter(gpu=config.device == "cuda")  # entered by the capture around the steps only
        info = module.capture(session, steps, path, host, meter)
    except Exception as exc:  # the timed run is done and good: keep it, say why there is no trace
        out["error"] = f"profiling failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return out
    out["trace"] = {"path": rel, "format": "chrome-trace-json-gz", "steps": steps, "bytes": path.stat().st_size,
                    **info, **{f"window_{k}": v for k, v in meter.result.items()}}
    try:
        out["summary"] = summarize(load_trace(path), steps)
    except Exception as exc:
        out["summary_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def profile_run(session, config, record: dict[str, Any]) -> dict[str, Any]:
    """What the runner calls after the timed steps when `config.profile` is set."""
    steps = choose_steps((record.get("metrics") or {}).get("step_time_ms_p50"))
    return profile_session(session, config, record["id"], steps=steps)


def trace_path(record: dict[str, Any], home: str | Path) -> Path | None:
    trace = (record.get("analysis") or {}).get("trace")
    if not trace or not trace.get("path"):
        return None
    p = Path(trace["path"])
    return p if p.is_absolute() else Path(home) / p


def adopt_trace(record: dict[str, Any], store) -> None:
    """Move a trace written to the default store into the store the user named (--home)."""
    trace = (record.get("analysis") or {}).get("trace")
    if not trace or Path(trace["path"]).is_absolute():
        return
    src, dst = default_home() / trace["path"], Path(store.home) / trace["path"]
    if src.resolve() != dst.resolve() and src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))


def after_launch(record: dict[str, Any], config, store) -> None:
    """In the CLI process, after the run's child exited: place the trace, run the ncu pass."""
    adopt_trace(record, store)
    if getattr(config, "ncu", False) and record.get("status") == "ok":
        from tbd.analysis.ncu import run_ncu

        record.setdefault("analysis", {})["ncu"] = run_ncu(config)


def describe(record: dict[str, Any], home: str | Path) -> str:
    """One line for `tbd run --profile`: where the trace is and the first figures."""
    analysis = record.get("analysis") or {}
    if not analysis.get("trace"):
        return f"no trace: {analysis.get('error', 'profiling did not run')}"
    path = trace_path(record, home)
    line = f"trace: {path} (Perfetto / chrome://tracing)"
    device = (analysis.get("summary") or {}).get("device")
    if device:
        line += f"; GPU kernel utilization {device['gpu_util_trace_pct']:.1f}%"
    return line + f"; 'tbd analyze {record['id']}' for the analysis"
