"""Fake run records and a fake launcher for sweep, compare and report tests: no framework, no
training, so the sweep logic (OOM skipping, bisection, resume) is tested in milliseconds."""

from __future__ import annotations

import numpy as np

from tbd.config import RunConfig
from tbd.results.record import RunRecord, new_run_id


def fake_record(config: RunConfig, rate: float = 100.0, oom_above: int | None = None, steps: int = 12, seed: int = 0,
                hostname: str = "host-a", torch_version: str = "2.14.1", extras: dict | None = None) -> dict:
    """A record shaped like the harness's: samples, metrics, memory, environment; an OOM above a batch size."""
    rec = RunRecord(id=new_run_id(config.workload, config.framework), config=config.to_dict())
    rec["workload"] = {"name": config.workload, "unit": "images", "sample_unit": "images", "flavor": config.flavor}
    rec["environment"] = {"hostname": hostname, "cpu": "Fake CPU", "python": "3.11.7", "tbd_version": "0.1.0",
                          "libraries": {"torch": torch_version, "numpy": "2.4.6"}, "source": {"commit": "abc", "dirty": False},
                          "device": config.device}
    b = config.batch_size
    if oom_above is not None and b > oom_above:
        rec["error"] = {"kind": "oom", "message": f"out of memory at batch size {b}; try a smaller --batch-size"}
        return rec
    rng = np.random.default_rng(seed + b)
    step = b / rate * (1 + 0.02 * rng.standard_normal(steps))
    step[0] *= 5  # warm-up
    units = [float(b)] * steps
    rates = np.asarray(units[1:]) / step[1:]
    med = float(np.median(rates))
    rec["samples"] = {"step_s": step.tolist(), "units": units, "samples": units, "chunk_ends": list(range(1, steps + 1))}
    rec["metrics"] = {"images_per_s": med, "images_per_s_ci95_low": med * 0.98, "images_per_s_ci95_high": med * 1.02,
                      "samples_per_s": med, "throughput_ci95_half_width_pct": 2.0, "step_time_ms_p50": float(np.median(step[1:]) * 1e3),
                      "warmup_steps": 1, "total_steps": steps, "mfu_pct": 40.0 if config.device == "cuda" else None,
                      "cpu_util_pct": 55.0, "gpu_util_nvml_pct": 90.0 if config.device == "cuda" else None}
    rec["memory"] = {"host_peak_rss_bytes": 2**30 + b * 2**20}
    if config.device == "cuda":
        rec["memory"].update(peak_allocated_bytes=b * 2**24, peak_reserved_bytes=b * 2**24 + 2**28, nvml_process_bytes=b * 2**24 + 2**29)
    rec["status"] = "ok"
    rec.update(extras or {})
    return rec


class FakeLauncher:
    """Stands in for tbd.harness.launcher.launch; counts calls, OOMs above `oom_above`."""

    def __init__(self, oom_above: int | None = None, rate: float = 100.0, fail_at: set | None = None):
        self.oom_above, self.rate, self.fail_at = oom_above, rate, fail_at or set()
        self.calls: list[RunConfig] = []

    def __call__(self, config: RunConfig, progress=None) -> dict:
        self.calls.append(config)
        if config.batch_size in self.fail_at:
            rec = RunRecord(id=new_run_id(config.workload, config.framework), config=config.to_dict())
            rec["error"] = {"kind": "error", "message": "RuntimeError: boom"}
            return rec
        return fake_record(config, rate=self.rate, oom_above=self.oom_above)
