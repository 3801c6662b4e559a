"""Trace of a few steady TensorFlow steps with tf.profiler, for `tbd analyze`.

`tbd run resnet50 --framework tf --profile` calls `capture` (through the plugin) from the harness
once the timed steps are done. The steps run through the session's own `run_steps` inside one
`tf.profiler.experimental.Trace` annotation (`tbd.profiled_steps`) that marks the window.
tf.profiler writes an XSpace (`<log_dir>/plugins/profile/<stamp>/<host>.xplane.pb`); TensorFlow's
own converter (the one TensorBoard's profile plugin uses, `xspace_to_tools_data(..., "trace_viewer@")`)
turns it into Chrome-trace JSON, which is gzipped next to the run's record. Its layout is the one
`tbd.analysis.trace` reads for JAX: a process `/host:CPU` with the host's ops and annotations,
and on a GPU a process `/device:GPU:N` whose `Stream` threads hold the kernels and copies.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

from tbd.frameworks.base import WINDOW_NAME


def to_chrome_trace(xplane: Path) -> dict:
    """The trace-viewer JSON of one XSpace file, by TensorFlow's converter."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

    # "trace_viewer@" is the JSON form of the trace-viewer tool ("trace_viewer" is its protobuf form).
    data, ok = _pywrap_profiler_plugin.xspace_to_tools_data([str(xplane)], "trace_viewer@", {})
    if not ok or not data:
        raise RuntimeError(f"TensorFlow could not convert {xplane.name} to a trace")
    return json.loads(data)


def normalized(trace: dict) -> dict:
    """Process names without the host name TensorFlow puts first ('vm /host:CPU' -> '/host:CPU'),
    so that `tbd.analysis.trace` finds host and device processes as in jax.profiler's traces, and
    the profiler named as the trace's source."""
    for event in trace.get("traceEvents", []):
        if isinstance(event, dict) and event.get("ph") == "M" and event.get("name") == "process_name":
            name = str((event.get("args") or {}).get("name", ""))
            if "/" in name:
                event["args"]["name"] = name[name.index("/"):]
    trace["source"] = "tf"
    return trace


def capture(session, steps: int, path: Path, host: bool = True, meter=None) -> dict[str, Any]:
    """Trace `steps` steps into `path` (gzipped Chrome JSON); `meter` wraps only the steps."""
    import tensorflow as tf

    options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=2 if host else 1, python_tracer_level=0,
                                                       device_tracer_level=1)
    with tempfile.TemporaryDirectory(prefix="tbd-tf-trace-") as log_dir:
        tf.profiler.experimental.start(log_dir, options=options)
        try:
            with tf.profiler.experimental.Trace(WINDOW_NAME), (meter or contextlib.nullcontext()):
                times = session.run_steps(steps)
        finally:
            tf.profiler.experimental.stop()
        found = sorted(Path(log_dir).rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
        if not found:
            names = ", ".join(p.name for p in Path(log_dir).rglob("*") if p.is_file()) or "nothing"
            raise RuntimeError(f"tf.profiler wrote no .xplane.pb (found: {names})")
        trace = normalized(to_chrome_trace(found[-1]))
    with gzip.open(path, "wt", compresslevel=5) as f:
        json.dump(trace, f)
    activities = ["host"] + (["device"] if session.config.device == "cuda" else [])
    return {"profiler": f"tf.profiler {tf.__version__} (XSpace -> trace_viewer JSON)", "activities": activities, "step_s": times.seconds}
