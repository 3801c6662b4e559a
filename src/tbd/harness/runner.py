"""One measured run in this process: workload x framework plugin, timed by the harness.

`execute(config)` never raises for a run that started: an OOM, a NaN or an exception becomes a
record with status 'failed' and an error {kind, message}. Bad input is caught earlier, by
`RunConfig.validated()`. `tbd run resnet50 --in-process` calls it directly; the launchers call
it in a child process.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import traceback
from collections.abc import Callable
from typing import Any

from tbd import frameworks, registry
from tbd.config import RunConfig
from tbd.errors import RunFailure
from tbd.harness.measure import derive_metrics, measure
from tbd.harness.profiling import trace_run
from tbd.metrics.sampling import Probe
from tbd.results import environment
from tbd.results.record import RunRecord


def execute(config: RunConfig, progress: Callable[[dict], None] | None = None, run_id: str | None = None) -> RunRecord:
    began = time.time()
    spec = registry.get_spec(config.workload)
    plugin = registry.framework(config.framework)
    record = RunRecord.for_run(config, spec, run_id)
    record.environment = environment.capture(config.device, plugin.libraries)
    session = probe = warmup_memory = None
    phases = Phases(began)
    try:
        probe = Probe(0 if config.device == "cuda" else None)
        phases.mark("environment_s")
        session = frameworks.open_session(config)
        phases.mark("build_s")
        _inject_fault()
        m = measure(session, config, progress, probe, spec.irregular_steps)
        phases.mark("measure_s")
        warmup_memory = m.warmup_memory
        fill_measurement(record, session, m, config, spec)
        if config.profile:  # a kernel trace of a few more steady steps, outside the timed ones
            record.analysis = trace_run(session, config, record)
            phases.mark("trace_s")
        record.method["phases"] = phases.seconds
        record.succeed()
    except RunFailure as exc:
        record.fail(exc.kind, str(exc))
    except Exception as exc:  # any failure inside a run is an outcome to record, not a crash
        record.fail(**classify(exc, config))
    finally:
        record.memory = _memory(session, probe, warmup_memory)
        if session is not None:
            session.close()
    return record


class Phases:
    """Wall seconds of a run's phases, in order (`method.phases`: where a run's time went, beside
    the measured window; `started_at` is the epoch time `execute` began, so a launcher can tell
    the process's start-up from the rest)."""

    def __init__(self, began: float):
        self.last = began
        self.seconds: dict[str, float] = {"started_at": began}

    def mark(self, name: str) -> None:
        now = time.time()
        self.seconds[name], self.last = now - self.last, now


def fill_measurement(record: RunRecord, session, m, config: RunConfig, spec) -> None:
    """Metrics, method, raw samples and the session's facts of a finished measurement."""
    info = session.info
    counted = (info.flops_per_sample, info.flops_note) if info.flops_per_sample is not None else None
    metrics, method = derive_metrics(m, config, spec, info.device_name, os.cpu_count() or 1, counted_flops=counted)
    record.metrics = metrics
    record.method = {**method, **session.info.method}
    record.environment.update(device_name=session.info.device_name, framework_version=session.info.framework_version)
    record.environment["conditions"] = {**m.conditions, "intra_op_threads": session.info.method.get("intra_op_threads")}
    record.workload["num_parameters"] = session.info.num_parameters
    record.samples = {"step_s": m.step_s, "units": m.units, "samples": m.samples, "chunk_ends": m.chunk_ends}
    skipped = getattr(session, "data_skipped", None)
    if m.input_wait_s is not None:  # a dataset on disk: the waits per step, and the corrupt files skipped
        record.samples.update(input_wait_s=m.input_wait_s, input_stall_s=m.input_stall_s)
        record.metrics["data_skipped_samples"] = len(skipped or [])
        if skipped:
            record.method["data_skipped_files"] = skipped[:20]


def _inject_fault() -> None:
    """Test hook: TBD_INJECT_FAULT=crash|oom|error makes the run fail that way, so the tests can
    check that failures become stored records without needing a real crash or a full GPU."""
    fault = os.environ.get("TBD_INJECT_FAULT")
    if fault == "crash":
        os._exit(3)
    if fault == "oom":
        raise MemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
    if fault == "error":
        raise RuntimeError("injected failure")


def hang_for_tests() -> None:
    """Test hook: a run that never reports. It touches TBD_TEST_READY_FILE first (where set), so
    a test that signals or kills it waits for this point, however slow the machine, instead of a
    fixed time."""
    if ready := os.environ.get("TBD_TEST_READY_FILE"):
        with open(ready, "a"):
            pass
    time.sleep(3600)


# What allocation failures say: CUDA and XLA devices, and the host (PyTorch's CPU allocator,
# NumPy, C++ new). An allocation failure at a large batch is out of memory wherever it happens.
OOM_TEXT = re.compile(r"out of memory|RESOURCE_EXHAUSTED|can't allocate memory|not enough memory|Cannot allocate memory"
                      r"|Unable to allocate|bad_alloc|failed to allocate", re.I)


def classify(exc: BaseException, config: RunConfig) -> dict[str, str]:
    """{kind, message, traceback} of an exception raised inside a run."""
    text = f"{type(exc).__name__}: {exc}"
    first_line = text.strip().splitlines()[0][:300]
    if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__ or OOM_TEXT.search(text):
        return {"kind": "oom", "message": f"out of memory at batch size {config.batch_size} ({first_line}); try a smaller --batch-size",
                "traceback": traceback.format_exc()}
    return {"kind": "error", "message": first_line, "traceback": traceback.format_exc()}


def _memory(session, probe, warmup: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        if session is not None:
            out.update(session.memory())
    except Exception:
        pass
    out.update(split_peaks(out, warmup))
    if probe is not None:
        out.update(probe.close())
    return out


def losses_on_fixed_batch(config: RunConfig, steps: int) -> list[float]:
    """Train `steps` steps on one fixed batch and return each step's loss: the check that a
    workload really learns (used by the tests of every workload x framework)."""
    session = frameworks.open_session(dataclasses.replace(config, data_pool=1))
    try:
        losses = []
        for _ in range(steps):
            session.run_steps(1)
            losses.append(session.last_loss())
        return losses
    finally:
        session.close()


def split_peaks(final: dict[str, Any], warmup: dict[str, Any] | None) -> dict[str, Any]:
    """Where the session's peak counter was reset after the warm-up pass, its final peaks are the
    steady steps' (`steady_peak_*`); the run's peaks (`peak_*`) stay the larger of the two, and
    `warmup_peak_*` keep what the first pass reached (cuDNN's autotuner tries algorithms with
    workspaces of many GiB there: faster_rcnn's 34 GiB on an H200 against a few GiB steady)."""
    if not warmup:
        return {}
    out: dict[str, Any] = {}
    for kind in ("allocated", "reserved"):
        key = f"peak_{kind}_bytes"
        steady, first = final.get(key), warmup.get(key)
        if steady is None or first is None:
            continue
        out[f"steady_{key}"], out[f"warmup_{key}"], out[key] = steady, first, max(steady, first)
    return out
