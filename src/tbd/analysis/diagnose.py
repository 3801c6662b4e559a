"""What limits a run: one class, with the numbers that show it.

`pytest tests/analysis/test_diagnose.py` reaches every class from synthetic facts. The input is
a flat dict of facts (`report.facts` builds it from a record, its trace summary, its step-time
stability and an ncu pass); missing facts are None and the rules that need them are skipped.
Rules, in order (the first that holds is the class; the others that hold at a lower bar are
listed as secondary):
1. memory-capacity-limited: the allocator ran out (OOMs) or had to free its cache and retry;
2. input-bound: the host waits for input for >= 15% of the window (a run on a dataset on disk
   measures it at every step: the device idle until the next batch is ready);
3. communication-bound: collectives not overlapped by compute take >= 15% of the window;
4. host/launch-bound: the GPU is idle while the host is not waiting for it for >= 30% of the
   window (without a trace: NVML utilization < 50% while a CPU core is saturated); on a CPU run,
   all of training is host work, so this is the class unless input dominates;
5. otherwise the device is the limit: compute-bound when matrix/attention kernels take most of
   the kernel time (or, with ncu, tensor/FMA pipes are busy), memory-bandwidth-bound when
   elementwise, normalization, reduction, optimizer and copy kernels do.
"""

from __future__ import annotations

from typing import Any

from tbd.analysis.kernels import BANDWIDTH_CLASSES, COMPUTE_CLASSES

LABELS = {
    "compute-bound": "compute-bound",
    "memory-bandwidth-bound": "memory-bandwidth-bound",
    "host-bound": "host/launch-bound",
    "input-bound": "input-bound",
    "communication-bound": "communication-bound",
    "memory-capacity-limited": "memory-capacity-limited",
    "undetermined": "undetermined",
}
INPUT_PCT, COMM_PCT, HOST_IDLE_PCT = 15.0, 15.0, 30.0
NEAR_CAPACITY = 0.90


