"""Trace of a few steady JAX steps with jax.profiler.

`tbd run resnet50 --framework jax --profile` calls `capture` (through the plugin) from the harness once the timed
steps are done. jax.profiler writes `<log_dir>/plugins/profile/<stamp>/<host>.trace.json.gz`
(Chrome trace format, the one Perfetto and TensorBoard read); it is copied next to the run's
record. Only the session's `run_steps` is used, inside one `TraceAnnotation` that marks the
window.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tbd.frameworks.base import WINDOW_NAME


def capture(session, steps: int, path: Path, host: bool = True, meter=None) -> dict[str, Any]:
    """Trace `steps` steps and copy jax.profiler's trace to `path`; `meter` wraps the steps."""
    import jax

    with tempfile.TemporaryDirectory(prefix="tbd-jax-trace-") as log_dir:
        with jax.profiler.trace(log_dir):
            with jax.profiler.TraceAnnotation(WINDOW_NAME), (meter or contextlib.nullcontext()):
                times = session.run_steps(steps)
        found = sorted(Path(log_dir).rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
        found = found or sorted(Path(log_dir).rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
        if not found:
            names = ", ".join(p.name for p in Path(log_dir).rglob("*") if p.is_file()) or "nothing"
            raise RuntimeError(f"jax.profiler wrote no .trace.json.gz (found: {names})")
        shutil.copyfile(found[-1], path)
    return {"profiler": f"jax.profiler {jax.__version__}", "activities": ["host", "device"], "step_s": times.seconds}
