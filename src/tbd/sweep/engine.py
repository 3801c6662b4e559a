"""Running a sweep: `tbd sweep --workloads resnet50 --batch-sizes 4,8 --devices cpu` exercises it.

Every point is an isolated run (`tbd.harness.launcher.launch`, a child process unless the sweep
says otherwise) saved with `Store.save` as soon as it finishes, so an interrupt or a kill loses
at most the point in flight. Each record carries `sweep = {id, name, point, line, probe}`; the
id hashes the expanded plan, the name, the code revision and the library versions
(`tbd.sweep.spec.identity`), so running the same sweep again with the same code finds the
points it already has (matched on their configuration) and runs only the rest, while new code,
new libraries or another name measure every point again. `rerun=True` measures again anyway.

Within a line, batch sizes run smallest first: after an out-of-memory the larger ones are stored
as `skipped`, without running. With `max_batch`, a line instead searches for the largest batch
that fits: doubling from its smallest batch until an OOM (or the bound), then bisecting between
the last fit and the first OOM, each probe a short run (`tbd.memory.max_batch.search`).

Runners of the same sweep started at once (two terminals, two jobs) share it line by line: a
runner claims a line in the store before running it, puts off lines another live runner holds,
and waits for those at the end, so no point runs twice (docs/faults.md).
"""

from __future__ import annotations

import os
import secrets
import socket
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tbd.config import RunConfig
from tbd.harness import launcher
from tbd.memory import max_batch
from tbd.results.record import RunRecord, has_result
from tbd.results.store import Store
from tbd.sweep.spec import Line, Plan

POINT_KEYS = ("workload", "framework", "flavor", "device", "batch_size", "precision", "compile", "channels_last", "python")


def point_key(config: dict[str, Any], probe: bool = False) -> tuple:
    return tuple(config.get(k) for k in POINT_KEYS) + (bool(probe),)


def is_oom(record: dict[str, Any]) -> bool:
    """Out of device or host memory. A process killed by SIGKILL counts only when the launcher
    found evidence of an OOM kill (it then records kind 'oom'); a bare SIGKILL is a crash."""
    return (record.get("error") or {}).get("kind") == "oom"


@dataclass
class SweepResult:
    plan: Plan
    records: list[dict[str, Any]] = field(default_factory=list)  # every point of the sweep, old and new
    ran: int = 0
    resumed: int = 0
    skipped: int = 0
    failed: int = 0
    max_batch: dict[str, int | None] = field(default_factory=dict)  # line label -> largest batch that fits
    max_batch_notes: dict[str, str] = field(default_factory=dict)  # line label -> how its search was bounded, where not by an OOM
    # line label -> the search's upper bound, where that bound fitted: larger batches may fit too
    max_batch_bound: dict[str, int] = field(default_factory=dict)


def beyond_host_memory(batch: int, host_rss: dict[int, int], available: int | None = None) -> str:
    """Why a CPU probe at `batch` is not run ('' where it may be): its peak resident memory,
    extrapolated from the probes that fit, above max_batch.HOST_MEMORY_SHARE of the memory free now. With
    two probes, along the line through the two largest (the framework's own memory does not grow
    with the batch); with one, that probe's peak scaled by the batch (an overestimate)."""
    if not host_rss:
        return ""
    import psutil

    from tbd.results.memory_profile import fmt_bytes

    batches = sorted(host_rss)
    largest, below = batches[-1], (batches[-2] if len(batches) > 1 else None)
    if below is not None and host_rss[largest] > host_rss[below]:
        per_sample = (host_rss[largest] - host_rss[below]) / (largest - below)
        needed = host_rss[largest] + per_sample * (batch - largest)
    else:  # one probe, or peaks that did not grow: proportional, on the safe side
        needed = host_rss[largest] * batch / largest
    free = psutil.virtual_memory().available if available is None else available
    if needed <= max_batch.host_room_bytes(free):
        return ""
    return (f"batch {batch} not run: about {fmt_bytes(needed)} of host memory (batch {largest} peaked at {fmt_bytes(host_rss[largest])}) "
            f"against {fmt_bytes(free)} free")


