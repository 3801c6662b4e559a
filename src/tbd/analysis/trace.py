"""Framework-neutral parser of Chrome/Perfetto trace JSON (torch.profiler, jax.profiler, tf.profiler).

`tbd analyze latest` reads a run's trace with `load_trace(path)`. The two profilers write the
same event format (complete events, `ph: "X"`, microsecond `ts`/`dur`) but mark the device
differently:
- torch.profiler (Kineto): categories `kernel`, `gpu_memcpy`, `gpu_memset` are device
  activity; `cpu_op`, `user_annotation`, `cuda_runtime`, `cuda_driver` are host activity; a
  kernel's `args.correlation` matches the runtime call that launched it.
- jax.profiler: a process named `/device:GPU:N` holds device activity on threads named
  `Stream ...` (other threads there, e.g. "XLA Ops", repeat the same time as annotations and
  are skipped); `/host:CPU` holds host activity. tf.profiler's traces (converted from its XSpace
  by the TensorFlow plugin) have the same layout and name their source.
The measured window is the host annotation `tbd.profiled_steps` that the capture puts around
the profiled steps; a trace without it uses the span of all its events.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tbd.analysis import kernels
from tbd.errors import UsageError

from tbd.frameworks.base import WINDOW_NAME  # the capture's window annotation
# Host spans whose kernels and ops belong to the optimizer, and spans that wait for input.
OPTIMIZER_SPAN = re.compile(r"^Optimizer\.step#|optimizer[._]step|tbd\.optimizer", re.IGNORECASE)
INPUT_SPAN = re.compile(r"enumerate\(DataLoader\)|DataLoader|_next_data|data[_ ]?load|tbd\.data|input_pipeline|get_batch|prefetch", re.IGNORECASE)
# Host calls that block until the device catches up: while in them the host is not the bottleneck.
SYNC_CALL = re.compile(r"synchronize|^cudaMemcpy$|^cuMemcpyDtoH|block_?until_?ready|BlockHostUntilReady|::Await$|wait for completion", re.IGNORECASE)
SKIP_CATEGORIES = {"gpu_user_annotation", "Trace", "ac2g", "fwdbwd", "flow", "overhead", "cuda_profiler_range"}


@dataclass
class DeviceEvent:
    name: str
    start: float  # microseconds
    dur: float
    kind: str  # kernel | memcpy | memset
    stream: str
    cls: str = "other"
    tensor_cores: bool = False
    launch_ts: float | None = None  # host time of the launching runtime call (torch)
    blocks_per_sm: float | None = None  # the kernel's grid over the GPU's SMs (CUPTI, in torch's traces)

    @property
    def end(self) -> float:
        return self.start + self.dur


@dataclass
class HostEvent:
    name: str
    start: float
    dur: float
    thread: str
    category: str
    role: str  # busy (the host works) | sync (it waits for the device) | span (an annotation) | python


    @property
    def end(self) -> float:
        return self.start + self.dur


@dataclass
class Trace:
    path: str
    source: str  # torch | jax | unknown
    window: tuple[float, float]
    has_window_marker: bool
    device: list[DeviceEvent] = field(default_factory=list)
    host: list[HostEvent] = field(default_factory=list)

    @property
    def window_us(self) -> float:
        return self.window[1] - self.window[0]

    def spans(self, pattern: re.Pattern) -> list[HostEvent]:
        return [h for h in self.host if h.role == "span" and pattern.search(h.name)]

    @property
    def kernels(self) -> list[DeviceEvent]:
        return [e for e in self.device if e.kind == "kernel"]


def read_events(path: str | Path) -> dict:
    """The trace's JSON object; a missing, truncated or non-trace file is a one-line UsageError."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"trace file {p} does not exist; run again with --profile to record a new one")
    try:
        raw = p.read_bytes()
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        data = json.loads(text)
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as exc:
        raise UsageError(f"trace file {p} cannot be read ({type(exc).__name__}: {str(exc)[:80]}); run again with --profile to record a new one") from None
    if isinstance(data, list):  # the JSON-array form of the format
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise UsageError(f"trace file {p} is not a Chrome/Perfetto trace (no traceEvents list); run again with --profile")
    return data


