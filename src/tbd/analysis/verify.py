"""`tbd analyze RUN --verify`: rerun the run's configuration with the top recommendation that a
run option expresses, store the new run, and put the measured gain beside the expected one.

The gain is the ratio of median throughputs (samples per second over each run's steady
window), both measured by the same harness on the same machine. A recommendation that needs a
code change (a fused optimizer, more loader workers) cannot be applied by a flag and is skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from tbd.config import RunConfig
from tbd.errors import UsageError
from tbd.harness.launcher import launch
from tbd.results.record import has_result


def pick(recommendations: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in recommendations if r.get("apply") and r["expected_gain_pct"] > 0), None)


def verify(record: dict[str, Any], analysis: dict[str, Any], store, progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    rec = pick(analysis["recommendations"])
    if rec is None:
        raise UsageError(f"run {record['id']} has no recommendation that a run option can apply; nothing to verify")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    base = {k: v for k, v in record["config"].items() if k in fields}
    config = RunConfig.from_dict({**base, **rec["apply"], "profile": False, "ncu": False}).validated()
    new = launch(config, progress)
    store.save(new)
    out: dict[str, Any] = {"action": rec["action"], "apply": rec["apply"], "expected_gain_pct": rec["expected_gain_pct"], "run_id": new["id"]}
    if not has_result(new):
        out["error"] = (new.get("error") or {}).get("message", "failed")
        out["measured_gain_pct"] = None
        return out
    before = (record.get("metrics") or {}).get("samples_per_s")
    after = (new.get("metrics") or {}).get("samples_per_s")
    out["samples_per_s_before"], out["samples_per_s_after"] = before, after
    out["measured_gain_pct"] = (after / before - 1.0) * 100.0 if before and after else None
    return out