def _f(x: Any, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def diagnose(facts: dict[str, Any]) -> dict[str, Any]:
    g = facts.get
    found: list[tuple[str, str]] = []  # (class, evidence) in rule order, primary bar
    secondary: list[tuple[str, str]] = []
    notes: list[str] = []

    mem_frac = g("peak_reserved_bytes") / g("device_total_bytes") if g("peak_reserved_bytes") and g("device_total_bytes") else None
    if (g("ooms") or 0) > 0 or (g("alloc_retries") or 0) > 0:
        found.append(("memory-capacity-limited", f"allocator: {g('alloc_retries') or 0} cache-flush retries, {g('ooms') or 0} OOMs"
                      + (f"; peak reserved {mem_frac * 100:.0f}% of device memory" if mem_frac else "")))
    elif mem_frac is not None and mem_frac >= NEAR_CAPACITY:
        secondary.append(("memory-capacity-limited", f"peak reserved {mem_frac * 100:.0f}% of device memory: no room for a larger batch"))

    inp = g("input_wait_pct")
    if inp is not None:
        how = f" ({g('input_wait_how')})" if g("input_wait_how") else ""
        (found if inp >= INPUT_PCT else secondary if inp >= 5 else []).append(("input-bound", f"waiting for input {inp:.1f}% of the window{how}"))
    comm = g("exposed_comm_pct")
    if comm is not None:
        ev = f"collectives not hidden behind compute {comm:.1f}% of the window"
        (found if comm >= COMM_PCT else secondary if comm >= 5 else []).append(("communication-bound", ev))

    if g("device") == "cpu":
        cores = g("cpu_cores_busy")
        ev = (f"training runs on the CPU: {_f(cores)} of {g('cores') or '?'} cores busy ({_f(g('cpu_util_pct'))}% CPU utilization)"
              if cores is not None else "training runs on the CPU (its CPU use is not measurable: the steady window is too short)")
        top = g("host_top_class")
        if top:
            ev += f"; most CPU time in {top[0]} ops ({top[1]:.0f}%)"
        found.append(("host-bound", ev))
        notes.append("GPU-side measures (kernel utilization, tensor cores, launch gaps) do not apply to a CPU run")
    else:
        idle = g("gpu_idle_not_waiting_pct")
        util = g("gpu_util_trace_pct")
        if idle is not None:
            ev = (f"GPU idle while the host was not waiting for it {idle:.1f}% of the window "
                  f"(kernel utilization {_f(util)}%, host busy {_f(g('host_busy_pct'))}%)")
            (found if idle >= HOST_IDLE_PCT else secondary if idle >= 10 else []).append(("host-bound", ev))
        elif g("gpu_util_nvml_pct") is not None and g("gpu_util_nvml_pct") < 50 and (g("cpu_cores_busy") or 0) >= 0.8:
            found.append(("host-bound", f"NVML GPU utilization {g('gpu_util_nvml_pct'):.0f}% while {g('cpu_cores_busy'):.2f} CPU cores are busy"
                                        " (no trace: likely, not proven)"))
        device_class = _device_class(facts)
        if device_class:
            found.append(device_class)

    if not found:
        primary, evidence = "undetermined", "not enough measurements to tell"
        if not g("has_trace"):
            evidence += "; run again with --profile for kernel-level analysis"
    else:
        primary, evidence = found[0]
    others = [c for c in found[1:] + secondary if c[0] != primary]
    stall = g("stall_share_pct")
    if g("period_steps") and stall:
        notes.append(f"periodic stall every {g('period_steps')} steps costs {stall:.1f}% of the time")
    if g("data_synthetic"):
        notes.append("input: synthetic batches resident on the device, so time waiting for input is ~0 by construction")
    if g("data_skipped_samples"):
        notes.append(f"input: {g('data_skipped_samples')} corrupt sample(s) skipped and replaced during the run (method.data_skipped_files names them)")
    return {
        "class": primary,
        "label": "host-bound (CPU training)" if primary == "host-bound" and g("device") == "cpu" else LABELS[primary],
        "evidence": evidence,
        "secondary": [{"class": c, "label": LABELS[c], "evidence": e} for c, e in _unique(others)],
        "notes": notes,
    }


def _device_class(facts: dict[str, Any]) -> tuple[str, str] | None:
    """Compute- vs memory-bandwidth-bound, from ncu counters if present, else kernel classes."""
    g = facts.get
    shares = g("class_share") or {}
    if g("ncu_tensor_pipe_pct") is not None or g("ncu_fma_pipe_pct") is not None:
        pipe = max(g("ncu_tensor_pipe_pct") or 0, g("ncu_fma_pipe_pct") or 0)
        dram = g("ncu_dram_pct") or 0
        ev = (f"ncu, time-weighted: tensor pipe {_f(g('ncu_tensor_pipe_pct'))}%, FMA pipe {_f(g('ncu_fma_pipe_pct'))}%,"
              f" DRAM throughput {_f(g('ncu_dram_pct'))}% of peak")
        return ("memory-bandwidth-bound", ev) if dram > pipe else ("compute-bound", ev)
    if shares:
        comp = sum(shares.get(c, 0.0) for c in COMPUTE_CLASSES)
        bw = sum(shares.get(c, 0.0) for c in BANDWIDTH_CLASSES)
        ev = (f"kernel time: matmul/conv + attention {comp:.0f}%, elementwise/normalization/reduction/optimizer/copies {bw:.0f}%; "
              f"kernel utilization {_f(g('gpu_util_trace_pct'))}%, MFU {_f(g('mfu_pct'))}%, tensor cores {_f(g('tensor_core_share_pct'))}% of kernel time")
        return ("compute-bound", ev) if comp >= bw else ("memory-bandwidth-bound", ev)
    nvml = g("gpu_util_nvml_pct")
    if nvml is not None and nvml >= 80:
        if (g("mfu_pct") or 0) >= 30:
            return "compute-bound", f"NVML GPU utilization {nvml:.0f}% and MFU {g('mfu_pct'):.0f}% (no trace)"
        if (g("gpu_mem_bw_util_nvml_pct") or 0) >= 60:
            return "memory-bandwidth-bound", (f"NVML GPU utilization {nvml:.0f}%, memory-controller busy {g('gpu_mem_bw_util_nvml_pct'):.0f}%,"
                                              f" MFU {_f(g('mfu_pct'))}% (no trace)")
    return None


def _unique(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for c, e in items:
        if c not in seen:
            seen.add(c)
            out.append((c, e))
    return out