class SweepRunner:
    """Runs a plan; `launch` and `on_point` are seams for tests and the CLI's progress bar."""

    def __init__(self, plan: Plan, store: Store, launch: Callable[..., dict] | None = None, retry_failed: bool = False, rerun: bool = False,
                 on_point: Callable[[str, dict[str, Any] | None, dict[str, Any]], None] | None = None,
                 on_step: Callable[[dict], None] | None = None):
        self.plan, self.store = plan, store
        self.launch = launch or launcher.launch
        self.retry_failed, self.rerun = retry_failed, rerun
        self.on_point = on_point or (lambda event, record, info: None)
        self.on_step = on_step
        self.result = SweepResult(plan)
        self.done: dict[tuple, dict[str, Any]] = {}
        self.known_ids: set[str] = set()
        self.durations: list[float] = []
        self.index = 0
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"  # this runner, in the store's claims
        self.poll_s = 1.0

    def _load_done(self, retry: bool = False) -> None:
        """Add the sweep's stored points not seen yet (oldest first: newer wins). With `retry`,
        failures other than OOM are left out, so they run again."""
        new = self.store.ids(sweep=self.plan.sweep_id) - self.known_ids
        for record in reversed(self.store.records(new) if new else []):
            self.known_ids.add(record["id"])
            if retry and record["status"] == "failed" and not is_oom(record):
                continue
            self.done[point_key(record["config"], (record.get("sweep") or {}).get("probe", False))] = record

    # -- the sweep --------------------------------------------------------------------------
    def summary(self, **more: Any) -> dict[str, Any]:
        # updated_at (microseconds) tells apart sweeps of one name that ran within the same second
        return {"notes": self.plan.notes, "plan_hash": self.plan.plan_hash, "identity": self.plan.identity,
                "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(), **more}

    def run(self) -> SweepResult:
        # A sweep's definition is written once: resuming it (or running it again) never replaces it.
        stored = [s for s in self.store.sweeps(self.plan.sweep_id) if s["id"] == self.plan.sweep_id]
        definition = stored[0]["spec"] if stored and stored[0]["spec"] else self.plan.spec.to_dict()
        self.store.save_sweep(self.plan.sweep_id, self.plan.name, definition, self.summary())
        if self.rerun:  # measure every point again: what this sweep stored before is not loaded
            self.known_ids |= self.store.ids(sweep=self.plan.sweep_id)
        self._load_done(retry=self.retry_failed)
        # Lines are claimed in the store, so runners of the same sweep started at once share the
        # lines instead of running every point twice. A line held by another live runner is put
        # off; when only such lines remain, this runner waits for them and then resumes them
        # (their points are then found done). Claims of runners that died are taken over.
        pending = list(self.plan.lines)
        while pending:
            before = len(pending)
            for line in list(pending):
                holder = self.store.claim(self.plan.sweep_id, line.label, self.owner)
                if holder is not None:
                    self.on_point("waiting", None, {"index": self.index, "label": line.label, "eta_s": self.eta_s(),
                                                    "note": f"another tbd runs this line (pid {holder['pid']} on {holder['host']}); waiting"})
                    continue
                try:
                    self._load_done()  # points another runner stored meanwhile
                    if self.plan.spec.max_batch:
                        self._bisect(line)
                    else:
                        self._line(line)
                finally:
                    self.store.release(self.plan.sweep_id, line.label, self.owner)
                pending.remove(line)
            if len(pending) == before:  # every line left is held by another runner
                time.sleep(self.poll_s)
        self.store.save_sweep(self.plan.sweep_id, self.plan.name, definition,
                              self.summary(max_batch=self.result.max_batch, max_batch_notes=self.result.max_batch_notes,
                                           max_batch_bound=self.result.max_batch_bound,
                                           points=len(self.result.records), ran=self.result.ran))
        return self.result

    def _line(self, line: Line) -> None:
        oom_at: int | None = None
        for batch in line.batches:
            if oom_at is not None:
                self._skip(line, batch, f"batch {oom_at} of this line ran out of memory")
                continue
            record = self._point(line, line.config(batch))
            if is_oom(record):
                oom_at = batch

    def _bisect(self, line: Line) -> None:
        """Largest batch that fits, by the same search as `tbd memory --max-batch`
        (tbd.memory.max_batch): walk up from the line's smallest batch to the first OOM, then
        bisect; each probe a short run stored as a point of the sweep. Variable-length workloads
        are probed at their longest inputs, as `tbd memory` sizes them, so the answer trains
        whatever lengths come, not only those a probe happened to draw."""
        from tbd import registry

        spec = registry.get_spec(line.base["workload"])
        bound = min(self.plan.spec.max_batch, spec.host_batch_limit() or self.plan.spec.max_batch)  # a3c: actors on this host's cores
        short: dict[str, Any] = dict(max_steps=min(max_batch.PROBE_STEPS, line.base["max_steps"]), min_timed_steps=1)
        longest = spec.longest_inputs
        if longest is not None:
            base = RunConfig(**line.base)
            short["hparams"] = {**base.hparams, **longest(base.resolved_hparams())}

        # On the CPU a probe that runs out of host memory meets the OOM killer, which may take other
        # processes with it: a batch whose probe would need more than the host has free is not run.
        host_rss: dict[int, int] = {}  # batch -> peak resident memory of its probe that fit (CPU lines)
        not_run: list[str] = []

        def probe(batch: int) -> str | tuple[str, str]:
            if line.base["device"] == "cpu" and (why := beyond_host_memory(batch, host_rss)):
                not_run.append(why)
                return max_batch.OOM, why
            record = self._point(line, line.config(batch, **short), probe=True)
            if has_result(record):
                if rss := (record.get("memory") or {}).get("host_peak_rss_bytes"):
                    host_rss[batch] = rss
                return max_batch.FITS
            return max_batch.OOM if is_oom(record) else max_batch.ERROR

        found = max_batch.search(probe, min(line.batches[0], bound), upper=bound, first_step=1.0)
        failed = "other than memory" in found.stopped  # says nothing about memory: no figure
        self.result.max_batch[line.label] = None if failed else found.largest_fitting
        if not failed and found.largest_fitting is not None and found.largest_fitting >= bound:
            self.result.max_batch_bound[line.label] = bound
        if not_run and not failed:
            self.result.max_batch_notes[line.label] = f"bounded by the host's free memory, not by an out-of-memory: {not_run[-1]}"

    # -- one point ------------------------------------------------------------------------
    def _point(self, line: Line, config: RunConfig, probe: bool = False) -> dict[str, Any]:
        key = point_key(config.to_dict(), probe)
        self.index += 1
        info = {"index": self.index, "label": f"{line.label} batch {config.batch_size}" + (" (max-batch probe)" if probe else ""),
                "eta_s": self.eta_s(), "probe": probe}
        if key in self.done:
            record = self.done[key]
            self.result.resumed += 1
            self.result.records.append(record)
            self.on_point("resumed", record, info)
            return record
        self.on_point("start", None, info)
        started = time.perf_counter()
        record = self.launch(config, self.on_step) if self.on_step else self.launch(config)
        record["sweep"] = {"id": self.plan.sweep_id, "name": self.plan.name, "point": self.index, "line": line.label, "probe": probe}
        self.store.save(record)  # stored as it finishes: an interrupt after this loses nothing
        self.known_ids.add(record["id"])
        self.durations.append(time.perf_counter() - started)
        self.done[key] = record
        self.result.records.append(record)
        self.result.ran += 1
        self.result.failed += record["status"] == "failed"
        self.on_point("done", record, {**info, "eta_s": self.eta_s()})
        return record

    def _skip(self, line: Line, batch: int, reason: str) -> None:
        config = line.config(batch)
        key = point_key(config.to_dict())
        self.index += 1
        record = self.done.get(key)
        if record is None:
            record = RunRecord.skipped(config, reason)
            record["sweep"] = {"id": self.plan.sweep_id, "name": self.plan.name, "point": self.index, "line": line.label, "probe": False}
            self.store.save(record)
            self.known_ids.add(record["id"])
            self.done[key] = record
        self.result.skipped += 1
        self.result.records.append(record)
        self.on_point("skipped", record, {"index": self.index, "label": f"{line.label} batch {batch}", "eta_s": self.eta_s()})

    def eta_s(self) -> float | None:
        """Mean time of the points run so far x the points left (None before the first)."""
        if not self.durations:
            return None
        left = max(0, self.plan.num_points - self.index) if not self.plan.spec.max_batch else None
        return None if left is None else left * sum(self.durations) / len(self.durations)


def sweep_records(store: Store, target: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """(sweep, its records) for a sweep name or id, or None. A name means the newest sweep of that
    name: an older sweep of the same name (older code) never fills the newer one's gaps. Names
    stored only in the runs (a sweep whose row was later renamed by an older tbd) still work."""
    found = store.sweeps(target)
    by_name = [s for s in found if s["name"] == target]
    if by_name or found:
        sweep = max(by_name, key=lambda s: (s["summary"] or {}).get("updated_at") or s["created_at"]) if by_name else found[0]
        records = store.list(sweep=sweep["id"])
    else:
        records = [r for r in store.list() if (r.get("sweep") or {}).get("name") == target]
        if not records:
            return None
        newest = max(records, key=lambda r: r["created_at"])["sweep"]["id"]
        records = [r for r in records if r["sweep"]["id"] == newest]
        sweep = {"id": newest, "name": target, "created_at": records[0]["created_at"], "spec": {}, "summary": {}}
    # A max-batch sweep has only probes: show those rather than nothing.
    return sweep, latest_per_point(records) or latest_per_point(records, probes=True)


def latest_per_point(records: list[dict[str, Any]], probes: bool = False) -> list[dict[str, Any]]:
    """One record per configuration (the newest); max-batch probes left out unless asked for."""
    newest: dict[tuple, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (r["created_at"], r["id"])):
        if (r.get("sweep") or {}).get("probe") and not probes:
            continue
        newest[point_key(r["config"])] = r
    return list(newest.values())
