"""The conditions a run measured under: what explains noise on a busy machine.

`ConditionsMonitor` reads the machine before the first step and after the last: load average,
the CPU time that *other* processes used in between (system busy time minus this process tree's),
the busiest other processes, this process's thread count, the CPU frequency governor and clock,
and on a GPU the SM/memory clocks, temperature, clock throttle reasons and other processes on
the device (where NVML gives them). `intra_op_threads()` is the thread count a CPU run should use.

Every reading is best effort: a field that this machine does not expose is None, never a guess.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil

from tbd.metrics.devices import device_handle, nvml

# NVML clock-throttle reason bits (nvmlClocksEventReason*); "idle" and "applications clocks"
# are the normal state of a GPU and are not reported as throttling.
THROTTLE_BITS = {0x2: "applications clocks setting", 0x4: "software power cap", 0x8: "hardware slowdown",
                 0x10: "sync boost", 0x20: "software thermal slowdown", 0x40: "hardware thermal slowdown",
                 0x80: "hardware power brake", 0x100: "display clocks setting"}
BENIGN_THROTTLE = {"applications clocks setting", "sync boost", "display clocks setting"}


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def intra_op_threads(processes: int = 1) -> dict[str, Any]:
    """Threads for a CPU run's intra-op pool: OMP_NUM_THREADS when the user set it, else the usable
    CPUs shared out between the run's processes (more threads than cores only adds contention)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return {"intra_op": int(env), "source": "OMP_NUM_THREADS"}
    cpus = usable_cpus()
    return {"intra_op": max(1, cpus // max(1, processes)), "source": f"{cpus} usable CPU(s) (affinity, cgroup quota) / {processes} process(es)"}


def _governor() -> str | None:
    try:
        values = {p.read_text().strip() for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor")}
    except OSError:
        return None
    return ",".join(sorted(values)) or None


def _busy_s() -> float:
    t = psutil.cpu_times()  # guest time is already inside user time on Linux: not added twice
    return t.user + t.system + sum(getattr(t, k, 0.0) for k in ("nice", "irq", "softirq"))


def _tree_cpu_s(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *_children(proc)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        except psutil.Error:
            continue
    return total


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _gpu(index: int) -> dict[str, Any] | None:
    lib = nvml()
    if lib is None:
        return None
    try:
        handle = device_handle(lib, index)
    except Exception:
        return None
    out: dict[str, Any] = {}
    for key, read in (("sm_clock_mhz", lambda: lib.nvmlDeviceGetClockInfo(handle, lib.NVML_CLOCK_SM)),
                      ("mem_clock_mhz", lambda: lib.nvmlDeviceGetClockInfo(handle, lib.NVML_CLOCK_MEM)),
                      ("max_sm_clock_mhz", lambda: lib.nvmlDeviceGetMaxClockInfo(handle, lib.NVML_CLOCK_SM)),
                      ("temperature_c", lambda: lib.nvmlDeviceGetTemperature(handle, lib.NVML_TEMPERATURE_GPU)),
                      ("power_w", lambda: lib.nvmlDeviceGetPowerUsage(handle) / 1000.0)):
        try:
            out[key] = read()
        except Exception:
            out[key] = None
    try:
        getter = getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None) or lib.nvmlDeviceGetCurrentClocksThrottleReasons
        bits = int(getter(handle))
        out["throttle_reasons"] = [name for bit, name in THROTTLE_BITS.items() if bits & bit]
    except Exception:
        out["throttle_reasons"] = None
    try:
        procs = lib.nvmlDeviceGetComputeRunningProcesses(handle)
        mine = {os.getpid(), *(p.pid for p in _children(psutil.Process()))}
        out["other_processes"] = [{"pid": p.pid, "memory_bytes": p.usedGpuMemory} for p in procs if p.pid not in mine]
    except Exception:
        mine, out["other_processes"] = {os.getpid()}, None
    out["other_processes_sm_util_pct"] = other_sm_util(lib, handle, mine)
    return out


def other_sm_util(lib, handle, mine: set[int]) -> dict[int, int] | None:
    """Per other process on the GPU, the highest SM utilization NVML sampled recently (its
    process-utilization buffer); None where NVML keeps no such samples (e.g. some vGPU setups)."""
    try:
        samples = lib.nvmlDeviceGetProcessUtilization(handle, 0)
    except Exception:
        return None
    busiest: dict[int, int] = {}
    for sample in samples:
        if sample.pid not in mine:
            busiest[sample.pid] = max(busiest.get(sample.pid, 0), int(sample.smUtil))
    return busiest


def _snapshot(gpu_index: int | None) -> dict[str, Any]:
    freq = psutil.cpu_freq() if hasattr(psutil, "cpu_freq") else None
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"load_avg": load, "cpu_freq_mhz": round(freq.current) if freq else None,
            "threads": psutil.Process().num_threads(), "gpu": _gpu(gpu_index) if gpu_index is not None else None}


class ConditionsMonitor:
    """`start()` before the first step, `stop()` after the last; `stop` returns the conditions."""

    def __init__(self, gpu_index: int | None = None, top: int = 3):
        self.gpu_index, self.top = gpu_index, top
        self.proc = psutil.Process()

    def start(self) -> None:
        self.before = _snapshot(self.gpu_index)
        self.t0, self.busy0, self.own0 = time.perf_counter(), _busy_s(), _tree_cpu_s(self.proc)
        self.others = {}
        for p in psutil.process_iter(["pid"]):  # prime per-process CPU counters; read in stop()
            try:
                p.cpu_percent(None)
                self.others[p.pid] = p
            except psutil.Error:
                continue

    def stop(self) -> dict[str, Any]:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        own = _tree_cpu_s(self.proc) - self.own0
        others_s = max(0.0, _busy_s() - self.busy0 - own)
        mine = {self.proc.pid, *(c.pid for c in _children(self.proc))}
        busiest = []
        for pid, p in self.others.items():
            if pid in mine:
                continue
            try:
                pct = p.cpu_percent(None)
                if pct >= 5.0:
                    busiest.append({"pid": pid, "name": p.name(), "cpu_pct": round(pct, 1)})
            except psutil.Error:
                continue
        busiest.sort(key=lambda d: -d["cpu_pct"])
        return {
            "window_s": wall,
            "cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
            "cpu_governor": _governor(),
            "before": self.before, "after": _snapshot(self.gpu_index),
            # CPU the rest of the machine used while this run ran, in cores (1.0 = one core busy throughout)
            "others_cpu_cores": others_s / wall,
            "busiest_others": busiest[: self.top],
        }
