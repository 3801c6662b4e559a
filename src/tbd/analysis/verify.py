"""`tbd analyze RUN --verify [N|all]`: rerun the run's configuration with each of the top
recommendations a run option expresses (two by default), store the new runs, put the measured
gain beside the expected one, and log the pair for `tbd analyze --calibration`.

The gain is the ratio of median throughputs (samples per second over each run's steady
window), both measured by the same harness on the same machine. A recommendation that needs a
code change cannot be applied by a flag and is skipped; framework settings (a fused optimizer:
`--option optimizer=fused`) are merged into the run's options. Input pipelines (runs with
--data): more loader workers and GPU decoding are flags; storing the images at a lower
resolution is measured on a resized copy of the images that the store keeps.
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tbd.analysis.levers import apply_change
from tbd.analysis.tune import steps_for_ci, timed_steps
from tbd.config import RunConfig
from tbd.harness.launcher import launch
from tbd.results.record import has_result, throughput_of


def pick(recommendations: list[dict[str, Any]], count: int | None = 1) -> list[dict[str, Any]]:
    """The top `count` recommendations a run option can apply (all of them for None)."""
    applicable = [r for r in recommendations if r.get("apply") and r["expected_gain_pct"] > 0]
    return applicable if count is None else applicable[:count]


def verify(record: dict[str, Any], analysis: dict[str, Any], store, progress: Callable[[dict], None] | None = None,
           count: int | None = 2, repeat: int = 1) -> list[dict[str, Any]]:
    """Rerun with each of the top `count` applicable recommendations (None: all); each rerun is
    stored, and each (expected, measured) pair is added to the store's calibration log. None
    applicable: nothing to rerun, an empty list (`nothing_to_verify` says so). `repeat` > 1
    measures each change that many times, each against a fresh run of the unchanged
    configuration just before it (`_verify_one`)."""
    picked = pick(analysis["recommendations"], count)
    return [_verify_one(record, rec, store, progress, analysis.get("facts"), repeat) for rec in picked]


def nothing_to_verify(record: dict[str, Any]) -> str:
    return f"nothing to verify: run {record['id']} has no recommendation that a run option can apply"


def _verify_one(record: dict[str, Any], rec: dict[str, Any], store, progress, facts: dict[str, Any] | None = None,
                repeat: int = 1) -> dict[str, Any]:
    """One recommendation measured. Once (`repeat` 1): the changed run against the analyzed run.
    Several times: pairs of runs back to back, the unchanged configuration then the changed one,
    and the gain is the median of the pairs' gains. A host-bound run follows the host's speed,
    which drifts between sessions and with what else the machine runs (resnet50 bf16 32 -> 128 on
    an H200 measured +72%, +108% and +85% in three sessions): a pair close in time shares the
    host's state, and the spread of the pairs says how far one measurement can be trusted."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    base = RunConfig.from_dict({k: v for k, v in record["config"].items() if k in fields})
    apply, note = dict(rec["apply"]), None
    if "data_resize" in apply:  # a dataset change, not a flag: measure on a lower-resolution copy
        apply["data"], note = resized_dataset(record, apply.pop("data_resize"), store)
    config = dataclasses.replace(apply_change(base, apply), profile=False, ncu=False).validated()
    unchanged = dataclasses.replace(base, profile=False, ncu=False).validated() if repeat > 1 else None
    out: dict[str, Any] = {"action": rec["action"], "apply": rec["apply"], "expected_gain_pct": rec["expected_gain_pct"],
                           "expected_gain_range_pct": rec.get("expected_gain_range_pct")}
    if note:
        out["note"] = note
    # In the workload's unit, as tbd tune judges a change: seq2seq's two resident batches at 128
    # pairs had targets of 50 and 50 tokens, at 512 of 15 and 31, so pairs per second rose 7x for
    # 4x the batch (H200, 2026-11-30) while the work per pair fell by half.
    out["unit"] = (record.get("workload") or {}).get("unit", "samples")
    befores, afters, baseline_ids = [], [], []
    for _ in range(repeat):
        before_record = record
        if unchanged is not None:
            before_record = launch(unchanged, progress)
            store.save(before_record)
            baseline_ids.append(before_record["id"])
        new = launch(config, progress)
        store.save(new)
        out["run_id"] = new["id"]
        failed = next((r for r in ((before_record, new) if unchanged is not None else (new,)) if not has_result(r)), None)
        if failed is not None:
            out["error"] = (failed.get("error") or {}).get("message", "failed") + (" (the unchanged rerun)" if failed is not new else "")
            out["measured_gain_pct"] = None
            return out
        short = next((r for r in (before_record, new) if r.get("status") == "insufficient"), None)
        if short is not None:  # a gain from a window with no CI is noise (a compile inside the budget): neither shown nor logged
            out["not_measurable"] = (f"not measurable in this budget: run {short['id']} had {timed_steps(short)} steady step(s), "
                                     f"a CI needs {steps_for_ci(short)}; analyze a run with a longer --max-time")
            out["measured_gain_pct"] = None
            return out
        befores.append(throughput_of(before_record))
        afters.append(throughput_of(new))
    gains = [(a / b - 1.0) * 100.0 for b, a in zip(befores, afters) if a and b]
    out["throughput_before"], out["throughput_after"] = statistics.median(befores), statistics.median(afters)
    out["measured_gain_pct"] = statistics.median(gains) if len(gains) == repeat else None
    if repeat > 1:
        out.update(baseline_run_ids=baseline_ids, measured_gains_pct=gains,
                   measured_gain_range_pct=[min(gains), max(gains)] if gains else None)
    if out["measured_gain_pct"] is not None:
        log_calibration(store, record, out, facts)
    return out


