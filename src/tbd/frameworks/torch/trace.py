"""Kernel trace of a few steady PyTorch steps with torch.profiler (CPU + CUDA activities).

`tbd run resnet50 --profile` calls `capture` (through the plugin) from the harness once the timed steps are done. The
profiled steps run through the session's own `run_steps`, so they are the same steps the
harness timed, inside one host annotation (`tbd.profiled_steps`) that marks the window.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tbd.frameworks.base import WINDOW_NAME


def capture(session, steps: int, path: Path, host: bool = True, meter=None) -> dict[str, Any]:
    """Trace `steps` steps into `path` (gzipped Chrome JSON); `meter` (a context manager) wraps
    only the steps, not the profiler's start and export."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = getattr(session, "device", None) is not None and session.device.type == "cuda"
    activities = ([ProfilerActivity.CPU] if host or not cuda else []) + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    else:
        # Kineto's C++ log (read when the profiler starts) would print "gpuGetDeviceCount failed"
        # and its start/stop markers on a host without a GPU: nothing a CPU run needs to see.
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    # record_shapes/with_stack stay off: they multiply the trace size and the profiler's overhead.
    with profile(activities=activities, record_shapes=False, with_stack=False) as prof:
        with record_function(WINDOW_NAME), (meter or contextlib.nullcontext()):
            times = session.run_steps(steps)
    with tempfile.TemporaryDirectory(prefix="tbd-trace-") as tmp:
        raw = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(raw)
        with open(raw, "rb") as src, gzip.open(path, "wb", compresslevel=5) as dst:
            shutil.copyfileobj(src, dst)
    return {"profiler": f"torch.profiler {torch.__version__}", "activities": [a.name for a in activities], "step_s": times.seconds}
