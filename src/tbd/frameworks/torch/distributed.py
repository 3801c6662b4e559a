"""PyTorch side of multi-process runs: process group set-up, DDP / FSDP2 wrapping, per-rank
seed, and a communication trace of a few steps.

`tbd run resnet50 --nproc-per-node 2 --device cpu` exercises it: torchrun starts each rank with
RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR in its environment, `tbd.harness.distributed_worker`
calls `setup(config)` here (through the plugin), and the PyTorch session calls `data_seed` and
`wrap_model` while it builds the session (each is a no-op in a single-process run).

Two process groups: the default one carries training traffic (NCCL on GPUs, gloo on CPUs); a
separate gloo group carries the harness's control messages (chunk sizes, stop decisions, the
final gather of per-rank measurements), so that those never queue behind, or show up among, the
GPU streams that are being timed.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tbd import topology
from tbd.errors import UsageError
from tbd.metrics.intervals import comm_overlap

def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def timeout_s(config) -> float:
    """A collective that waits longer ends the rank with an error (a peer died on another
    machine, or hangs); the launcher's watchdog uses the same figure."""
    return topology.collective_timeout_s(config)


def data_seed(config) -> int:
    """Each rank draws different synthetic data (as a sharded data loader would); weights use
    the shared seed so every rank starts from the same model (FSDP2 does not broadcast them)."""
    return config.seed + rank()


class TorchComm:
    """The harness's control channel over a gloo group: small Python objects, in lock-step."""

    def __init__(self, group, backend: str, local_rank: int, node_rank: int):
        self.group = group
        self.backend = backend
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_rank = local_rank
        self.node_rank = node_rank

    def all_gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=src, group=self.group)
        return box[0]

    def close(self) -> None:
        if is_distributed():
            dist.destroy_process_group()


def setup(config) -> TorchComm:
    """Join the process group torchrun prepared; bind this rank to cuda:LOCAL_RANK on GPUs."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    node_rank = int(os.environ.get("GROUP_RANK", 0))
    timeout = datetime.timedelta(seconds=timeout_s(config))
    if config.device == "cuda":
        if local_rank >= torch.cuda.device_count():
            visible = torch.cuda.device_count()
            raise UsageError(f"local rank {local_rank} has no GPU ({visible} visible); use --nproc-per-node {visible} or fewer")
        torch.cuda.set_device(local_rank)  # so that device "cuda" means this rank's GPU everywhere
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", local_rank))
        control = dist.new_group(backend="gloo", timeout=timeout)
        return TorchComm(control, "nccl", local_rank, node_rank)
    dist.init_process_group("gloo", timeout=timeout)
    control = dist.new_group(backend="gloo", timeout=timeout)
    return TorchComm(control, "gloo", local_rank, node_rank)


def wrap_model(model: nn.Module, config) -> nn.Module:
    """DDP (default) or FSDP2 around a model already on its device; unchanged outside a
    process group. Called before the optimizer is built, so that it sees the sharded
    parameters under FSDP2."""
    if not is_distributed():
        return model
    if config.parallel == "fsdp2":
        return _fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    on_cuda = next(model.parameters()).is_cuda
    # gradient_as_bucket_view: .grad tensors are views into the all-reduce buckets, which saves
    # a copy of every gradient per step and the memory of one gradient set.
    return DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if on_cuda else None,
                                   bucket_cap_mb=config.ddp_bucket_mb, gradient_as_bucket_view=True)


def _fully_shard(model: nn.Module) -> nn.Module:
    """FSDP2: shard each repeated block (the layers of an nn.ModuleList, e.g. transformer
    blocks) as its own unit, so only one block's full parameters exist at a time, then the
    rest of the model as the root unit."""
    from torch.distributed.fsdp import fully_shard

    for block in repeated_blocks(model):
        fully_shard(block)
    fully_shard(model)
    return model


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """Members (with parameters) of the outermost nn.ModuleLists of the model."""
    blocks: list[nn.Module] = []
    inside: list[str] = []  # name prefixes of lists already taken: nested lists stay inside
    for name, module in model.named_modules():  # parents come before their children
        if any(name.startswith(prefix) for prefix in inside) or not isinstance(module, nn.ModuleList):
            continue
        members = [m for m in module if any(True for _ in m.parameters())]
        if len(members) >= 2:
            blocks += members
            inside.append(name + ".")
    return blocks


def profile_comm(session, steps: int) -> dict[str, Any]:
    """Trace `steps` steps with torch.profiler and measure communication time and its overlap
    with computation (`comm_stats`). Every rank runs the same steps,
    from a barrier, after one untraced warm-up step under the profiler: a rank that entered the
    window late would otherwise show up as long collectives on the others."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU]
    if session.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    dist.barrier()
    with tempfile.TemporaryDirectory(prefix="tbd-trace-") as tmp:
        path = os.path.join(tmp, f"rank{rank()}.json")
        plan = schedule(wait=0, warmup=1, active=steps, repeat=1)
        with profile(activities=activities, schedule=plan, on_trace_ready=lambda p: p.export_chrome_trace(path)) as prof:
            for _ in range(steps + 1):
                session.run_steps(1)
                prof.step()
        with open(path) as f:
            trace = json.load(f)
    return comm_stats(trace, steps)


def comm_stats(trace: dict | list, steps: int) -> dict[str, Any]:
    """Communication time per step and its overlap with computation, from a Chrome trace as
    torch.profiler writes it. With GPU kernels in the trace: NCCL kernels are communication,
    every other kernel computation. Without (CPU runs): the spans the process group records
    on its worker threads ("gloo:all_reduce", ...) are communication, CPU ops computation (the
    "c10d::" calls that only enqueue a collective are neither)."""
    events = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
    spans = [e for e in events if e.get("ph") == "X" and isinstance(e.get("dur"), (int, float))]
    kernels = [e for e in spans if e.get("cat") == "kernel"]
    if kernels:
        comm_events = [e for e in kernels if "nccl" in e.get("name", "").lower()]
        compute_events = [e for e in kernels if "nccl" not in e.get("name", "").lower()]
    else:
        comm_events = [e for e in spans if e.get("cat") in ("cpu_op", "user_annotation")
                       and e.get("name", "").lower().startswith(("gloo:", "nccl:", "mpi:"))]
        compute_events = [e for e in spans if e.get("cat") == "cpu_op" and not e.get("name", "").startswith("c10d::")]
    stats = comm_overlap([(e["ts"], e["ts"] + e["dur"]) for e in comm_events],
                         [(e["ts"], e["ts"] + e["dur"]) for e in compute_events], steps)
    return {"source": "gpu kernels" if kernels else "cpu ops", **stats}