def resized_dataset(record: dict[str, Any], side: int, store) -> tuple[str, str]:
    """A copy of the run's image folder at a shorter side of `side` px in the store (made once,
    kept for later verifications): enough images for the run's step budget."""
    import hashlib

    from tbd.data.images import resized_copy

    cfg = record["config"]
    out = Path(store.home) / "datasets" / f"{hashlib.sha1(cfg['data'].encode()).hexdigest()[:10]}-{side}px"
    done = out / ".complete"
    limit = max(1024, cfg.get("max_steps", 300) * cfg["batch_size"])
    if not done.exists():
        made = resized_copy(cfg["data"], out, side, limit)
        done.write_text(json.dumps(made))
    made = json.loads(done.read_text())
    return str(out), f"measured on a copy of {made['images']:,} of the images at a shorter side of {side} px ({out})"


def calibration_path(store) -> Path:
    return Path(store.home) / "calibration.jsonl"


# The facts an estimate was made from, kept with each verified pair so the time model can be
# revised from the log (docs/analysis.md, "Calibration").
CALIBRATION_FACTS = ("gpu_util_trace_pct", "gpu_util_nvml_pct", "host_busy_pct", "gpu_idle_not_waiting_pct", "class_share",
                     "mean_kernel_us", "kernels_per_window", "kernels_per_step", "launches_per_step", "step_ms", "variable_shapes", "mfu_pct",
                     # the run's settings the estimate read, so a revised model can be re-run from the log alone
                     "precision", "batch_size", "compile", "channels_last", "convolutional", "steady_peak_allocated_bytes",
                     "peak_reserved_bytes", "device_total_bytes", "cores", "batch_on_host_cores", "host_work_per_sample",
                     # kernel-time shares the channels_last estimate reads (logged since the third tuning run)
                     "layout_transpose_share_pct",
                     # kernel time by grid fill, which the larger-batch estimate reads (logged since 2026-11-30:
                     # before, pairs carried no fill and their "now" fell back to full kernels)
                     "kernel_fill_share_pct",
                     # whether the model is a recurrence (the compile estimate reads it; from the spec for older pairs)
                     "recurrent",
                     # share of the kernels by class, by count (logged since 2026-12-01): where the host paces a step,
                     # torch.compile's gain follows the launches it fuses away, which time shares do not show
                     "class_count_share")


