"""Background NVML sampling and per-window host readings.

The harness reads a `Probe` at each chunk boundary (a host sync point): process CPU time, the
GPU energy counter and the NVML utilization samples taken since the last boundary. Metrics over
the steady window are then sums over whole chunks inside it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

from tbd.metrics.devices import device_handle, nvml


@dataclass
class Reading:
    host_s: float  # time.perf_counter()
    cpu_s: float  # user + system CPU seconds of the process and its live descendants (threads included)
    energy_mj: float | None  # GPU energy counter, millijoules since driver load
    gpu_util_samples: list[float]  # NVML utilization.gpu samples (percent) since the last reading
    gpu_mem_util_samples: list[float]


# NVML's utilization counter is a share of its own sample period, which lies between 1/6 s and
# 1 s depending on the product (nvmlDeviceGetUtilizationRates). A window must span a few such
# periods before the counter describes it; shorter windows get no NVML figure, and say why.
NVML_UTIL_PERIOD_S = 1.0
NVML_MIN_WINDOW_S = 3 * NVML_UTIL_PERIOD_S


def nvml_window_note(window_s: float) -> str | None:
    """Why NVML's utilization cannot describe a window this short (None when it can)."""
    if window_s >= NVML_MIN_WINDOW_S:
        return None
    return f"window too short ({window_s * 1e3:.0f} ms < {NVML_MIN_WINDOW_S * 1e3:.0f} ms, a few NVML sample periods)"


# The process's CPU time is counted in whole clock ticks (psutil reads /proc's utime and stime:
# 10 ms at the usual 100 Hz), so a window of n ticks reads its CPU time to within 2 ticks (one at
# each end). From 20 ticks on that is within 10%; shorter windows get no CPU figure, and say why.
try:
    CPU_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):  # not a POSIX system: assume the usual 100 Hz
    CPU_TICK_S = 0.01
CPU_MIN_WINDOW_S = 20 * CPU_TICK_S


def cpu_window_note(window_s: float) -> str | None:
    """Why the process CPU time cannot describe a window this short (None when it can)."""
    if window_s >= CPU_MIN_WINDOW_S:
        return None
    return (f"window too short ({window_s * 1e3:.0f} ms < {CPU_MIN_WINDOW_S * 1e3:.0f} ms: CPU time is counted in "
            f"{CPU_TICK_S * 1e3:.0f} ms ticks)")


class NvmlSampler(threading.Thread):
    """Samples NVML's utilization counters every `period_s` in a daemon thread."""

    def __init__(self, index: int = 0, period_s: float = 0.1):
        super().__init__(daemon=True, name="tbd-nvml")
        self.lib = nvml()
        self.handle = device_handle(self.lib, index)
        self.period_s = period_s
        self._lock = threading.Lock()
        self._util: list[float] = []
        self._mem: list[float] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.period_s):
            try:
                rates = self.lib.nvmlDeviceGetUtilizationRates(self.handle)
            except Exception:
                continue
            with self._lock:
                self._util.append(float(rates.gpu))
                self._mem.append(float(rates.memory))

    def drain(self) -> tuple[list[float], list[float]]:
        with self._lock:
            util, mem = self._util, self._mem
            self._util, self._mem = [], []
        return util, mem

    def energy_mj(self) -> float | None:
        try:
            return float(self.lib.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:
            return None

    def process_memory_bytes(self) -> int | None:
        """Device memory NVML attributes to this process (None where the driver hides PIDs)."""
        try:
            procs = self.lib.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception:
            return None
        mine = [p.usedGpuMemory for p in procs if p.pid == os.getpid() and p.usedGpuMemory is not None]
        return int(sum(mine)) if mine else None

    def device_used_bytes(self) -> int | None:
        try:
            return int(self.lib.nvmlDeviceGetMemoryInfo(self.handle).used)
        except Exception:
            return None

    def stop(self) -> None:
        self._stopping.set()


class Probe:
    """Readings at chunk boundaries; GPU parts are present only when `gpu_index` is given."""

    def __init__(self, gpu_index: int | None):
        self.process = psutil.Process()
        self.gpu_index = gpu_index
        self.sampler: NvmlSampler | None = None
        if gpu_index is not None and nvml() is not None:
            self.sampler = NvmlSampler(gpu_index)
            self.sampler.start()

    def cpu_seconds(self) -> float:
        """This process and its live descendants: workloads that train in several processes
        (A3C's actors, started from a forkserver child) burn their CPU there, not here."""
        procs = [self.process]
        try:
            procs += self.process.children(recursive=True)
        except psutil.Error:
            pass
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:  # exited between the listing and the reading
                continue
            total += times.user + times.system
        return total

    def read(self) -> Reading:
        util, mem = self.sampler.drain() if self.sampler else ([], [])
        return Reading(
            host_s=time.perf_counter(),
            cpu_s=self.cpu_seconds(),
            energy_mj=self.sampler.energy_mj() if self.sampler else None,
            gpu_util_samples=util,
            gpu_mem_util_samples=mem,
        )

    def close(self) -> dict:
        """Final memory readings of the process (host RSS peak, NVML device memory)."""
        out = {"host_rss_bytes": int(self.process.memory_info().rss)}
        try:
            import resource

            out["host_peak_rss_bytes"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        except Exception:
            pass
        if self.sampler:
            out["nvml_process_bytes"] = self.sampler.process_memory_bytes()
            out["nvml_device_used_bytes"] = self.sampler.device_used_bytes()
            self.sampler.stop()
        return out


class HostMeter:
    """Wall time, process CPU time and NVML utilization samples over a `with` block."""

    def __init__(self, gpu: bool):
        self.process = psutil.Process()
        self.sampler = None
        if gpu and nvml() is not None:
            self.sampler = NvmlSampler(0, period_s=0.02)
        self.result: dict[str, Any] = {}

    def __enter__(self) -> "HostMeter":
        if self.sampler:
            self.sampler.start()
        t = self.process.cpu_times()
        self._cpu0, self._t0 = t.user + t.system, time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        t = self.process.cpu_times()
        wall = time.perf_counter() - self._t0
        cpu = t.user + t.system - self._cpu0
        cores = os.cpu_count() or 1
        cpu_note = cpu_window_note(wall)  # a few clock ticks cannot give a share (18 ms read as 109% of 2 cores)
        measurable = wall and not cpu_note
        self.result = {"wall_s": wall, "cpu_s": cpu, "cpu_cores_busy": cpu / wall if measurable else None,
                       "cpu_util_pct": cpu / (wall * cores) * 100.0 if measurable else None, "cores": cores,
                       **({"cpu_note": cpu_note} if cpu_note else {})}
        if self.sampler:
            util, _ = self.sampler.drain()
            self.sampler.stop()
            note = nvml_window_note(wall)
            self.result["nvml_util_pct"] = sum(util) / len(util) if util and not note else None
            self.result["nvml_samples"] = len(util)
            if note:
                self.result["nvml_note"] = note
