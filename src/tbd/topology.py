"""Where a run's processes are: world size, per-rank shares, flags or SLURM, and their checks.

`RunConfig.validated()` calls `validate_topology`; `tbd run resnet50 --nproc-per-node 2 --device
cpu` or `srun --ntasks-per-node=1 tbd run ...` (SLURM) exercise it. Framework-neutral and below
the harness: the launcher (`tbd.harness.distributed`) and the framework plugins both read it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any

from tbd.errors import UsageError

PARALLEL = ("ddp", "fsdp2")
DEFAULT_PORT = 29500
RDZV_TIMEOUT_S = 300  # how long node 0 waits for the other machines to join
DEFAULT_TIMEOUT_S = 60.0  # collectives (TBD_DIST_TIMEOUT_S overrides)
COMPILE_TIMEOUT_S = 300.0
STARTUP_GRACE_S = 300  # imports, model build and the first (compiling) step before any progress
# Ranks on the CPU, per core of this machine. Far below a3c's MAX_HOST_PROCESSES_PER_CORE (32, for
# its light actor processes): each rank is a full training process, with its own interpreter,
# framework, model copy, optimizer state and batch, and the compute of a whole step. Past one a
# core the ranks only take turns, so throughput per process says nothing about scaling; 2 leaves
# room to see that happen; far more runs out of memory (64 ranks of gpt's tiny flavor on 2 cores
# and 23.5 GiB were killed by the kernel's OOM killer).
MAX_CPU_RANKS_PER_CORE = 2


def host_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_cpu_ranks(nproc: int, flag: str = "--nproc-per-node") -> None:
    """Refuse more training processes on this machine's CPU than MAX_CPU_RANKS_PER_CORE a core."""
    cores = host_cores()
    limit = MAX_CPU_RANKS_PER_CORE * cores
    if nproc > limit:
        raise UsageError(f"{flag} {nproc} starts {nproc} training processes on the {cores} core(s) of this machine, each with its own model copy; "
                         f"past {MAX_CPU_RANKS_PER_CORE} a core they only take turns, and many run out of memory: use at most {limit}")


def world_size(config) -> int:
    return config.nproc_per_node * config.nnodes


def local_share(global_batch: int, world: int) -> int:
    """Each of `world` ranks trains on an equal share of the global batch (whatever the batch
    counts: samples, tokens or actor processes); the one place that checks it divides."""
    if global_batch % world:
        good = (global_batch // world + 1) * world
        raise UsageError(f"--batch-size is the global batch and must split evenly over {world} processes; got {global_batch}, try {good}")
    return global_batch // world


def collective_timeout_s(config) -> float:
    """How long a rank waits in a collective before it gives up with an error. torch.compile
    makes first steps slow and uneven, so it gets more."""
    return float(os.environ.get("TBD_DIST_TIMEOUT_S") or (COMPILE_TIMEOUT_S if config.compile else DEFAULT_TIMEOUT_S))


def topology(given: dict[str, Any], device: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """RunConfig fields of the topology: the options given (None = not given), else SLURM's
    environment; `parallel` and `ddp_bucket_mb` pass through when given."""
    names = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint")
    out = {k: given[k] for k in names if given.get(k) is not None}
    if not out:
        out = from_slurm(os.environ if env is None else env, device)
    for key in ("parallel", "ddp_bucket_mb"):
        if given.get(key) is not None:
            out[key] = given[key]
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
    if config.nnodes > 1:
        endpoint = config.rdzv_endpoint or ""
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--nnodes {config.nnodes} needs --rdzv-endpoint HOST:PORT of node 0 (got '{endpoint}'),"
                             f" e.g. --rdzv-endpoint node0:{DEFAULT_PORT}")
    world = world_size(config)
    if world > 1 and importlib.util.find_spec("torch") is None:
        raise UsageError("several processes start through PyTorch's torchrun, also for JAX; install torch: pip install 'tbd[torch]'")
    if world > 1 and config.device == "cpu":
        check_cpu_ranks(config.nproc_per_node)
    if world > 1:
        local_share(config.batch_size, world)
    if world > 1 and config.device == "cuda":
        from tbd.metrics.devices import gpu_info

        count = gpu_info(0).get("count")
        if count and config.nproc_per_node > count:
            raise UsageError(f"--nproc-per-node {config.nproc_per_node} exceeds the {count} GPUs of this machine; use at most {count}")
