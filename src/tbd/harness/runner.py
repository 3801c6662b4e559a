"""One measured run in this process: workload x framework adapter, timed by the harness.

`execute(config)` never raises for a run that started: an OOM, a NaN or an exception becomes a
record with status 'failed' and an error {kind, message}. Bad input is caught earlier, by
`RunConfig.validated()`.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any

from tbd import registry
from tbd.config import RunConfig
from tbd.errors import RunFailure
from tbd.harness.measure import derive_metrics, measure
from tbd.metrics.sampling import Probe
from tbd.results import environment
from tbd.results.record import new_record, new_run_id


def execute(config: RunConfig, progress: Callable[[dict], None] | None = None, run_id: str | None = None) -> dict[str, Any]:
    spec = registry.get_spec(config.workload)
    record = new_record(run_id or new_run_id(config.workload, config.framework), config.to_dict())
    flavor = spec.flavor(config.flavor)
    record["workload"] = {
        "name": spec.name, "domain": spec.domain, "dataset": spec.dataset, "unit": spec.unit,
        "sample_unit": spec.sample_unit, "flavor": flavor.name, "hparams": config.resolved_hparams(),
    }
    record["environment"] = environment.capture(config.device)
    session = probe = None
    try:
        impl = registry.load_implementation(config.workload, config.framework)
        adapter = registry.load_adapter(config.framework)
        probe = Probe(0 if config.device == "cuda" else None)
        session = adapter.open_session(config, spec, impl)
        _inject_fault()
        m = measure(session, config, progress, probe)
        metrics, method = derive_metrics(m, config, spec, session.info.device_name, os.cpu_count() or 1)
        record["metrics"] = metrics
        record["method"] = {**method, **session.info.method}
        record["environment"]["device_name"] = session.info.device_name
        record["environment"]["framework_version"] = session.info.framework_version
        record["workload"]["num_parameters"] = session.info.num_parameters
        record["samples"] = {"step_s": m.step_s, "units": m.units, "samples": m.samples, "chunk_ends": m.chunk_ends}
        if config.profile:  # a kernel trace of a few more steady steps, outside the timed ones (tbd.analysis)
            from tbd.analysis.capture import profile_run

            record["analysis"] = profile_run(session, config, record)
        record["status"] = "ok"
    except RunFailure as exc:
        record["error"] = {"kind": exc.kind, "message": str(exc)}
    except Exception as exc:  # any failure inside a run is an outcome to record, not a crash
        record["error"] = classify(exc, config)
    finally:
        record["memory"] = _memory(session, probe)
        if session is not None:
            session.close()
    return record


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


def classify(exc: BaseException, config: RunConfig) -> dict[str, str]:
    text = f"{type(exc).__name__}: {exc}"
    first_line = text.strip().splitlines()[0][:300]
    if "OutOfMemory" in type(exc).__name__ or "out of memory" in text.lower() or "RESOURCE_EXHAUSTED" in text:
        return {"kind": "oom", "message": f"out of memory at batch size {config.batch_size} ({first_line}); try a smaller --batch-size", "traceback": traceback.format_exc()}
    return {"kind": "error", "message": first_line, "traceback": traceback.format_exc()}


def _memory(session, probe) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        if session is not None:
            out.update(session.memory())
    except Exception:
        pass
    if probe is not None:
        out.update(probe.close())
    return out


def losses_on_fixed_batch(config: RunConfig, steps: int) -> list[float]:
    """Train `steps` steps on one fixed batch and return each step's loss: the check that a
    workload really learns (used by the tests of every workload x framework)."""
    import dataclasses

    config = dataclasses.replace(config, data_pool=1)
    spec = registry.get_spec(config.workload)
    impl = registry.load_implementation(config.workload, config.framework)
    session = registry.load_adapter(config.framework).open_session(config, spec, impl)
    try:
        losses = []
        for _ in range(steps):
            session.run_steps(1)
            losses.append(session.last_loss())
        return losses
    finally:
        session.close()
