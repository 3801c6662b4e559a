"""Multi-process and multi-machine runs: the topology (flags or SLURM), its validation, and the
launcher that starts the ranks through torchrun and turns what they report into one record.

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
This file imports no framework (it runs in the `tbd` process); the ranks import theirs.
"""

from __future__ import annotations

import collections
import importlib.util
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
from typing import Any

from tbd.errors import UsageError
from tbd.results.record import new_record, new_run_id

PARALLEL = ("ddp", "fsdp2")
DEFAULT_PORT = 29500
RDZV_TIMEOUT_S = 300  # how long node 0 waits for the other machines to join
DEFAULT_TIMEOUT_S = 60.0  # collectives (TBD_DIST_TIMEOUT_S overrides)
COMPILE_TIMEOUT_S = 300.0
STARTUP_GRACE_S = 300  # imports, model build and the first (compiling) step before any progress


def world_size(config) -> int:
    return config.nproc_per_node * config.nnodes


def collective_timeout_s(config) -> float:
    """How long a rank waits in a collective before it gives up with an error. torch.compile
    makes first steps slow and uneven, so it gets more."""
    return float(os.environ.get("TBD_DIST_TIMEOUT_S") or (COMPILE_TIMEOUT_S if config.compile else DEFAULT_TIMEOUT_S))


# --- topology: flags, SLURM ------------------------------------------------------------------


