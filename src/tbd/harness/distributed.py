"""Multi-process and multi-machine runs: the launcher that starts the ranks through torchrun and
turns what they report into one record (the topology itself, from flags or SLURM, and its checks
are `tbd.topology`'s).

`tbd run resnet50 --nproc-per-node 2 --device cpu` (one machine) or, on each of two machines,
`tbd run resnet50 --nnodes 2 --node-rank R --nproc-per-node 8 --rdzv-endpoint HOST0:29500`.

The launcher runs `python -m torch.distributed.run ... -m tbd.harness.distributed_worker` as a
child process group: torchrun (PyTorch's own launcher, --max-restarts 0) starts one worker per
rank, and stops them all when one dies. One machine uses torchrun's standalone rendezvous (a free
port); several use the static rendezvous at --rdzv-endpoint, which keeps --node-rank meaningful:
node 0 hosts the rendezvous and global rank 0. Every node's `tbd` stores the same record.

No hangs: collectives time out (TBD_DIST_TIMEOUT_S, 60 s by default, 300 s with --compile);
torchrun stops the surviving ranks of a node when one dies; and this launcher's watchdog kills
the whole process tree when no progress arrives within the collective timeout plus a margin.
No orphans (`tbd.harness.lifeline`): torchrun gets SIGTERM when `tbd` exits, even by SIGKILL
(Linux), and every worker ends itself once torchrun or `tbd` ($TBD_LAUNCHER_PID) is gone.
This file imports no framework (it runs in the `tbd` process); the ranks import theirs.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import psutil

from tbd.harness.distributed_worker import ERROR, PROGRESS
from tbd.harness.lifeline import LAUNCHER_ENV
from tbd.results.record import RunRecord, new_run_id
from tbd.topology import RDZV_TIMEOUT_S, STARTUP_GRACE_S, collective_timeout_s

def torchrun_command(config, config_path: str, result_path: str, run_id: str) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(config.nproc_per_node),
           "--nnodes", str(config.nnodes), "--max-restarts", "0", "--monitor-interval", "0.5"]
    if config.nnodes == 1:
        cmd += ["--standalone"]
    else:
        timeout = int(os.environ.get("TBD_RDZV_TIMEOUT_S", RDZV_TIMEOUT_S))
        cmd += ["--rdzv-backend", "static", "--rdzv-endpoint", config.rdzv_endpoint, "--node-rank", str(config.node_rank),
                "--rdzv-conf", f"timeout={timeout}"]
    return cmd + ["-m", "tbd.harness.distributed_worker", config_path, result_path, run_id]


def _worker_env(config) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "10"),
           LAUNCHER_ENV: str(os.getpid())}  # the workers end themselves when this process is gone
    if config.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Ranks share the machine's cores; torchrun would otherwise pick 1 and warn.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // config.nproc_per_node))
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def launch_distributed(config, progress: Callable[[dict], None] | None = None, timeout_s: float | None = None) -> RunRecord:
    """Run config over nproc_per_node x nnodes ranks; return the record (failed ones included).
    Every node gets the same record (rank 0's, with rank 0's id)."""
    run_id = new_run_id(config.workload, config.framework)
    tmp = tempfile.mkdtemp(prefix="tbd-dist-")
    config_path, result_path = os.path.join(tmp, "config.json"), os.path.join(tmp, "result.json")
    world = {"nproc_per_node": config.nproc_per_node, "nnodes": config.nnodes, "parallel": config.parallel, "ddp_bucket_mb": config.ddp_bucket_mb,
             "launcher": "torchrun (torch.distributed.run), --max-restarts 0",
             "rendezvous": "standalone" if config.nnodes == 1 else f"static at {config.rdzv_endpoint}"}
    with open(config_path, "w") as f:
        json.dump({"config": config.to_dict(), "world": world}, f)
    collective_timeout = collective_timeout_s(config)
    idle_limit = collective_timeout + 60  # no progress for this long: something hangs
    first_limit = STARTUP_GRACE_S + collective_timeout + (int(os.environ.get("TBD_RDZV_TIMEOUT_S", RDZV_TIMEOUT_S)) if config.nnodes > 1 else 0)
    deadline = timeout_s if timeout_s is not None else first_limit + config.max_time_s * 3 + 300
    # Through the lifeline shim: torchrun is told (SIGTERM, and it stops its workers) when tbd dies.
    command = [sys.executable, "-m", "tbd.harness.lifeline", str(os.getpid()), "SIGTERM", "--"] + torchrun_command(config, config_path, result_path, run_id)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_worker_env(config), start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    tail: collections.deque[str] = collections.deque(maxlen=60)
    errors: list[dict] = []
    started = last = time.monotonic()
    seen_progress = False
    try:
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = ""
            if line is None:  # the output closed: torchrun is ending
                break
            message = _message(line, PROGRESS) if line.startswith(PROGRESS) else None
            error = _message(line, ERROR) if line.startswith(ERROR) else None
            if message is not None:
                last, seen_progress = time.monotonic(), True
                if progress:
                    progress(message)
            elif error is not None:
                errors.append(error)
            elif line:
                tail.append(line.rstrip("\n"))
            now = time.monotonic()
            idle = now - last
            if (seen_progress and idle > idle_limit) or (not seen_progress and idle > first_limit) or now - started > deadline:
                _kill_tree(proc)
                what = f"no progress for {idle:.0f} s" if now - started <= deadline else f"the run took over {deadline:.0f} s"
                message = f"{what}; a rank hangs or a machine did not join (rendezvous {world['rendezvous']}); all ranks were stopped"
                return _failed(config, run_id, "timeout", message, tail)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # output closed but torchrun lingers: stop it
            _kill_tree(proc)
            rc = proc.returncode if proc.returncode is not None else -9
        if rc == 0 and os.path.exists(result_path):
            with open(result_path) as f:
                return RunRecord.from_dict(json.load(f))
        return _failed(config, run_id, *_explain(rc, errors, tail), tail)
    except KeyboardInterrupt:
        _kill_tree(proc)
        raise
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _message(line: str, prefix: str) -> dict | None:
    """The JSON after a prefix; None where another process's output got mixed into the line."""
    try:
        value, _ = json.JSONDecoder().raw_decode(line[len(prefix) :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _kill_tree(proc: subprocess.Popen) -> None:
    """Stop torchrun and every rank it started (ranks may sit in their own sessions)."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    for p in [proc, *children]:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _explain(rc: int, errors: list[dict], tail) -> tuple[str, str]:
    """(kind, message) of a failed run, naming the rank that failed first. Ranks that only saw
    a peer go away ("connection closed by peer") are witnesses, not the cause: a rank's own error
    comes first, then a rank that torchrun saw exit without reporting one."""
    own = [e for e in errors if not e.get("peer_lost")]
    if own:
        first = min(own, key=lambda e: e.get("rank", 0))
        return first.get("kind", "error"), f"rank {first.get('rank')}: {first.get('message')}"
    reported = {e.get("rank") for e in errors}
    silent = [failure for failure in _exits(tail) if failure[0] not in reported]
    if silent:
        r, code, _ = min(silent, key=_blame_order)
        seen = min(errors, key=lambda e: e.get("rank", 0)) if errors else None
        if seen and code in (-15, -9) and re.search(r"time[d ]*out", seen.get("message", ""), re.I):
            # Stopped by torchrun after a peer timed out waiting for it: it hung, it did not crash.
            return "timeout", f"rank {r} stopped responding (rank {seen.get('rank')}: {seen.get('message')}); torchrun then stopped it"
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if code == -9:  # no rank reported and torchrun stops ranks with SIGTERM: a SIGKILL of one rank is the kernel's, as a rule
            how += " (SIGKILL: the kernel's out-of-memory killer, most likely)"
        tail_note = f" (rank {seen.get('rank')} then saw: {seen.get('message')})" if seen else ""
        return "crash", f"rank {r} {how} without reporting an error; torchrun stopped the other ranks{tail_note}"
    if errors:
        first = min(errors, key=lambda e: e.get("rank", 0))
        return first.get("kind", "error"), f"rank {first.get('rank')}: {first.get('message')}"
    return "crash", f"torchrun exited with code {rc}: {(tail[-1] if tail else 'no output')[:200]}"


def _exits(tail) -> list[tuple[int, int, bool]]:
    """(rank, exit code, root cause?) for each rank in torchrun's failure summary. torchrun lists
    the failure it saw first under "Root Cause", below the other failed ranks."""
    text = "\n".join(tail)
    cut = text.find("Root Cause")
    pattern = re.compile(r"rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)")
    return [(int(m[1]), int(m[2]), cut >= 0 and m.start() > cut) for m in pattern.finditer(text)]


def _blame_order(failure: tuple[int, int, bool]) -> tuple:
    """A rank that ended by itself before one torchrun stopped with SIGTERM: torchrun's root
    cause can name a stopped rank, since ranks without an error file tie on the second they were
    seen. Then the root cause, then the lower rank."""
    rank, code, root = failure
    return (code == -15, not root, rank)


def _failed(config, run_id: str, kind: str, message: str, tail) -> RunRecord:
    return RunRecord.failed(config, kind, message, run_id, log_tail="\n".join(list(tail)[-40:]))
