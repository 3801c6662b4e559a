"""Hardware-counter pipe utilization with Nsight Compute (`ncu`), weighted by kernel time.

`tbd run resnet50 --device cuda --flavor paper --profile --ncu` (or `tbd analyze RUN --ncu`)
runs the run's configuration again in a child process under `ncu`, profiling only a few steps
after warm-up (the child brackets them with cudaProfilerStart/Stop and ncu runs with
`--profile-from-start off`), at most `LAUNCH_COUNT` kernels. Per kernel it reads the duration,
tensor-pipe and FMA-pipe activity as a percentage of peak; the run's figure is the mean weighted
by kernel duration, as the paper weighted nvprof's per-kernel FP32 utilization. ncu replays each
kernel several times, so this is slow and separate from every timed figure.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from tbd import frameworks, registry
from tbd.config import RunConfig
from tbd.errors import UsageError

LAUNCH_COUNT = 300
WARMUP_STEPS = 3
PROFILED_STEPS = 1
DURATION = "gpu__time_duration.sum"
METRICS = {
    "tensor_hmma": "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
    "tensor_gmma": "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",  # Hopper wgmma
    "fma": "sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active",
    "sm_throughput": "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram_throughput": "dram__throughput.avg.pct_of_peak_sustained_elapsed",
}


def require_ncu(device: str | None = "cuda") -> str:
    path = shutil.which("ncu")
    if not path:
        raise UsageError("--ncu needs Nsight Compute's 'ncu' on PATH and it is not there; install Nsight Compute or drop --ncu")
    if device is not None and device != "cuda":
        raise UsageError(f"--ncu reads GPU hardware counters, but this run is on {device}; use --device cuda or drop --ncu")
    return path


def available_metrics(ncu: str) -> set[str]:
    """Base metric names this ncu knows for the GPU present (unknown names would abort ncu)."""
    try:
        out = subprocess.run([ncu, "--query-metrics"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {line.split()[0] for line in out.splitlines() if line.strip() and "__" in line.split()[0]}


def run_ncu(config, steps: int = PROFILED_STEPS, timeout_s: float = 900) -> dict[str, Any]:
    """Profile `steps` steps of `config` under ncu; failures come back as {'error': ...}."""
    ncu = require_ncu(config.device)
    known = available_metrics(ncu)
    wanted = {k: m for k, m in METRICS.items() if not known or m.split(".")[0] in known}
    metrics = [DURATION, *wanted.values()]
    with tempfile.TemporaryDirectory(prefix="tbd-ncu-") as tmp:
        cfg_path = os.path.join(tmp, "config.json")
        with open(cfg_path, "w") as f:
            json.dump({**config.to_dict(), "profile": False, "ncu": False, "isolate": False}, f)
        report = os.path.join(tmp, "report")
        cmd = [ncu, "--profile-from-start", "off", "--target-processes", "all", "--launch-count", str(LAUNCH_COUNT),
               "--metrics", ",".join(metrics), "--export", report, "--force-overwrite",
               sys.executable, "-m", "tbd.analysis.ncu", "--child", cfg_path, "--steps", str(steps)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
        except subprocess.TimeoutExpired:
            return {"error": f"ncu did not finish within {timeout_s:.0f} s", "command": " ".join(cmd)}
        if done.returncode != 0 or not os.path.exists(report + ".ncu-rep"):
            tail = (done.stderr or done.stdout or "").strip().splitlines()[-3:]
            denied = "ERR_NVGPUCTRPERM" in (done.stdout + done.stderr)
            hint = " (counters need permission: run as root or set NVreg_RestrictProfilingToAdminUsers=0)" if denied else ""
            return {"error": f"ncu exited with {done.returncode}{hint}: {' | '.join(tail)[:400]}", "command": " ".join(cmd)}
        table = subprocess.run([ncu, "--import", report + ".ncu-rep", "--csv", "--page", "raw"], capture_output=True, text=True, timeout=300)
    result = summarize_csv(table.stdout, wanted)
    result["command"] = " ".join(cmd)
    result["steps"] = steps
    return result


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except (AttributeError, ValueError):
        return None


def summarize_csv(text: str, wanted: dict[str, str] | None = None) -> dict[str, Any]:
    """Kernel-time-weighted pipe utilization from `ncu --csv --page raw` output."""
    wanted = wanted or METRICS
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return {"error": "ncu printed no kernel table (no kernel was profiled in the range)", "kernels": 0}
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
    units = rows[0] if rows and not (rows[0].get("ID") or "").strip() else {}
    kernels = []
    for row in rows:
        if not (row.get("ID") or "").strip():
            continue
        dur = _number(row.get(DURATION, ""))
        if dur is None:
            continue
        values = {k: _number(row.get(m, "")) for k, m in wanted.items()}
        tensor = [v for k, v in values.items() if k.startswith("tensor") and v is not None]
        values["tensor_pipe"] = max(tensor) if tensor else None
        kernels.append({"name": row.get("Kernel Name", ""), "duration": dur, **values})
    if not kernels:
        return {"error": "ncu's table had no kernel rows", "kernels": 0}
    total = sum(k["duration"] for k in kernels) or 1.0

    def weighted(key: str) -> float | None:
        have = [k for k in kernels if k.get(key) is not None]
        if not have:
            return None
        return sum(k["duration"] * k[key] for k in have) / sum(k["duration"] for k in have)

    top = sorted(kernels, key=lambda k: -k["duration"])[:10]
    return {
        "kernels": len(kernels),
        "duration_unit": units.get(DURATION, "") if units else "",
        "tensor_pipe_pct": weighted("tensor_pipe"),
        "fma_pipe_pct": weighted("fma"),
        "sm_throughput_pct": weighted("sm_throughput"),
        "dram_throughput_pct": weighted("dram_throughput"),
        "top": [{"name": k["name"][:160], "share_pct": k["duration"] / total * 100.0, "tensor_pipe_pct": k["tensor_pipe"],
                 "fma_pipe_pct": k.get("fma")} for k in top],
    }


def _child(cfg_path: str, steps: int) -> int:
    """The run ncu watches: a few warm-up steps, then `steps` steps inside the profiler range
    (cudaProfilerStart/Stop through the framework's plugin; ncu runs --profile-from-start off)."""
    with open(cfg_path) as f:
        config = RunConfig.from_dict(json.load(f)).validated()
    plugin = registry.framework(config.framework)
    session = frameworks.open_session(config)
    session.run_steps(WARMUP_STEPS)
    plugin.profiler_range(True)
    session.run_steps(steps)
    plugin.profiler_range(False)
    session.close()
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="child process that tbd runs under ncu")
    parser.add_argument("--child", required=True)
    parser.add_argument("--steps", type=int, default=PROFILED_STEPS)
    args = parser.parse_args()
    sys.exit(_child(args.child, args.steps))
