"""Numbers read off a parsed trace: GPU utilization, kernel breakdown, host side.

`tbd analyze latest` prints them. Definitions (docs/analysis.md has them in full):
- GPU compute utilization = length of the union of kernel intervals inside the window / window
  (memory copies and sets run on copy engines and are reported apart);
- class shares are of summed kernel time (kernels on concurrent streams both count);
- host busy = union over threads of the host's own work (ops, runtime calls) minus the time it
  spends blocked in a device synchronization;
- GPU idle while the host is not waiting = window - kernel union - host sync waits: time the
  device had nothing to run although nobody was waiting for it (launch/host-bound time);
- input wait = union of data-loading spans.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from tbd.metrics import intervals as iv
from tbd.analysis import kernels
from tbd.analysis.trace import INPUT_SPAN, OPTIMIZER_SPAN, HostEvent, Trace

TOP_N = 15


def summarize(trace: Trace, steps: int | None = None) -> dict[str, Any]:
    window = trace.window
    win = max(trace.window_us, 1e-9)
    out: dict[str, Any] = {
        "source": trace.source,
        "window_ms": win / 1e3,
        "window_marker": trace.has_window_marker,
        "steps": steps,
        "device": _device(trace, window, win) if trace.device else None,
    }
    out["host"] = _host(trace, window, win, steps, out["device"])
    return out


def _pct(x: float, total: float) -> float:
    return 100.0 * x / total if total > 0 else 0.0


def _device(trace: Trace, window, win: float) -> dict[str, Any]:
    ks = [k for k in trace.kernels if k.end > window[0] and k.start < window[1]]
    dev = [d for d in trace.device if d.end > window[0] and d.start < window[1]]
    kernel_union = iv.union(iv.clip([(k.start, k.end) for k in ks], window))
    busy_union = iv.union(iv.clip([(d.start, d.end) for d in dev], window))
    gaps = iv.gaps(kernel_union, window)
    total = sum(d.dur for d in dev) or 1e-9
    by_class: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    by_name: dict[str, dict[str, Any]] = {}
    tensor = transpose = 0.0
    for d in dev:
        by_class[d.cls][0] += d.dur
        by_class[d.cls][1] += 1
        tensor += d.dur if d.tensor_cores else 0.0
        transpose += d.dur if kernels.is_layout_transpose(d.name) else 0.0
        row = by_name.setdefault(d.name, {"name": d.name, "class": d.cls, "tensor_cores": d.tensor_cores, "time_us": 0.0, "count": 0})
        row["time_us"] += d.dur
        row["count"] += 1
    classes = {c: {"time_ms": t / 1e3, "share_pct": _pct(t, total), "count": int(n)} for c, (t, n) in
               sorted(by_class.items(), key=lambda kv: -kv[1][0])}
    top = sorted(by_name.values(), key=lambda r: -r["time_us"])[:TOP_N]
    top_kernels = [{"name": r["name"], "short": kernels.short_name(r["name"]), "class": r["class"], "tensor_cores": r["tensor_cores"],
                    "time_ms": r["time_us"] / 1e3, "share_pct": _pct(r["time_us"], total), "count": r["count"],
                    "mean_us": r["time_us"] / r["count"]} for r in top]
    comm = iv.union(iv.clip([(d.start, d.end) for d in dev if d.cls == "communication"], window))
    compute = iv.union(iv.clip([(d.start, d.end) for d in ks if d.cls != "communication"], window))
    return {
        "kernels": len(ks),
        "device_events": len(dev),
        "kernel_time_ms": sum(k.dur for k in ks) / 1e3,
        "gpu_util_trace_pct": _pct(iv.length(kernel_union), win),
        "device_busy_pct": _pct(iv.length(busy_union), win),
        "idle_ms": (win - iv.length(kernel_union)) / 1e3,
        "idle_gaps": len(gaps),
        "largest_gap_ms": max(gaps, default=0.0) / 1e3,
        "classes": classes,
        "top_kernels": top_kernels,
        "tensor_core_share_pct": _pct(tensor, total),
        "layout_transpose_share_pct": _pct(transpose, total),
        "exposed_comm_pct": _pct(iv.length(iv.subtract(comm, compute)), win),
        "optimizer_kind": _optimizer_kind([d.name for d in dev if d.cls == "optimizer"]),
        "kernel_fill_share_pct": _fill_shares(ks),
        "_kernel_union": kernel_union,  # dropped before storing; used by the host side
    }


# Kernel time by how much of the GPU a kernel's grid covers (blocks per SM): a kernel of fewer
# blocks than SMs leaves SMs idle, and a larger batch adds blocks to it at little extra time
# (deepspeech2's GRU kernels at batch 8 on an H200: +167% from 4x the batch, where the model that
# assumed full kernels expected +53%). A fact for the calibration log; the estimates do not use it yet.
FILL_BINS = (("under_quarter", 0.25), ("quarter_to_one", 1.0), ("one_or_more", float("inf")))


def _fill_shares(ks) -> dict[str, float] | None:
    known = [k for k in ks if k.blocks_per_sm is not None]
    total = sum(k.dur for k in known)
    if not total:
        return None  # no grid sizes in this trace (JAX's, or a CPU run)
    shares = dict.fromkeys((name for name, _ in FILL_BINS), 0.0)
    for k in known:
        shares[next(name for name, upper in FILL_BINS if k.blocks_per_sm < upper)] += k.dur
    return {name: _pct(t, total) for name, t in shares.items()}


def _optimizer_kind(names: list[str]) -> str | None:
    if not names:
        return None
    text = " ".join(names).lower()
    if re.search(r"fused_optimizer|fused_?adam|fused_?sgd|fusedadam|fusedsgd|fused_?lamb", text):
        return "fused"
    if "multi_tensor_apply" in text or "_foreach_" in text:  # torch's foreach ops, on CPU and GPU
        return "foreach"
    return "per-parameter"


def _host(trace: Trace, window, win: float, steps: int | None, device: dict | None) -> dict[str, Any]:
    threads: dict[str, dict[str, list]] = defaultdict(lambda: {"busy": [], "sync": []})
    for h in trace.host:
        if h.role in ("busy", "sync") and h.end > window[0] and h.start < window[1]:
            threads[h.thread][h.role].append((h.start, h.end))
    busy_parts, sync_parts = [], []
    for parts in threads.values():
        sync = iv.union(iv.clip(parts["sync"], window))
        busy_parts += iv.subtract(iv.union(iv.clip(parts["busy"], window)), sync)
        sync_parts += sync
    busy, sync = iv.union(busy_parts), iv.union(sync_parts)
    inputs = iv.union(iv.clip([(h.start, h.end) for h in trace.spans(INPUT_SPAN)], window))
    out: dict[str, Any] = {
        "busy_pct": _pct(iv.length(busy), win),
        "sync_wait_pct": _pct(iv.length(sync), win),
        "input_wait_pct": _pct(iv.length(inputs), win),
        "input_spans": len(trace.spans(INPUT_SPAN)),
        "threads": len(threads),
    }
    top_level = _self_times(trace, window)
    ops = [r for r in top_level if r["depth"] == 0]
    out["ops_per_step"] = len(ops) / steps if steps else None
    launches = [h for h in trace.host if re.search(r"LaunchKernel|cuLaunch", h.name) and window[0] <= h.start < window[1]]
    out["launches_per_step"] = len(launches) / steps if steps and launches else None
    out["op_classes"], out["top_ops"] = _op_breakdown(top_level)
    out["optimizer_kind"] = _optimizer_kind([r["name"] for r in top_level if r["optimizer"]])
    if device is not None:
        idle = iv.complement(device.pop("_kernel_union"), window)
        out["gpu_idle_host_busy_pct"] = _pct(iv.length(iv.intersect(idle, busy)), win)
        out["gpu_idle_not_waiting_pct"] = _pct(iv.length(iv.subtract(idle, sync)), win)
    return out


def _self_times(trace: Trace, window) -> list[dict[str, Any]]:
    """Self time of each host op (its time minus its direct children's), per thread, with its
    nesting depth and whether it ran inside an optimizer step."""
    by_thread: dict[str, list[HostEvent]] = defaultdict(list)
    opt = iv.union((h.start, h.end) for h in trace.spans(OPTIMIZER_SPAN))
    for h in trace.host:
        if h.role == "busy" and h.end > window[0] and h.start < window[1]:
            by_thread[h.thread].append(h)
    rows: list[dict[str, Any]] = []
    for events in by_thread.values():
        events.sort(key=lambda h: (h.start, -h.dur))
        stack: list[dict[str, Any]] = []
        for h in events:
            while stack and h.start >= stack[-1]["end"] - 1e-6:
                stack.pop()
            row = {"name": h.name, "end": h.end, "self_us": h.dur, "depth": len(stack), "category": h.category,
                   "optimizer": bool(iv.intersect([(h.start, h.end)], opt))}
            if stack:
                stack[-1]["self_us"] -= h.dur
            stack.append(row)
            rows.append(row)
    return rows


def _op_breakdown(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Host self time by class (what the CPU computes on a CPU run; dispatch and launch work on
    a GPU run) and the ops with the most self time."""
    by_class: dict[str, float] = defaultdict(float)
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for r in rows:
        if r["category"] in ("cuda_runtime", "cuda_driver"):
            cls = "launch/runtime"
        else:
            cls = "optimizer" if r["optimizer"] else kernels.classify(r["name"])
        t = max(r["self_us"], 0.0)
        by_class[cls] += t
        by_name[r["name"]][0] += t
        by_name[r["name"]][1] += 1
    total = sum(by_class.values()) or 1e-9
    classes = {c: {"time_ms": t / 1e3, "share_pct": _pct(t, total)} for c, t in sorted(by_class.items(), key=lambda kv: -kv[1])}
    top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:TOP_N]
    return classes, [{"name": n, "class": kernels.classify(n), "self_ms": t / 1e3, "share_pct": _pct(t, total), "count": int(c)} for n, (t, c) in top]
