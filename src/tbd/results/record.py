"""The run record: one versioned document per run, built by `RunRecord` and nowhere else.

Fields: schema_version, id, created_at, kind ('run' | 'memory' | 'tune'), status (see STATUSES),
config, workload (spec facts), environment, method, samples (raw per-step times and units),
metrics (derived, units in names), memory, error ({kind, message, ...} or None), and where they
apply analysis, distributed, sweep, memory_profile and tune (a `tbd tune` record: its config is
the best configuration found, its metrics the best run's plus the speedup, its `tune` the trail;
added in schema 3 as an optional part, which older readers keep as an unknown key).

Every producer (single run, distributed rank 0, `tbd memory`, the sweep engine, the launchers)
starts from `RunRecord.for_run` or one of the outcome constructors (`failed`, `oom`, `skipped`).
Readers that take stored JSON get plain dicts of the current schema (`RunRecord.from_dict(d)
.to_dict()` upgrades older ones); a record also reads like that dict (`record["metrics"]`).

Status: a run that measured something is 'ok' (its 95% CI reached the target), 'unconverged'
(a budget ran out first; the CI it reached is kept) or 'insufficient' (too few steady steps for
a CI); the verdict and its reason are in `method.convergence`. A run that did not measure is
'failed' or 'skipped'. `has_result(record)` is the test for "there is a throughput to show".

Schema history: 1 (first release); 2 adds `kind` (was implied by a `memory_profile` key) and
`workload.batch_unit` (what batch_size counts); 3 adds the statuses 'unconverged' and
'insufficient' with `method.convergence`, and `environment.conditions` (load, threads, clocks).
Older records are read and upgraded: an 'ok' run of schema 1-2 gets its verdict from its own
stop reason and step counts (`_upgrade_status`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 3
MEASURED = ("ok", "unconverged", "insufficient")  # statuses of a run with a throughput
STATUSES = (*MEASURED, "failed", "skipped")
KINDS = ("run", "memory", "tune")
OPTIONAL = ("analysis", "distributed", "sweep", "memory_profile", "tune")


def new_run_id(workload: str = "", framework: str = "") -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def workload_facts(spec, config) -> dict[str, Any]:
    """What a record says about its workload (from the framework-neutral spec)."""
    return {
        "name": spec.name, "domain": spec.domain, "dataset": spec.dataset, "unit": spec.unit,
        "sample_unit": spec.sample_unit, "batch_unit": spec.batch_counts, "flavor": config.flavor,
        "hparams": config.resolved_hparams(),
    }


def _facts_of(config) -> dict[str, Any]:
    """The workload facts of a run that failed where no producer filled them in (a crashed child, a
    failed rank): its unit above all, so the failure reads in the workload's unit, not 'samples'.
    {} where the workload does not resolve: a failed record is always written."""
    from tbd import registry

    try:
        facts = workload_facts(registry.get_spec(config.workload), config)
    except Exception:
        return {}
    return json.loads(json.dumps(facts, default=str))  # as stored (tuples become lists): a record reads back equal


@dataclass
class RunRecord:
    id: str
    config: dict[str, Any]
    status: str = "failed"  # until the producer says otherwise: a crash mid-run stays a failure
    kind: str = "run"
    created_at: str = field(default_factory=_now)
    workload: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    analysis: dict[str, Any] | None = None
    distributed: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None
    memory_profile: dict[str, Any] | None = None
    tune: dict[str, Any] | None = None  # kind 'tune' (`tbd tune`): the trail and the best configuration
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer minor writer, kept as they are

    # -- constructors: one per outcome -----------------------------------------------------
    @classmethod
    def for_run(cls, config, spec=None, run_id: str | None = None, kind: str = "run") -> "RunRecord":
        """The record a producer fills in as the run goes (status 'failed' until `succeed`)."""
        record = cls(id=run_id or new_run_id(), config=config.to_dict(), kind=kind)
        if spec is not None:
            record.workload = workload_facts(spec, config)
        return record

    @classmethod
    def failed(cls, config, kind: str, message: str, run_id: str | None = None, **details: Any) -> "RunRecord":
        """A run that started (or was meant to) and failed: 'crash', 'timeout', 'nan', 'error'..."""
        record = cls(id=run_id or new_run_id(), config=config.to_dict(), workload=_facts_of(config))
        record.fail(kind, message, **details)
        return record

    @classmethod
    def oom(cls, config, message: str, run_id: str | None = None, **details: Any) -> "RunRecord":
        return cls.failed(config, "oom", message, run_id, **details)

    @classmethod
    def skipped(cls, config, reason: str, run_id: str | None = None) -> "RunRecord":
        """A point that was not run (e.g. a larger batch after an out-of-memory)."""
        record = cls(id=run_id or new_run_id(), config=config.to_dict(), status="skipped")
        record.error = {"kind": "skipped", "message": reason}
        return record

    def succeed(self) -> "RunRecord":
        """The run finished: its status is the measurement's verdict ('ok' when there is none)."""
        verdict = (self.method or {}).get("convergence") or {}
        self.status, self.error = verdict.get("status", "ok"), None
        return self

    def fail(self, kind: str, message: str, **details: Any) -> "RunRecord":
        self.status = "failed"
        self.error = {"kind": kind, "message": message, **details}
        return self

    # -- (de)serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        for key in OPTIONAL:
            if out[key] is None:
                del out[key]
        return {**self.extra, **out}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        """A record of this schema or an older one (upgraded); ValueError if it is not one."""
        if not isinstance(data, dict) or "id" not in data or not isinstance(data.get("config"), dict):
            raise ValueError("not a tbd run record (no id or config)")
        version = int(data.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise ValueError(f"record {data['id']} has schema {version}, newer than this tbd ({SCHEMA_VERSION}); upgrade tbd")
        data = dict(data)
        if version < 2:
            data.setdefault("kind", "memory" if "memory_profile" in data else "run")
            workload = dict(data.get("workload") or {})
            if workload and "batch_unit" not in workload:
                workload["batch_unit"] = workload.get("sample_unit", "samples")
            data["workload"] = workload
        if version < 3 and data.get("status") == "ok" and data.get("kind", "run") == "run":
            _upgrade_status(data)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known["schema_version"] = SCHEMA_VERSION
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    @classmethod
    def from_json(cls, text: str) -> "RunRecord":
        return cls.from_dict(json.loads(text))

    # -- read like the stored dict, so readers of stored and fresh records are one code path --
    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        if key == "extra" or key not in {f.name for f in dataclasses.fields(self)} or (key in OPTIONAL and getattr(self, key) is None):
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in {f.name for f in dataclasses.fields(self)} - {"extra"}:
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __contains__(self, key: str) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def update(self, other: dict[str, Any] | None = None, **fields: Any) -> None:
        for key, value in {**(other or {}), **fields}.items():
            self[key] = value

    def setdefault(self, key: str, default: Any) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


def _upgrade_status(data: dict[str, Any]) -> None:
    """Give an 'ok' run of schema 1-2 the convergence verdict it would get today, from what it
    stored: its timed steps and its stop reason (a budget reached means not converged)."""
    config, metrics = data["config"], data.get("metrics") or {}
    method = dict(data.get("method") or {})
    steps = len((data.get("samples") or {}).get("step_s") or [])
    timed = int(metrics.get("timed_steps") or max(0, steps - int(metrics.get("warmup_steps") or 1)))
    need = max(3, min(int(config.get("min_timed_steps") or 1), int(config.get("max_steps") or 2) - 1))
    ci = metrics.get("throughput_ci95_half_width_pct")
    stop = method.get("stop_reason") or ""
    if timed < need or ci is None or ci != ci or ci == float("inf"):
        status, why = "insufficient", f"{timed} steady step(s), fewer than the {need} needed (verdict added on upgrade)"
        data["metrics"] = {**metrics, "throughput_ci95_half_width_pct": None}
    elif "budget" in stop:
        status, why = "unconverged", f"stopped by the budget with CI +-{ci:.2f}% (verdict added on upgrade)"
    else:
        status, why = "ok", f"CI +-{ci:.2f}% within the target (verdict added on upgrade)"
    method["convergence"] = {"status": status, "reason": why, "ci_pct": None if status == "insufficient" else ci,
                             "target_ci_pct": config.get("target_ci_pct"), "timed_steps": timed, "min_timed_steps": need}
    data["method"], data["status"] = method, status


def has_result(record: RunRecord | dict[str, Any]) -> bool:
    """True when the run measured a throughput (converged or not)."""
    return record["status"] in MEASURED


def throughput_of(record: dict[str, Any]) -> float | None:
    """A stored run's median throughput in its workload's unit (tokens, audio seconds, images, ...),
    what a change is judged by: for variable-length inputs a batch of other lengths changes the
    samples per second with the work in each sample, and the unit counts that work."""
    unit = (record.get("workload") or {}).get("unit", "samples")
    metrics = record.get("metrics") or {}
    return metrics.get(f"{unit}_per_s") or metrics.get("samples_per_s")


def as_dict(record: RunRecord | dict[str, Any]) -> dict[str, Any]:
    """The stored form of a record, fresh or read back (older schemas upgraded)."""
    return record.to_dict() if isinstance(record, RunRecord) else RunRecord.from_dict(record).to_dict()


def headline(record: RunRecord | dict[str, Any]) -> dict[str, Any]:
    """The few numbers a results table shows."""
    cfg, met, mem = record["config"], record.get("metrics") or {}, record.get("memory") or {}
    workload = record.get("workload") or {}
    unit = workload.get("unit", "samples")
    return {
        "id": record["id"],
        "workload": cfg["workload"],
        "framework": cfg["framework"],
        "flavor": cfg["flavor"],
        "device": cfg["device"],
        "batch_size": cfg["batch_size"],
        "batch_unit": workload.get("batch_unit") or workload.get("sample_unit") or "samples",
        "precision": cfg["precision"],
        "compile": cfg["compile"],
        "channels_last": bool(cfg.get("channels_last")),
        "status": record["status"],
        "converged": record["status"] == "ok",
        "kind": record.get("kind", "run"),
        "nproc": int(cfg.get("nproc_per_node") or 1) * int(cfg.get("nnodes") or 1),
        "unit": unit,
        "throughput": met.get(f"{unit}_per_s"),
        "ci_pct": met.get("throughput_ci95_half_width_pct"),
        "compile_time_s": met.get("compile_time_s"),
        "step_time_ms_p50": met.get("step_time_ms_p50"),
        "mfu_pct": met.get("mfu_pct"),
        # The steady steps' peak where the warm-up's (autotuner workspaces) was counted apart.
        "peak_bytes": mem.get("steady_peak_allocated_bytes") or mem.get("peak_allocated_bytes") or mem.get("host_peak_rss_bytes"),
        "warmup_peak_bytes": mem.get("warmup_peak_allocated_bytes"),
        "error": (record.get("error") or {}).get("message"),
        "error_kind": (record.get("error") or {}).get("kind"),
        "created_at": record["created_at"],
        # The environment of a run in another interpreter (config.python): its name, else its venv folder's.
        "env": None if cfg.get("python") is None else ((record.get("environment") or {}).get("env_name")
                                                       or os.path.basename(os.path.dirname(os.path.dirname(cfg["python"])))),
    }
