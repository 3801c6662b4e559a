"""Flatten run records into rows for CSV, or dump them whole as JSON."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from tbd.results.record import headline

CONFIG_KEYS = ("workload", "framework", "flavor", "device", "batch_size", "precision", "compile", "channels_last", "seed")


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"id": record["id"], "created_at": record["created_at"], "status": record["status"]}
    row.update({k: record["config"].get(k) for k in CONFIG_KEYS})
    env = record.get("environment") or {}
    row["device_name"] = env.get("device_name")
    row["framework_version"] = env.get("framework_version")
    row["unit"] = headline(record)["unit"]
    row.update({k: v for k, v in (record.get("metrics") or {}).items() if not isinstance(v, (list, dict))})
    row.update({f"memory_{k}": v for k, v in (record.get("memory") or {}).items() if not isinstance(v, (list, dict))})
    err = record.get("error") or {}
    row["error_kind"], row["error_message"] = err.get("kind"), err.get("message")
    return row


def to_csv(records: list[dict[str, Any]]) -> str:
    rows = [flat_row(r) for r in records]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, indent=1)


def to_parquet(records: list[dict[str, Any]], path) -> None:
    """The CSV's rows as a Parquet file (needs pyarrow; imported only here)."""
    from tbd.errors import UsageError

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("--format parquet needs pyarrow: pip install pyarrow (or use --format csv)") from None
    rows = [flat_row(r) for r in records]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    # Mixed types in one column (a metric that is None in one run) become strings only where needed.
    data = {c: [row.get(c) for row in rows] for c in columns}
    for c, values in data.items():
        kinds = {type(v) for v in values if v is not None}
        if len(kinds) > 1 and not kinds <= {int, float}:
            data[c] = [None if v is None else str(v) for v in values]
    pq.write_table(pa.table(data), str(path))
