"""Memory categories, size parsing and the shape of a memory profile (no framework imported).

`tbd memory resnet50` prints a breakdown in these categories. The first seven add up to what the
framework's allocator had allocated at the step's peak; the last two are device memory beyond it.
"""

from __future__ import annotations

import os
import re
from typing import Any

from tbd.errors import UsageError

# (key, label, meaning); the order is the order of every table and plot.
CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("weights", "weights", "the model's parameters and buffers (e.g. BatchNorm statistics)"),
    ("gradients", "gradients", "gradients of the parameters (PyTorch: their .grad tensors)"),
    ("optimizer_state", "optimizer state", "momentum / Adam moments / step counters kept by the optimizer"),
    ("input_batch", "input batch", "the batch of synthetic data the step consumes"),
    ("feature_maps", "feature maps", "activations saved by the forward pass for the backward pass"),
    ("workspace", "workspace / temporaries", "tensors created and freed within the step that are not saved for backward, and scratch space inside ops"),
    ("unattributed", "unattributed", "allocated bytes no tensor of the other categories accounts for (allocator rounding, tensors from outside the step)"),
    ("allocator_cache", "allocator cache", "memory the allocator reserved from the device but is not using"),
    ("framework_overhead", "framework / context", "device memory of the process the allocator does not see (CUDA context, kernels, libraries)"),
)
KEYS = tuple(k for k, _, _ in CATEGORIES)
LABELS = {k: label for k, label, _ in CATEGORIES}
MEANINGS = {k: meaning for k, _, meaning in CATEGORIES}
# Categories held in the allocator's allocated bytes; the rest lie beyond them.
ALLOCATED_KEYS = KEYS[:7]
# Colours for the plot, one per category (colour-blind-safe order of matplotlib's tab10).
COLORS = {
    "weights": "#1f77b4", "gradients": "#ff7f0e", "optimizer_state": "#2ca02c", "input_batch": "#9467bd",
    "feature_maps": "#d62728", "workspace": "#8c564b", "unattributed": "#7f7f7f",
    "allocator_cache": "#bcbd22", "framework_overhead": "#17becf",
}

_UNITS = {
    "": 1, "b": 1, "bytes": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """'80GiB', '512MiB', '16GB', '1.5 GiB', '1000000B' -> bytes (GB is 10^9, GiB is 2^30). A bare
    number is refused: '16' meant as GiB would otherwise be read as 16 bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match and not unit:
        raise UsageError(f"memory size '{text}' has no unit; write it like {text}GiB, {text}GB or {text}MiB")
    if not match or unit not in _UNITS:
        raise UsageError(f"cannot read memory size '{text}'; write it like 80GiB, 512MiB or 16GB")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UsageError(f"memory size must be positive, got '{text}'")
    return value


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024
    return str(n)


def empty_categories() -> dict[str, int]:
    return {k: 0 for k in KEYS}


def allocated_total(categories: dict[str, int]) -> int:
    return int(sum(categories.get(k, 0) for k in ALLOCATED_KEYS))


def device_total(categories: dict[str, int]) -> int:
    return int(sum(categories.get(k, 0) for k in KEYS))


def shares(categories: dict[str, int]) -> dict[str, float]:
    """Each category as a percentage of the allocated total at the peak."""
    total = allocated_total(categories)
    return {k: (100.0 * categories.get(k, 0) / total if total else 0.0) for k in KEYS}


def downsample(timeline: dict[str, Any], keep: int, max_points: int = 400) -> dict[str, Any]:
    """Thin a timeline to at most max_points samples, always keeping sample `keep` (the peak)."""
    n = len(timeline.get("phase", []))
    if n <= max_points:
        return timeline
    stride = n / max_points
    picked = sorted({int(i * stride) for i in range(max_points)} | {keep, n - 1})
    out = {key: [values[i] for i in picked] for key, values in timeline.items() if key not in ("categories", "axis")}
    out["axis"] = timeline.get("axis", "")
    out["categories"] = {k: [v[i] for i in picked] for k, v in timeline["categories"].items()}
    return out


def new_profile(**fields: Any) -> dict[str, Any]:
    """The JSON document `tbd memory` writes; see docs/memory.md for each field."""
    profile: dict[str, Any] = {
        "kind": "memory_profile",
        "status": "ok",  # 'ok' or 'oom'
        "error": None,
        "framework": None,
        "device": None,
        "batch_size": None,
        "precision": None,
        "peak": {"categories": empty_categories(), "allocated_bytes": 0, "device_bytes": 0, "phase": None, "op": None, "index": None},
        "allocator": {},  # readings of the framework's allocator and NVML, bytes
        "analytic": {},  # sizes computed from shapes, for checking weights/gradients/optimizer state
        "layers": [],  # [{layer, type, bytes}], feature-map bytes per layer, largest first
        "timeline": {"index": [], "phase": [], "categories": {k: [] for k in KEYS}},
        "method": {},  # how each category was obtained, what is measured and what is estimated
    }
    profile.update(fields)
    return profile


def finish_peak(profile: dict[str, Any], categories: dict[str, int]) -> None:
    peak = profile["peak"]
    peak["categories"] = {k: int(categories.get(k, 0)) for k in KEYS}
    peak["allocated_bytes"] = allocated_total(peak["categories"])
    peak["device_bytes"] = device_total(peak["categories"])
    peak["shares_pct"] = shares(peak["categories"])


def mark_oom(profile: dict[str, Any], batch_size: int, exc: BaseException) -> None:
    """A profile whose step ran out of memory: what was known up to then, and the fix."""
    profile["status"] = "oom"
    profile["error"] = (f"out of memory at batch size {batch_size} ({str(exc).splitlines()[0][:200]});"
                        " the breakdown is what was known up to then; try a smaller --batch-size")


RESIDENT = ("weights", "optimizer_state", "input_batch")  # held from one step to the next


def three_point_timeline(categories: dict[str, int], axis: str) -> dict[str, Any]:
    """A timeline of the step's start, peak and end, where the framework has no trace of its
    allocations (XLA's analysis, TensorFlow's allocator peak): only resident bytes at the ends."""
    start = {k: (categories[k] if k in RESIDENT else 0) for k in categories}
    return {"axis": axis, "index": [0, 1, 2], "phase": ["start", "peak", "end"], "op": ["step start", "peak", "step end"],
            "categories": {k: [start[k], categories[k], start[k]] for k in categories}}


def nvml_process_bytes(index: int) -> int | None:
    """Device memory NVML charges to this process (None where NVML cannot see it, e.g. in some
    containers whose process ids differ from the host's)."""
    from tbd.metrics.devices import device_handle, nvml

    lib = nvml()
    if lib is None:
        return None
    try:
        handle = device_handle(lib, index)
        for proc in lib.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return int(proc.usedGpuMemory)
    except Exception:
        return None
    return None