def log_calibration(store, record: dict[str, Any], result: dict[str, Any], facts: dict[str, Any] | None = None) -> None:
    """One line per verified recommendation: what was expected, what was measured, where, and
    the facts the estimate came from."""
    cfg, env = record["config"], record.get("environment") or {}
    row = {"run_id": record["id"], "verify_run_id": result["run_id"], "workload": cfg["workload"], "framework": cfg["framework"],
           "flavor": cfg["flavor"], "device": cfg["device"], "device_name": env.get("device_name"), "precision": cfg["precision"],
           "batch_size": cfg["batch_size"], "action": result["action"], "expected_gain_pct": result["expected_gain_pct"],
           "measured_gain_pct": result["measured_gain_pct"], "expected_gain_range_pct": result.get("expected_gain_range_pct"),
           # the throughput the gain was measured in (pairs logged before 2026-11-30: samples per second)
           "measured_in": f"{result['unit']}_per_s" if result.get("unit") else "samples_per_s",
           # with --repeat: each pair of runs' gain, so a miss can be set against the measurement's own spread
           **({"measured_gains_pct": result["measured_gains_pct"]} if result.get("measured_gains_pct") else {}),
           "facts": {k: (facts or {}).get(k) for k in CALIBRATION_FACTS}}
    with calibration_path(store).open("a") as f:
        f.write(json.dumps(row) + "\n")


