"""Run records as rows with a fixed schema (CSV, Parquet, Markdown), or whole as JSON.

`COLUMNS` is the schema: the same columns in the same order whatever the rows hold, each with
its type and meaning (docs/output.md prints the table from it). Throughput is one column,
`throughput`, with its unit in `throughput_unit` ("images/s", "tokens/s"), not a column per unit.
A value a run does not have is empty (CSV) or null (Parquet). Parquet columns are typed from the
schema: `created_at` a UTC timestamp, numbers numeric even when every value is null.

The Markdown table for people (a pull request) is `tbd.report.markdown`, built from these rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

from tbd.results.record import headline

# (name, type, meaning); types: string, int, float, bool, timestamp
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "string", "run id"),
    ("created_at", "timestamp", "when the run was recorded (UTC)"),
    ("status", "string", "ok, unconverged, insufficient, failed or skipped"),
    ("converged", "bool", "the throughput's 95% CI reached its target"),
    ("kind", "string", "run, memory (a `tbd memory` profile) or tune (a `tbd tune` result: the best configuration found)"),
    ("sweep_name", "string", "the sweep the run belongs to, if any"),
    ("sweep_id", "string", "that sweep's id"),
    ("workload", "string", "workload name"),
    ("framework", "string", "framework plugin"),
    ("flavor", "string", "workload size"),
    ("device", "string", "cpu or cuda"),
    ("nproc", "int", "processes (ranks) of the run"),
    ("batch_size", "int", "global batch size"),
    ("batch_unit", "string", "what the batch counts (images, sequences, ...)"),
    ("precision", "string", "fp32, tf32, bf16 or fp16"),
    ("compile", "bool", "torch.compile on"),
    ("channels_last", "bool", "NHWC memory format"),
    ("seed", "int", "random seed"),
    ("data", "string", "the dataset on disk the run read (empty: synthetic data)"),
    ("workers", "int", "its loader's worker processes"),
    ("decode", "string", "where its JPEGs were decoded: cpu or gpu"),
    ("throughput", "float", "median step throughput over the steady steps, or the window rate where `throughput_statistic` is 'window'"),
    ("throughput_unit", "string", "its unit, e.g. images/s"),
    ("throughput_statistic", "string", "median or window (`method.throughput_statistic`, docs/metrics.md; empty in records older than it)"),
    ("throughput_ci95_low", "float", "95% CI of the throughput, low end"),
    ("throughput_ci95_high", "float", "95% CI of the throughput, high end"),
    ("throughput_ci95_half_width_pct", "float", "half-width of that CI, percent of the throughput (empty when insufficient)"),
    ("samples_per_s", "float", "samples per second, in the same statistic"),
    ("step_time_ms_p50", "float", "median step time, ms"),
    ("step_time_ms_p90", "float", "90th percentile step time, ms"),
    ("step_time_cv_pct", "float", "coefficient of variation of steady step times, percent"),
    ("timed_steps", "int", "steady steps timed"),
    ("warmup_steps", "int", "steps excluded as warm-up (step 0 included)"),
    ("compile_time_s", "float", "step 0: compilation and allocation, s"),
    ("warmup_time_s", "float", "the other warm-up steps, s"),
    ("mfu_pct", "float", "model FLOPs utilization, percent (empty where the peak is unknown)"),
    ("model_tflops_per_s", "float", "achieved model TFLOP/s"),
    ("cpu_util_pct", "float", "process CPU use over the steady window, percent of all cores"),
    ("gpu_util_nvml_pct", "float", "NVML GPU utilization over the steady window, percent"),
    ("energy_j_per_sample", "float", "GPU energy per sample, J"),
    ("input_wait_pct", "float", "share of the steady window waiting for input (the device idle, where measured; else the host), percent"),
    ("data_skipped_samples", "int", "corrupt samples skipped (and replaced) during the run"),
    ("peak_memory_bytes", "int", "peak device memory allocated (GPU) or host peak RSS (CPU)"),
    ("noisy", "bool", "the run has noise warnings (load, other processes, regime change, throttling)"),
    ("noise_warnings", "string", "those warnings, '; '-separated"),
    ("others_cpu_cores", "float", "CPU cores other processes kept busy during the run"),
    ("load_avg_before", "float", "1-minute load average before the run"),
    ("intra_op_threads", "int", "intra-op threads of the framework"),
    ("host", "string", "hostname"),
    ("device_name", "string", "GPU or CPU model"),
    ("framework_version", "string", "framework version"),
    ("tbd_version", "string", "tbd version"),
    ("code_revision", "string", "git commit of tbd"),
    ("code_dirty", "bool", "uncommitted changes in tbd's tree"),
    ("error_kind", "string", "oom, crash, timeout, nan, error, skipped"),
    ("error_message", "string", "what went wrong, one line"),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """One record as a row of `COLUMNS` (every column present, None where the run has no value)."""
    h = headline(record)
    cfg, met, env = record["config"], record.get("metrics") or {}, record.get("environment") or {}
    cond = env.get("conditions") or {}
    noise = (record.get("method") or {}).get("noise") or {}
    sweep = record.get("sweep") or {}
    source = env.get("source") or {}
    err = record.get("error") or {}
    measured = h["throughput"] is not None and h["kind"] != "memory"
    row = {
        "id": record["id"], "created_at": record["created_at"], "status": record["status"], "converged": record["status"] == "ok",
        "kind": h["kind"], "sweep_name": sweep.get("name"), "sweep_id": sweep.get("id"),
        **{k: cfg.get(k) for k in ("workload", "framework", "flavor", "device", "batch_size", "precision", "compile", "channels_last", "seed")},
        "nproc": h["nproc"], "batch_unit": h["batch_unit"],
        "throughput": h["throughput"], "throughput_unit": f"{h['unit']}/s" if measured else None,
        "throughput_statistic": (record.get("method") or {}).get("throughput_statistic") if measured else None,
        "throughput_ci95_low": met.get(f"{h['unit']}_per_s_ci95_low"), "throughput_ci95_high": met.get(f"{h['unit']}_per_s_ci95_high"),
        **{k: met.get(k) for k in ("throughput_ci95_half_width_pct", "samples_per_s", "step_time_ms_p50", "step_time_ms_p90",
                                   "step_time_cv_pct", "timed_steps", "warmup_steps", "compile_time_s", "warmup_time_s", "mfu_pct",
                                   "model_tflops_per_s", "cpu_util_pct", "gpu_util_nvml_pct", "energy_j_per_sample")},
        **({"data": cfg.get("data"), "workers": cfg.get("workers"), "decode": cfg.get("decode")} if cfg.get("data") else {}),
        "input_wait_pct": met.get("input_stall_device_pct") if met.get("input_stall_device_pct") is not None else met.get("input_wait_host_pct"),
        "data_skipped_samples": met.get("data_skipped_samples"),
        "peak_memory_bytes": h["peak_bytes"],
        "noisy": noise.get("noisy"), "noise_warnings": "; ".join(noise.get("warnings") or []) or None,
        "others_cpu_cores": cond.get("others_cpu_cores"),
        "load_avg_before": ((cond.get("before") or {}).get("load_avg") or [None])[0],
        "intra_op_threads": cond.get("intra_op_threads"),
        "host": env.get("hostname"), "device_name": env.get("device_name"), "framework_version": env.get("framework_version"),
        "tbd_version": env.get("tbd_version"), "code_revision": source.get("commit"), "code_dirty": source.get("dirty"),
        "error_kind": err.get("kind"), "error_message": err.get("message"),
    }
    return {name: _typed(row.get(name), kind) for name, kind, _ in COLUMNS}


def _typed(value: Any, kind: str) -> Any:
    """The value in its column's type (None stays None); a value that does not fit becomes None."""
    if value is None or value == "":
        return None
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return bool(value)
        if kind == "timestamp":
            stamp = dt.datetime.fromisoformat(str(value))
            return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    except (TypeError, ValueError):
        return None
    return str(value)


def _csv_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return "" if value is None else value


def to_csv(records: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMN_NAMES)
    for r in records:
        writer.writerow([_csv_value(v) for v in flat_row(r).values()])
    return buf.getvalue()


def to_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, indent=1)


def to_parquet(records: list[dict[str, Any]], path) -> None:
    """The rows of `COLUMNS` as a typed Parquet file (needs pyarrow; imported only here)."""
    from tbd.errors import UsageError

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("--format parquet needs pyarrow: pip install pyarrow (or use --format csv)") from None
    types = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "timestamp": pa.timestamp("ms", tz="UTC")}
    schema = pa.schema([pa.field(name, types[kind], nullable=True, metadata={"description": meaning}) for name, kind, meaning in COLUMNS])
    rows = [flat_row(r) for r in records]
    table = pa.table({name: pa.array([row[name] for row in rows], type=schema.field(name).type) for name in COLUMN_NAMES}, schema=schema)
    pq.write_table(table, str(path))
