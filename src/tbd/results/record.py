"""The run record: one versioned JSON document per run.

Fields: schema_version, id, created_at, status ('ok' | 'failed'), config, workload (spec facts),
environment, method, samples (raw per-step times and units), metrics (derived, units in names),
memory, error ({kind, message} or null). Bump SCHEMA_VERSION when a field changes meaning; the
store refuses records of a newer schema instead of misreading them.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

SCHEMA_VERSION = 1


def new_run_id(workload: str, framework: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def new_record(run_id: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "id": run_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "status": "failed",
        "config": config,
        "workload": {},
        "environment": {},
        "method": {},
        "samples": {},
        "metrics": {},
        "memory": {},
        "error": None,
    }


def headline(record: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a results table shows."""
    cfg, met, mem = record["config"], record.get("metrics") or {}, record.get("memory") or {}
    unit = (record.get("workload") or {}).get("unit", "samples")
    return {
        "id": record["id"],
        "workload": cfg["workload"],
        "framework": cfg["framework"],
        "flavor": cfg["flavor"],
        "device": cfg["device"],
        "batch_size": cfg["batch_size"],
        "precision": cfg["precision"],
        "compile": cfg["compile"],
        "status": record["status"],
        "unit": unit,
        "throughput": met.get(f"{unit}_per_s"),
        "ci_pct": met.get("throughput_ci95_half_width_pct"),
        "step_time_ms_p50": met.get("step_time_ms_p50"),
        "mfu_pct": met.get("mfu_pct"),
        "peak_bytes": mem.get("peak_allocated_bytes") or mem.get("host_peak_rss_bytes"),
        "error": (record.get("error") or {}).get("message"),
        "created_at": record["created_at"],
    }
