"""The whole analysis of one stored run: `analyze(record, home)` -> a JSON-able dict.

`tbd analyze latest` calls it and stores the result in the record (`analysis.report`). It reads
the run's trace again (so a damaged trace is an error, not a silent gap), summarizes it, adds
step-time stability from the raw samples, builds the facts the diagnosis and recommendations
use, and says which figures are missing and why. A run without a trace is analyzed from its
samples and metrics alone.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tbd import registry
from tbd.analysis.capture import trace_path
from tbd.analysis.diagnose import diagnose
from tbd.analysis.recommend import recommend
from tbd.analysis.stability import analyze_steps
from tbd.errors import UsageError
from tbd.results.record import has_result

NO_TRACE = "run again with --profile for kernel-level analysis"
REPORT_VERSION = 1


def analyze(record: dict[str, Any], home: str | Path) -> dict[str, Any]:
    if record.get("kind", "run") == "memory":  # one profiled step, no timed window: nothing for a time diagnosis
        raise UsageError(f"run {record['id']} is a memory profile (tbd memory), with no timed steps to analyze; "
                         f"see it with 'tbd results show {record['id']}', or analyze a 'tbd run ... --profile'")
    if not has_result(record):
        msg = (record.get("error") or {}).get("message", "no result")
        raise UsageError(f"run {record['id']} failed ({msg[:120]}); there is nothing to analyze, see 'tbd results show {record['id']}'")
    from tbd.analysis.summary import summarize
    from tbd.analysis.trace import load_trace

    stored = record.get("analysis") or {}
    path = trace_path(record, home)
    summary, trace_info, notes = None, stored.get("trace"), []
    if path is not None:
        summary = summarize(load_trace(path), (trace_info or {}).get("steps"))
    else:
        distributed = record["config"].get("nproc_per_node", 1) * record["config"].get("nnodes", 1) > 1
        if distributed and (record.get("metrics") or {}).get("comm_ms_per_step") is not None:
            notes.append("distributed run: communication comes from each rank's trace (metrics comm_*, distributed.ranks[].comm); "
                         "for kernel-level analysis profile a single-process run")
        else:
            why = f" ({stored.get('error') or stored['skipped']})" if stored.get("error") or stored.get("skipped") else ""
            notes.append(f"no trace stored with this run{why}; {NO_TRACE}")
    samples = record.get("samples") or {}
    stability = analyze_steps(samples.get("step_s") or [], samples.get("chunk_ends"))
    ncu = stored.get("ncu")
    f = facts(record, summary, stability, ncu)
    out = {
        "version": REPORT_VERSION,
        "analyzed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "trace": {**(trace_info or {}), "file": str(path)} if path else None,
        "utilization": _utilization(record, summary, ncu, f),
        "kernels": summary["device"] if summary else None,
        "host": summary["host"] if summary else None,
        "stability": stability,
        "diagnosis": diagnose(f),
        "recommendations": recommend(f),
        "ncu": ncu,
        "notes": notes,
        "facts": f,
    }
    if summary and summary["device"] is None and record["config"]["device"] == "cuda":
        notes.append("the trace has no device kernels (was CUDA activity recorded?)")
    return out


def framework_levers(framework: str) -> dict[str, Any]:
    """The levers a framework offers the recommendations (its plugin's capabilities); none for
    a framework this tbd does not know (a record from elsewhere)."""
    try:
        caps = registry.framework(framework).capabilities
    except UsageError:
        return {}
    return {"compiler": caps.compile, "channels_last_lever": caps.channels_last, "fused_optimizer_how": caps.fused_optimizer,
            "allocator_setting": caps.allocator_setting, "gpu_decode_how": caps.gpu_decode,
            "fused_optimizer_apply": {"options": dict(caps.fused_optimizer_option)} if caps.fused_optimizer_option else None,
            "allocator_apply": {"options": dict(caps.allocator_option)} if caps.allocator_option else None}


def facts(record: dict[str, Any], summary: dict | None, stability: dict, ncu: dict | None) -> dict[str, Any]:
    """The flat facts the diagnosis and recommendations read (None where unknown)."""
    cfg, met, mem = record["config"], record.get("metrics") or {}, record.get("memory") or {}
    env = record.get("environment") or {}
    try:
        supports_cl = registry.get_spec(cfg["workload"]).convolutional
    except UsageError:
        supports_cl = False
    f: dict[str, Any] = {
        **framework_levers(cfg["framework"]),
        "device": cfg["device"], "framework": cfg["framework"], "precision": cfg["precision"], "compile": cfg.get("compile"),
        "channels_last": cfg.get("channels_last"), "batch_size": cfg.get("batch_size"), "convolutional": supports_cl,
        "variable_shapes": _spec_flag(cfg["workload"], "variable_shapes"),
        "batch_on_host_cores": _spec_flag(cfg["workload"], "batch_on_host_cores"),
        "host_work_per_sample": _spec_flag(cfg["workload"], "host_work_per_sample"),
        "recurrent": _spec_flag(cfg["workload"], "recurrent"),
        "has_trace": summary is not None,
        "gpu_util_nvml_pct": met.get("gpu_util_nvml_pct"), "gpu_mem_bw_util_nvml_pct": met.get("gpu_mem_bw_util_nvml_pct"),
        "mfu_pct": met.get("mfu_pct"), "cpu_util_pct": met.get("cpu_util_pct"), "cpu_cores_busy": met.get("cpu_cores_busy"),
        "cores": env.get("cpu_cores"), "step_ms": met.get("step_time_ms_p50"),
        "peak_reserved_bytes": mem.get("peak_reserved_bytes"),
        "steady_peak_allocated_bytes": mem.get("steady_peak_allocated_bytes"), "device_total_bytes": (env.get("gpu") or {}).get("memory_total_bytes"),
        "alloc_retries": mem.get("alloc_retries"), "ooms": mem.get("ooms"), "host_peak_rss_bytes": mem.get("host_peak_rss_bytes"),
        "host_total_bytes": _host_total(env), "cpu_amx_bf16": _amx(env),
        "data_synthetic": "synthetic" in str((record.get("method") or {}).get("data", "")),
        "stall_share_pct": stability.get("stall_time_share_pct"), "period_steps": stability.get("period_steps"), "cv_pct": stability.get("cv_pct"),
    }
    if cfg.get("nproc_per_node", 1) * cfg.get("nnodes", 1) > 1:  # distributed: per-rank comm, no single trace
        f.update({"world_size": cfg.get("nproc_per_node", 1) * cfg.get("nnodes", 1), "parallel": cfg.get("parallel", "ddp"),
                  "ddp_bucket_mb": cfg.get("ddp_bucket_mb", 25.0), "exposed_comm_pct": met.get("exposed_comm_share_pct"),
                  "comm_share_pct": met.get("comm_share_pct"),
                  "gradient_mib": 4 * ((record.get("workload") or {}).get("num_parameters") or 0) / 2**20 or None})
    if summary:
        host, dev = summary["host"], summary["device"]
        f.update({"host_busy_pct": host["busy_pct"], "input_wait_pct": host["input_wait_pct"], "ops_per_step": host.get("ops_per_step"),
                  "host_optimizer_kind": host.get("optimizer_kind"),
                  "host_class_share": {k: v["share_pct"] for k, v in host["op_classes"].items()}})
        top = next(iter(host["op_classes"].items()), None)
        f["host_top_class"] = (top[0], top[1]["share_pct"]) if top else None
        if dev:
            steps = summary.get("steps")
            f.update({"kernels_per_window": dev.get("kernels"), "kernels_per_step": dev["kernels"] / steps if steps and dev.get("kernels") else None,
                      "launches_per_step": host.get("launches_per_step"),
                      "mean_kernel_us": dev["kernel_time_ms"] * 1e3 / dev["kernels"] if dev.get("kernels") else None,
                      "gpu_util_trace_pct": dev["gpu_util_trace_pct"], "class_share": {k: v["share_pct"] for k, v in dev["classes"].items()},
                      "class_count_share": _count_shares(dev["classes"]),
                      "tensor_core_share_pct": dev["tensor_core_share_pct"], "layout_transpose_share_pct": dev["layout_transpose_share_pct"],
                      "exposed_comm_pct": dev["exposed_comm_pct"], "optimizer_kind": dev["optimizer_kind"],
                      "kernel_fill_share_pct": dev.get("kernel_fill_share_pct"),
                      "gpu_idle_not_waiting_pct": host.get("gpu_idle_not_waiting_pct"), "gpu_idle_host_busy_pct": host.get("gpu_idle_host_busy_pct")})
    f.update(data_facts(record))
    if ncu and not ncu.get("error"):
        f.update({"ncu_tensor_pipe_pct": ncu.get("tensor_pipe_pct"), "ncu_fma_pipe_pct": ncu.get("fma_pipe_pct"),
                  "ncu_dram_pct": ncu.get("dram_throughput_pct")})
    return f


def _count_shares(classes: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """Share of the kernels (launches) by class, %: where the host paces a step its launches
    count as well as their time: the calibration log keeps both (docs/analysis.md)."""
    total = sum(v.get("count", 0) for v in classes.values())
    return {k: v.get("count", 0) / total * 100.0 for k, v in classes.items()} if total else None


def _spec_flag(workload: str, name: str) -> bool:
    """A flag of the workload's spec (False for a workload this install does not know)."""
    try:
        return bool(getattr(registry.get_spec(workload), name))
    except UsageError:
        return False


def data_facts(record: dict[str, Any]) -> dict[str, Any]:
    """A run on a dataset on disk: the measured time waiting for input (it overrides a trace's
    data-loading spans: the wait is measured at every step) and the loader's levers."""
    data = (record.get("method") or {}).get("data")
    if not isinstance(data, dict):
        return {}
    from tbd.data import recipes

    cfg, met = record["config"], record.get("metrics") or {}
    device_pct = met.get("input_stall_device_pct")
    wait = device_pct if device_pct is not None else met.get("input_wait_host_pct")
    how = ("the device idle waiting for the next batch" if device_pct is not None and cfg["device"] == "cuda"
           else "the training loop blocked waiting for the next batch")
    try:
        decodable = recipes.gpu_decodable(registry.get_spec(cfg["workload"]))
    except UsageError:
        decodable = False
    return {"input_wait_pct": wait, "input_wait_how": how, "input_wait_ms_per_step": met.get("input_stall_device_ms_per_step"),
            "data_path": cfg.get("data"), "data_workers": cfg.get("workers"), "data_decode": cfg.get("decode"),
            "data_format": data.get("format"), "data_mean_pixels": data.get("mean_pixels"), "image_size": data.get("image_size"),
            "gpu_decodable": decodable, "data_skipped_samples": met.get("data_skipped_samples")}


def _host_total(env: dict[str, Any]) -> int | None:
    """Host memory, read here only when the analysis runs on the machine that ran the run."""
    import socket

    if env.get("hostname") != socket.gethostname():
        return None
    import psutil

    return int(psutil.virtual_memory().total)


def _amx(env: dict[str, Any]) -> bool:
    import socket

    if env.get("hostname") != socket.gethostname():
        return False
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _utilization(record: dict[str, Any], summary: dict | None, ncu: dict | None, f: dict[str, Any]) -> dict[str, Any]:
    """GPU (trace and NVML), FLOP and CPU utilization side by side, with where each comes from."""
    from tbd.metrics.peaks import lookup

    met = record.get("metrics") or {}
    trace = (record.get("analysis") or {}).get("trace") or {}
    dev = (summary or {}).get("device") or {}
    util = dev.get("gpu_util_trace_pct")
    mfu = met.get("mfu_pct")
    achieved = (met.get("model_tflops_per_s") or 0.0) * 1e12
    device_name = (record.get("environment") or {}).get("device_name")
    peak = lookup(device_name) if record["config"]["device"] == "cuda" else None
    by_precision = {p: achieved / (t * 1e12) * 100.0 for p, t in peak.tflops.items()} if peak and achieved else {}
    return {
        "gpu_util_trace_pct": util,
        "gpu_util_nvml_pct": met.get("gpu_util_nvml_pct"),
        "gpu_util_nvml_trace_window_pct": trace.get("window_nvml_util_pct"),
        "gpu_util_nvml_trace_window_note": trace.get("window_nvml_note"),
        "gpu_util_nvml_note": met.get("gpu_util_nvml_note"),
        "trace_vs_nvml_note": _trace_vs_nvml(util, trace.get("window_nvml_util_pct")),
        "device_busy_incl_copies_pct": dev.get("device_busy_pct"),
        "mfu_pct": mfu,
        "mfu_of_busy_time_pct": mfu / util * 100.0 if mfu is not None and util else None,
        "model_tflops_per_s": met.get("model_tflops_per_s"),
        "peak_precision": record["config"]["precision"],
        "flop_util_by_precision_pct": by_precision,
        "peak_source": peak.source if peak else None,
        "tensor_core_share_pct": dev.get("tensor_core_share_pct"),
        "ncu_tensor_pipe_pct": (ncu or {}).get("tensor_pipe_pct"),
        "ncu_fma_pipe_pct": (ncu or {}).get("fma_pipe_pct"),
        "cpu_util_pct": met.get("cpu_util_pct"),
        "cpu_cores_busy": met.get("cpu_cores_busy"),
        "cpu_util_note": met.get("cpu_util_note"),
        "cpu_util_trace_window_pct": trace.get("window_cpu_util_pct"),
        "cpu_util_trace_window_note": trace.get("window_cpu_note"),
        "host_busy_trace_pct": (summary or {}).get("host", {}).get("busy_pct"),
    }


def _trace_vs_nvml(trace_pct: float | None, nvml_pct: float | None) -> str | None:
    """One line on why the trace's kernel utilization and NVML's counter over the same window
    differ by more than 5 points (None where they agree or one is missing)."""
    if trace_pct is None or nvml_pct is None or abs(trace_pct - nvml_pct) <= 5:
        return None
    if nvml_pct > trace_pct:
        return (f"NVML {nvml_pct:.0f}% > trace {trace_pct:.0f}%: NVML counts a sample period busy if any kernel ran in it, "
                "so gaps between kernels shorter than its period do not show")
    return (f"NVML {nvml_pct:.0f}% < trace {trace_pct:.0f}%: the profiler's own work stretched the window NVML sampled, "
            "or NVML's samples missed its first and last periods")