def load_trace(path: str | Path) -> Trace:
    data = read_events(path)
    events = data["traceEvents"]
    process_names: dict = {}
    thread_names: dict = {}
    for e in events:
        if isinstance(e, dict) and e.get("ph") == "M":
            if e.get("name") == "process_name":
                process_names[e.get("pid")] = str((e.get("args") or {}).get("name", ""))
            elif e.get("name") == "thread_name":
                thread_names[(e.get("pid"), e.get("tid"))] = str((e.get("args") or {}).get("name", ""))
    # A capture may name its profiler ("source": TensorFlow's traces have jax.profiler's layout).
    source = str(data["source"]) if isinstance(data.get("source"), str) else "torch" if ("deviceProperties" in data or "schemaVersion" in data) else (
        "jax" if any(n.startswith("/host:") or n.startswith("/device:") for n in process_names.values()) else "unknown")
    trace = Trace(path=str(path), source=source, window=(0.0, 0.0), has_window_marker=False)
    launches: dict = {}  # correlation id -> host ts of the runtime launch call (torch)
    pending: list[tuple[DeviceEvent, object]] = []
    for e in events:
        if not isinstance(e, dict) or e.get("ph") != "X":
            continue
        try:
            start, dur = float(e["ts"]), float(e.get("dur", 0.0))
        except (KeyError, TypeError, ValueError):
            continue
        name = str(e.get("name", ""))
        cat = str(e.get("cat", ""))
        args = e.get("args") or {}
        pid, tid = e.get("pid"), e.get("tid")
        pname = process_names.get(pid, "")
        tname = thread_names.get((pid, tid), str(tid))
        device_kind = _device_kind(cat, pname, tname, name)
        if device_kind == "skip":
            continue
        if device_kind:
            ev = DeviceEvent(name=name, start=start, dur=dur, kind=device_kind, stream=str(args.get("stream", tname)))
            detail = str(args.get("long_name", "") or args.get("hlo_op", ""))
            ev.cls = kernels.classify(name) if device_kind == "kernel" else "memcpy/memset"
            ev.tensor_cores = kernels.uses_tensor_cores(name, ev.cls, detail)
            if isinstance(args.get("blocks per SM"), (int, float)):
                ev.blocks_per_sm = float(args["blocks per SM"])
            trace.device.append(ev)
            pending.append((ev, args.get("correlation")))
            continue
        if cat in SKIP_CATEGORIES:
            continue
        if cat in ("cuda_runtime", "cuda_driver") and "correlation" in args:
            launches[args["correlation"]] = start
        if name == WINDOW_NAME:
            trace.window, trace.has_window_marker = (start, start + dur), True
            continue
        trace.host.append(HostEvent(name=name, start=start, dur=dur, thread=f"{pid}/{tid}", category=cat, role=_host_role(name, cat)))
    for ev, corr in pending:
        if corr is not None and corr in launches:
            ev.launch_ts = launches[corr]
    _attribute_optimizer(trace)
    if not trace.has_window_marker:
        spans = [(e.start, e.end) for e in trace.device] + [(h.start, h.end) for h in trace.host]
        if not spans:
            raise UsageError(f"trace file {path} holds no timed events; run again with --profile")
        trace.window = (min(s for s, _ in spans), max(e for _, e in spans))
    return trace


def _device_kind(cat: str, pname: str, tname: str, name: str) -> str | None:
    """'kernel', 'memcpy', 'memset' for device activity, 'skip' for device-side duplicates,
    None for host events."""
    lowered = cat.lower()
    if lowered in ("kernel", "cuda_kernel", "gpu_kernel"):
        return "kernel"
    if lowered == "gpu_memcpy":
        return "memcpy"
    if lowered == "gpu_memset":
        return "memset"
    if pname.startswith("/device:"):
        if not re.search(r"stream", tname, re.IGNORECASE):
            return "skip"
        lname = name.lower()
        if lname.startswith("memcpy"):
            return "memcpy"
        if lname.startswith("memset"):
            return "memset"
        return "kernel"
    return None


def _host_role(name: str, cat: str) -> str:
    """Annotations span other work (and its waits), so they never count as the host being busy;
    Python-tracer frames ('$file:line fn', JAX) likewise span whole calls."""
    if cat == "user_annotation" or name.startswith("tbd.") or OPTIMIZER_SPAN.search(name) or INPUT_SPAN.search(name):
        return "span"
    if SYNC_CALL.search(name):
        return "sync"
    if name.startswith("$"):
        return "python"
    return "busy"


def _attribute_optimizer(trace: Trace) -> None:
    """Kernels launched from inside an optimizer step are optimizer time, whatever their name
    (a per-parameter SGD update is a plain elementwise kernel)."""
    spans = sorted((a.start, a.end) for a in trace.spans(OPTIMIZER_SPAN))
    if not spans:
        return
    import bisect

    starts = [s for s, _ in spans]
    for ev in trace.device:
        if ev.launch_ts is None or ev.kind != "kernel":
            continue
        i = bisect.bisect_right(starts, ev.launch_ts) - 1
        if i >= 0 and ev.launch_ts <= spans[i][1]:
            ev.cls = "optimizer"
            ev.tensor_cores = False