def topology_from_args(args, device: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """RunConfig fields of the topology: the flags where given, else SLURM's environment."""
    names = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint")
    given = {k: getattr(args, k, None) for k in names}
    out = {k: v for k, v in given.items() if v is not None}
    if not out:
        out = from_slurm(os.environ if env is None else env, device)
    if getattr(args, "parallel", None):
        out["parallel"] = args.parallel
    if getattr(args, "ddp_bucket_mb", None) is not None:
        out["ddp_bucket_mb"] = args.ddp_bucket_mb
    return out


def from_slurm(env: dict[str, str], device: str) -> dict[str, Any]:
    """The topology of a SLURM job step started with one task per node
    (`srun --ntasks-per-node=1 tbd run ...`); {} outside SLURM or for a single process."""
    if "SLURM_JOB_ID" not in env or "SLURM_NODEID" not in env:
        return {}
    tasks = _leading_int(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_NTASKS_PER_NODE") or "1")
    nnodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES") or 1)
    if device == "cuda":
        nproc = _leading_int(env.get("SLURM_GPUS_ON_NODE") or _gpu_count(env.get("SLURM_GPUS_PER_NODE", "")) or "1")
    else:
        nproc = 1
    if nnodes * nproc <= 1:
        return {}
    if tasks > 1:
        raise UsageError(f"SLURM started {tasks} tasks per node; tbd starts the ranks itself: use 'srun --ntasks-per-node=1 tbd run ...'")
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    hosts = expand_nodelist(nodelist)
    if nnodes > 1 and not hosts:
        raise UsageError("SLURM_JOB_NODELIST is empty; pass --rdzv-endpoint HOST:PORT")
    port = int(env.get("TBD_RDZV_PORT") or DEFAULT_PORT + int(env["SLURM_JOB_ID"]) % 1000)
    return {
        "nproc_per_node": nproc, "nnodes": nnodes, "node_rank": int(env["SLURM_NODEID"]),
        "rdzv_endpoint": f"{hosts[0]}:{port}" if nnodes > 1 else None,
    }


def _leading_int(text: str) -> int:
    match = re.match(r"\s*(\d+)", text)
    return int(match.group(1)) if match else 1


def _gpu_count(text: str) -> str:
    """'4', 'a100:4' or 'gpu:a100:4' -> '4'."""
    return text.rsplit(":", 1)[-1] if text else ""


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list ('gpu[01-03,07],login1') as host names."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(nodelist):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(nodelist[start:i])
            start = i + 1
    parts.append(nodelist[start:])
    return [host for part in parts if part.strip() for host in _expand_one(part.strip())]


def _expand_one(pattern: str) -> list[str]:
    match = re.search(r"\[([^\]]+)\]", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    out = []
    for item in match.group(1).split(","):
        low, _, high = item.partition("-")
        numbers = range(int(low), int(high or low) + 1)
        out += [head + str(n).zfill(len(low)) + rest for n in numbers for rest in _expand_one(tail)]
    return out


def validate_topology(config) -> None:
    """Checks of the scale-out fields of a RunConfig (called from RunConfig.validated)."""
    for name, low in (("nproc_per_node", 1), ("nnodes", 1)):
        value = getattr(config, name)
        if not isinstance(value, int) or value < low:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if not isinstance(config.node_rank, int) or not 0 <= config.node_rank < config.nnodes:
        raise UsageError(f"--node-rank must be in 0..{config.nnodes - 1} for --nnodes {config.nnodes}, got {config.node_rank}")
    if config.parallel not in PARALLEL:
        raise UsageError(f"unknown --parallel '{config.parallel}'; valid: {', '.join(PARALLEL)}")
    bucket = getattr(config, "ddp_bucket_mb", 25.0)
    if not isinstance(bucket, (int, float)) or not 0 < bucket <= 4096:
        raise UsageError(f"--ddp-bucket-mb must be in (0, 4096] MiB, got {bucket}; PyTorch's default is 25")
    if config.parallel == "fsdp2" and config.framework != "torch":
        raise UsageError(f"--parallel fsdp2 is PyTorch's; with {config.framework} use --parallel ddp (data parallel)")
    if config.nnodes > 1:
        endpoint = config.rdzv_endpoint or ""
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--nnodes {config.nnodes} needs --rdzv-endpoint HOST:PORT of node 0 (got '{endpoint}'), e.g. --rdzv-endpoint node0:{DEFAULT_PORT}")
    world = world_size(config)
    if world > 1 and importlib.util.find_spec("torch") is None:
        raise UsageError("several processes start through PyTorch's torchrun, also for JAX; install torch: pip install 'tbd[torch]'")
    if world > 1 and config.batch_size % world:
        good = (config.batch_size // world + 1) * world
        raise UsageError(f"--batch-size is the global batch and must split evenly over {world} processes; got {config.batch_size}, try {good}")
    if world > 1 and config.device == "cuda":
        from tbd.metrics.devices import gpu_info

        count = gpu_info(0).get("count")
        if count and config.nproc_per_node > count:
            raise UsageError(f"--nproc-per-node {config.nproc_per_node} exceeds the {count} GPUs of this machine; use at most {count}")


# --- the launcher ------------------------------------------------------------------------------


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
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "10")}
    if config.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Ranks share the machine's cores; torchrun would otherwise pick 1 and warn.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // config.nproc_per_node))
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def launch_distributed(config, progress: Callable[[dict], None] | None = None, timeout_s: float | None = None) -> dict[str, Any]:
    """Run config over nproc_per_node x nnodes ranks; return the record (failed ones included).
    Every node gets the same record (rank 0's, with rank 0's id)."""
    from tbd.harness.distributed_worker import ERROR, PROGRESS

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
    proc = subprocess.Popen(torchrun_command(config, config_path, result_path, run_id), stdout=subprocess.PIPE,
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
                return _failed(config, run_id, "timeout", f"{what}; a rank hangs or a machine did not join (rendezvous {world['rendezvous']}); all ranks were stopped", tail)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # output closed but torchrun lingers: stop it
            _kill_tree(proc)
            rc = proc.returncode if proc.returncode is not None else -9
        if rc == 0 and os.path.exists(result_path):
            with open(result_path) as f:
                return json.load(f)
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
    import psutil

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
    exits = re.findall(r"rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)", "\n".join(tail))
    silent = [(int(r), int(c)) for r, c in exits if int(r) not in reported]
    if silent:
        r, code = min(silent)
        seen = min(errors, key=lambda e: e.get("rank", 0)) if errors else None
        if seen and code in (-15, -9) and re.search(r"time[d ]*out", seen.get("message", ""), re.I):
            # Stopped by torchrun after a peer timed out waiting for it: it hung, it did not crash.
            return "timeout", f"rank {r} stopped responding (rank {seen.get('rank')}: {seen.get('message')}); torchrun then stopped it"
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        tail_note = f" (rank {seen.get('rank')} then saw: {seen.get('message')})" if seen else ""
        return "crash", f"rank {r} {how} without reporting an error; torchrun stopped the other ranks{tail_note}"
    if errors:
        first = min(errors, key=lambda e: e.get("rank", 0))
        return first.get("kind", "error"), f"rank {first.get('rank')}: {first.get('message')}"
    return "crash", f"torchrun exited with code {rc}: {(tail[-1] if tail else 'no output')[:200]}"


def _failed(config, run_id: str, kind: str, message: str, tail) -> dict[str, Any]:
    record = new_record(run_id, config.to_dict())
    record["error"] = {"kind": kind, "message": message, "log_tail": "\n".join(list(tail)[-40:])}
    return record