def calibration(store) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The store's verified pairs and their summary: median absolute error of the expected gain
    relative to the measured gain (the issue's goal: within 25%), as logged and as the current
    time model estimates the same change from the same run's facts (`expected_now_pct`), so a
    revised model is judged on the pairs it was revised from and on new ones alike."""
    path = calibration_path(store)
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by an interrupted write
    for row in rows:
        row["expected_now_pct"] = re_estimate(store, row)
    summary = {"pairs": len(rows), "median_abs_error_pct_of_measured": _median_error(rows, "expected_gain_pct"),
               "median_abs_error_now_pct_of_measured": _median_error(rows, "expected_now_pct"),
               "median_throughput_error_pct": _median_throughput_error(rows, "expected_gain_pct"),
               "median_throughput_error_now_pct": _median_throughput_error(rows, "expected_now_pct")}
    return rows, summary


def _median_throughput_error(rows: list[dict[str, Any]], key: str) -> float | None:
    """Median |expected / measured throughput - 1| of the changed runs: the same pairs judged by
    the throughput each estimate predicts. Unlike the error as a share of the measured gain, a
    change that gained nothing does not weigh without bound (transformer fp32 -> bf16 once
    measured -0.6%: +8% expected is a 1,500% miss of the gain, 9% of the throughput)."""
    errors = [abs((100.0 + r[key]) / (100.0 + r["measured_gain_pct"]) - 1.0) * 100.0
              for r in rows if r.get("measured_gain_pct") is not None and r.get(key) is not None and r["measured_gain_pct"] > -100]
    return statistics.median(errors) if errors else None


def _median_error(rows: list[dict[str, Any]], key: str) -> float | None:
    errors = [abs(r[key] - r["measured_gain_pct"]) / abs(r["measured_gain_pct"]) * 100.0
              for r in rows if r.get("measured_gain_pct") and r.get(key) is not None]
    return statistics.median(errors) if errors else None


def re_estimate(store, row: dict[str, Any]) -> float | None:
    """The current model's expected gain for the pair's change, from the facts of the run it was
    made on: its stored analysis, else the facts logged with the pair (`_re_estimate_logged`); None where
    neither is there. A change the model no longer recommends is expected to gain 0."""
    try:
        base, new = store.get(row["run_id"]), store.get(row["verify_run_id"])
    except Exception:  # pairs from another store, or runs removed since: the facts logged with the pair
        return _re_estimate_logged(row)
    analysis = base.get("analysis") or {}
    facts = dict((analysis.get("report") or {}).get("facts") or {})
    if not facts:
        return _re_estimate_logged(row)
    steps = (analysis.get("trace") or {}).get("steps")
    if facts.get("kernels_per_step") is None and steps and facts.get("kernels_per_window"):  # analyses made before it was a fact
        facts["kernels_per_step"] = facts["kernels_per_window"] / steps
    change = {k: v for k, v in new["config"].items() if base["config"].get(k) != v and k in CHANGE_KEYS}
    for option, value in (new["config"].get("options") or {}).items():
        if (base["config"].get("options") or {}).get(option) != value:
            change.setdefault("options", {})[option] = value
    return _expected_for(facts, change)


def _expected_for(facts: dict[str, Any], change: dict[str, Any]) -> float:
    from tbd.analysis.recommend import recommend

    for rec in recommend(facts):
        if rec.get("apply") == change:
            return rec["expected_gain_pct"]
    return 0.0


def _re_estimate_logged(row: dict[str, Any]) -> float | None:
    """The estimate from the facts logged with a pair, where its runs are not in the store (a log
    copied from another machine, as the calibration files under docs/data). Pairs logged before the
    run's settings were facts get them from the pair and the workload's spec; the window's steps from
    its kernel time (kernels x mean kernel time = busy share x step time x steps); and for a larger
    batch, memory that allowed the batch the pair measured (it ran)."""
    from tbd import registry
    from tbd.analysis.analyze import framework_levers
    from tbd.errors import UsageError

    facts = dict(row.get("facts") or {})
    change = _logged_change(row)
    if not facts or change is None:
        return None
    known = {k: row.get(k) for k in ("device", "precision", "batch_size", "framework")}
    try:
        spec = registry.get_spec(row["workload"])
        known.update(convolutional=spec.convolutional, batch_on_host_cores=spec.batch_on_host_cores,
                     host_work_per_sample=spec.host_work_per_sample, recurrent=spec.recurrent)
    except (UsageError, KeyError):
        pass
    facts.update({k: v for k, v in known.items() if facts.get(k) is None})
    facts = {**framework_levers(row.get("framework") or ""), **facts}
    if facts.get("kernels_per_step") is None and facts.get("kernels_per_window") and facts.get("mean_kernel_us") and facts.get("step_ms") \
            and facts.get("gpu_util_trace_pct"):
        steps = round(facts["kernels_per_window"] * facts["mean_kernel_us"] / (facts["gpu_util_trace_pct"] / 100 * facts["step_ms"] * 1e3))
        facts["kernels_per_step"] = facts["kernels_per_window"] / max(steps, 1)
        facts["kernels_per_step_from_utilization"] = True  # no figure of its own: the device share is the trace's utilization
    if "batch_size" in change and not (facts.get("device_total_bytes") and (facts.get("steady_peak_allocated_bytes") or facts.get("peak_reserved_bytes"))):
        factor = change["batch_size"] / facts["batch_size"]
        facts["device_total_bytes"], facts["steady_peak_allocated_bytes"] = 1.0, 0.85 / (factor + 0.5)
    return _expected_for(facts, change)


def _logged_change(row: dict[str, Any]) -> dict[str, Any] | None:
    """The run option a pair changed, read back from its action's words (pairs carry no config):
    tune's "precision fp32 -> bf16", "batch 32 -> 128", "torch.compile", and --verify's
    "precision bf16", "larger batch (32 -> 128)", "torch.compile (mode=...)", "channels_last ..."."""
    action = row.get("action", "")
    if m := re.match(r"precision (?:\w+ -> )?(\w+)$", action):
        return {"precision": m.group(1)}
    if m := re.search(r"batch \(?(\d+) -> (\d+)\)?$", action):
        return {"batch_size": int(m.group(2))}
    if action.startswith("torch.compile"):
        return {"compile": True}
    if action.startswith("channels_last"):
        return {"channels_last": True}
    return None


# The run options a recommendation changes (the rest of a verifying run's config is the base's, or bookkeeping).
CHANGE_KEYS = ("precision", "batch_size", "compile", "channels_last", "workers", "decode", "data", "ddp_bucket_mb")
