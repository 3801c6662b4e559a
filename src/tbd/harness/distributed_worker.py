"""One rank of a multi-process run, and how the ranks' measurements become one record.

Started by torchrun for each rank (see `tbd.harness.distributed`), as
`python -m tbd.harness.distributed_worker CONFIG.json RESULT.json RUN_ID`; `tbd run resnet50
--nproc-per-node 2 --device cpu` exercises it.

Each rank runs the normal measurement loop (`tbd.harness.measure.measure`) on its own session,
wrapped in `SyncedSession`, which keeps the ranks in lock-step: after every chunk the ranks
all-gather their step times, and every rank hands the loop the same numbers (each step's time is
the slowest rank's, its units the sum over ranks). The loop's decisions (chunk size, warm-up,
when to stop) are then identical on every rank without any further message, so all ranks run the
same number of steps. The time budget is applied here, from rank 0's clock, for the same reason.

Any failure in a rank prints one `TBD-ERROR {json}` line and ends the process at once: torchrun
(run with --max-restarts 0) then stops the other ranks, and the launcher records the failure.
Waiting in a collective for a rank that is gone would only turn a clear error into a timeout.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import sys
import time
from typing import Any

from tbd import frameworks, registry
from tbd.config import RunConfig
from tbd.errors import RunFailure
from tbd.frameworks.base import StepTimes
from tbd.harness import lifeline, stats
from tbd.harness.measure import measure
from tbd.harness.runner import classify, fill_measurement, hang_for_tests, split_peaks
from tbd.metrics.devices import gpu_info
from tbd.metrics.sampling import Probe
from tbd.results import environment
from tbd.results.record import RunRecord

PROGRESS = "TBD-PROGRESS "
ERROR = "TBD-ERROR "
STRAGGLER_RATIO = 1.1  # a rank whose median step time exceeds the fastest rank's by 10%
PROFILE_STEPS = 3
# What a rank sees when another rank died: the dead rank is the culprit, not this one.
PEER_LOST = re.compile(r"closed by peer|connection reset|remote (worker|process)|broken pipe|timed out|timeout|watchdog", re.I)


class SyncedSession:
    """A rank's session as the measurement loop sees it in a multi-process run."""

    def __init__(self, session, comm, config: RunConfig):
        self.session, self.comm, self.info = session, comm, session.info
        self.budget_s = config.max_time_s
        # The loop gets no time budget of its own (its clock differs per rank); this one is
        # mutated to end the loop when rank 0's clock says the budget is spent.
        self.loop_config = dataclasses.replace(config, max_time_s=1e9)
        self.local_step_s: list[float] = []
        self.rank_step_s: list[list[float]] = [[] for _ in range(comm.world_size)]
        self.started: float | None = None
        self.time_stopped = False
        self._loss = math.nan
        self._rank0_elapsed = 0.0
        self._kill_after = _test_kill_hook(comm.rank)

    def run_steps(self, n: int) -> StepTimes:
        if self._kill_after is not None and len(self.local_step_s) >= self._kill_after:
            if os.environ.get("TBD_TEST_KILL_MODE") == "raise":  # a failure the rank reports itself
                raise RuntimeError(f"injected failure on rank {self.comm.rank} (TBD_TEST_KILL_MODE)")
            if os.environ.get("TBD_TEST_KILL_MODE") == "hang":  # the others must time out, not wait forever
                hang_for_tests()
            print(f"rank {self.comm.rank}: exiting on purpose (TBD_TEST_KILL_RANK)", file=sys.stderr, flush=True)
            os._exit(17)
        if self.started is not None:  # the first chunk (compilation) does not count, as in measure
            remaining = self.budget_s - self._rank0_elapsed  # rank 0's clock: the same n on every rank
            recent = sorted(self.rank_step_s[0][-5:])[len(self.rank_step_s[0][-5:]) // 2]
            n = max(1, min(n, int(remaining / max(recent, 1e-6))))
        times = self.session.run_steps(n)
        loss = self.session.last_loss()
        self.started = self.started or time.perf_counter()
        elapsed = time.perf_counter() - self.started
        gathered = self.comm.all_gather((times.seconds, times.units, times.samples, loss, elapsed))
        if len({len(g[0]) for g in gathered}) != 1:
            raise RunFailure("ranks ran different numbers of steps; the lock-step of the harness broke", kind="error")
        self.local_step_s += times.seconds
        for r, g in enumerate(gathered):
            self.rank_step_s[r] += g[0]
        self._loss = sum(g[3] for g in gathered) / len(gathered)  # mean over ranks = loss of the global batch
        steps = len(self.local_step_s)
        self._rank0_elapsed = gathered[0][4]
        if self._rank0_elapsed >= self.budget_s and steps < self.loop_config.max_steps:
            self.time_stopped = True
            self.loop_config.max_steps = steps
        return StepTimes(
            seconds=[max(g[0][i] for g in gathered) for i in range(len(times.seconds))],
            units=[sum(g[1][i] for g in gathered) for i in range(len(times.units))],
            samples=[sum(g[2][i] for g in gathered) for i in range(len(times.samples))],
        )

    def last_loss(self) -> float:
        return self._loss

    def memory(self):
        return self.session.memory()

    def reset_peak_memory(self) -> bool:
        reset = getattr(self.session, "reset_peak_memory", None)
        return bool(reset and reset())


def _test_kill_hook(rank: int) -> int | None:
    """Test-only: TBD_TEST_KILL_RANK=R TBD_TEST_KILL_AFTER_STEPS=N makes rank R exit after N steps
    (os._exit(17), no word), raise an exception (TBD_TEST_KILL_MODE=raise) or hang (=hang)."""
    if os.environ.get("TBD_TEST_KILL_RANK") == str(rank):
        return int(os.environ.get("TBD_TEST_KILL_AFTER_STEPS", "2"))
    return None


def run_rank(config: RunConfig, comm, plugin, run_id: str) -> tuple[dict, RunRecord | None]:
    """Measure on this rank; return (its summary, the record on rank 0 else None)."""
    spec = registry.get_spec(config.workload)
    probe = Probe(comm.local_rank if config.device == "cuda" else None)
    session = frameworks.open_session(config, world_size=comm.world_size)
    record = RunRecord.for_run(config, spec, run_id)
    try:
        synced = SyncedSession(session, comm, config)
        progress = _print_progress if comm.rank == 0 else None
        m = measure(synced, synced.loop_config, progress, probe, spec.irregular_steps)
        fill_measurement(record, session, m, config, spec)
        if synced.time_stopped and m.stop_reason.startswith("step budget"):
            m.stop_reason = record.method["stop_reason"] = f"time budget reached ({config.max_time_s:g} s, rank 0's clock)"
        comm_stats = plugin.profile_comm(session, PROFILE_STEPS) if config.profile else None
        memory = session.memory()
        memory = {**memory, **split_peaks(memory, m.warmup_memory), **probe.close()}
    finally:
        session.close()
    metrics = record.metrics
    summary = {
        "rank": comm.rank, "local_rank": comm.local_rank, "node_rank": comm.node_rank,
        "host": socket.gethostname(), "pid": os.getpid(),
        "device": f"cuda:{comm.local_rank}" if config.device == "cuda" else "cpu",
        "device_name": session.info.device_name,
        "step_s": synced.local_step_s, "memory": memory, "comm": comm_stats,
        "utilization": {k: metrics.get(k) for k in ("cpu_util_pct", "cpu_cores_busy", "gpu_util_nvml_pct", "energy_j", "gpu_power_w_mean")},
        "environment": _rank_environment(config, comm.local_rank),
    }
    if comm.rank != 0:
        return summary, None
    record.environment = {**environment.capture(config.device, plugin.libraries), **record.environment}
    if config.profile:  # tbd.analysis traces single-process runs; here each rank's comm is measured
        why = "per-rank communication time and overlap are in metrics and distributed.ranks[].comm" if plugin.capabilities.comm_trace \
            else f"{plugin.title} records no per-rank communication trace"
        record.analysis = {"error": f"distributed run: {why}"}
    return summary, record.succeed()


def _rank_environment(config: RunConfig, local_rank: int) -> dict[str, Any]:
    env: dict[str, Any] = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MASTER_ADDR", "MASTER_PORT") if os.environ.get(k)}
    if config.device == "cuda":
        env["gpu"] = gpu_info(local_rank)
    return env


def _say(prefix: str, payload: dict) -> None:
    # One write per line: ranks share the pipe, and print() may split text and newline.
    sys.stdout.write(prefix + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _print_progress(p: dict) -> None:
    _say(PROGRESS, p)


def merge(record: RunRecord, summaries: list[dict[str, Any]], world: dict[str, Any]) -> RunRecord:
    """Fold the per-rank summaries into rank 0's record (its metrics are already global: the
    loop saw the slowest rank's time and the sum of units of every step)."""
    steady = stats.detect_steady_state(record["samples"]["step_s"]).start
    medians = [_median(s["step_s"][steady:] or s["step_s"]) for s in summaries]
    fastest = min(medians)
    stragglers = [s["rank"] for s, med in zip(summaries, medians) if med > STRAGGLER_RATIO * fastest]
    metrics = record["metrics"]
    n = len(summaries)
    # Model FLOPs are summed over ranks; MFU divides by the peak of all n devices.
    if metrics.get("mfu_pct") is not None:
        metrics["mfu_pct"] /= n
    energies = [s["utilization"].get("energy_j") for s in summaries]
    if all(e is not None for e in energies) and metrics.get("energy_j"):
        scale = sum(energies) / metrics["energy_j"]  # rank 0's energy over the global samples, scaled up
        metrics["energy_j"] = sum(energies)
        metrics["energy_j_per_sample"] *= scale
        metrics["gpu_power_w_mean"] = sum(s["utilization"].get("gpu_power_w_mean") or 0 for s in summaries)
    metrics["world_size"] = n
    metrics["straggler_count"] = len(stragglers)
    comm = [s.get("comm") for s in summaries]
    if all(comm):
        # A collective's kernel runs from when its rank arrives until the last rank does, so
        # the rank that waited least shows the transfer itself; what the others show beyond
        # it is waiting for a slower rank (skew, load imbalance).
        least = min(comm, key=lambda c: c["comm_ms_per_step"])
        metrics["comm_ms_per_step"] = least["comm_ms_per_step"]
        metrics["exposed_comm_ms_per_step"] = least["exposed_comm_ms_per_step"]
        metrics["comm_overlap_pct"] = least["comm_overlap_pct"]
        metrics["comm_wait_ms_per_step"] = max(c["comm_ms_per_step"] for c in comm) - least["comm_ms_per_step"]
        windows = sorted(c["window_ms_per_step"] for c in comm if c.get("window_ms_per_step"))
        if windows:  # profiled step time (the profiler slows steps a little): the shares' denominator
            metrics["profiled_step_ms"] = windows[len(windows) // 2]
            metrics["comm_share_pct"] = 100.0 * least["comm_ms_per_step"] / metrics["profiled_step_ms"]
            metrics["exposed_comm_share_pct"] = 100.0 * least["exposed_comm_ms_per_step"] / metrics["profiled_step_ms"]
    per_rank_memory = [s["memory"] for s in summaries]
    memory: dict[str, Any] = {"per_rank": per_rank_memory, "note": "each figure outside per_rank is the largest rank's, never a sum over ranks"}
    for key in {k for mem in per_rank_memory for k, v in mem.items() if isinstance(v, (int, float))}:
        values = [mem[key] for mem in per_rank_memory if isinstance(mem.get(key), (int, float))]
        memory[key] = max(values)
    record["memory"] = memory
    record["samples"]["per_rank_step_s"] = [s["step_s"] for s in summaries]
    record["distributed"] = {
        **world,
        "world_size": n,
        "ranks": [{k: v for k, v in s.items() if k != "step_s"} | {"step_time_ms_median": med * 1e3} for s, med in zip(summaries, medians)],
        "stragglers": stragglers,
        "straggler_rule": f"median steady step time over {STRAGGLER_RATIO:g}x the fastest rank's",
    }
    record["method"]["distributed"] = {
        "throughput": ("per step, the sum over ranks of units and the slowest rank's time; over the steady steps the same "
                       "statistic as one process's (method.throughput: median per-step rate, or the window rate)"),
        "step_time": "per step, the slowest rank's time",
        "lock_step": "ranks all-gather step times after every chunk; the measurement loop sees the same numbers on every rank",
        "mfu": "model FLOPs of all ranks / (world size x one device's peak)",
        "memory": "per rank, never summed",
        "comm": (
            "from a torch.profiler trace of a few steps per rank (--profile): comm kernels/ops by name,"
            " overlap = comm time concurrent with compute / comm time; comm = the rank that waited least (the transfer),"
            " comm_wait = the most any rank waited beyond it; share = comm / profiled step"
            if all(comm) else "not measured (run with --profile)"
        ),
    }
    return record


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv: list[str]) -> int:
    config_path, result_path, run_id = argv
    lifeline.end_with_parent(os.getppid(), lifeline.launcher_pid_from_env(), sig=None)  # no orphan when torchrun or tbd dies
    with open(config_path) as f:
        payload = json.load(f)
    config = RunConfig.from_dict(payload["config"])
    plugin = registry.framework(config.framework)
    rank = int(os.environ.get("RANK", 0))
    try:
        comm = plugin.setup_distributed(config)
        summary, record = run_rank(config, comm, plugin, run_id)
        summaries = comm.all_gather(summary)
    except BaseException as exc:  # noqa: BLE001 - every failure ends this rank with one line
        error = {"kind": exc.kind, "message": str(exc)} if isinstance(exc, RunFailure) else classify(exc, config)
        error.pop("traceback", None)
        # Drop gloo's "[/path/pair.cc:561] " source prefix; flag errors that only say a peer left.
        error["message"] = re.sub(r"\[/[^\]]*\]\s*", "", error["message"])
        error["peer_lost"] = bool(PEER_LOST.search(error["message"]))
        _say(ERROR, {"rank": rank, **error})
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    # Every machine's `tbd` stores the same record (rank 0's), so each store has the run.
    merged = comm.broadcast(merge(record, summaries, payload.get("world", {})).to_dict() if record is not None else None)
    if comm.local_rank == 0:
        tmp = result_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(merged, f, default=str)
        os.replace(tmp, result_path)
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
