"""What happens to a profiled run's trace after the run: `tbd run resnet50 --profile`.

The harness traced a few steady steps (`tbd.harness.profiling`) in the run's child process.
`after_launch` (in the CLI or sweep process, after the child exited) moves the trace into the
store the user chose, adds its first summary (GPU kernel utilization, ...) to the record, and
runs the Nsight Compute pass if asked for; `describe` is the line `tbd run` prints.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tbd.analysis.summary import summarize
from tbd.analysis.trace import load_trace
from tbd.results.store import default_home
from tbd.results.record import has_result


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
    """In the CLI process, after the run's child exited: place the trace, summarize it, run
    the ncu pass."""
    adopt_trace(record, store)
    analysis = record.get("analysis") or {}
    path = trace_path(record, store.home)
    if path is not None and "summary" not in analysis:
        try:
            analysis["summary"] = summarize(load_trace(path), analysis["trace"]["steps"])
        except Exception as exc:  # the run is good without a summary; `tbd analyze` says more
            analysis["summary_error"] = f"{type(exc).__name__}: {exc}"[:300]
    if getattr(config, "ncu", False) and has_result(record):
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
