"""JAX side of multi-process runs: `jax.distributed.initialize`, one process per device, and the
data-parallel layout of the train state and batches over a global device mesh.

`tbd run resnet50 --framework jax --nproc-per-node 2 --device cpu` exercises it. torchrun is the
process launcher for JAX runs too (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR come from it), and a
gloo group of torch.distributed carries the harness's control messages (the same `TorchComm` as
PyTorch runs), so the lock-step measurement is framework-neutral. The training itself is pure
JAX: rank 0 picks a free port for JAX's coordinator and tells the others over that group; each
process then owns one device (`local_device_ids`), parameters are replicated over a mesh of all
processes' devices, each batch is the process's shard of a global batch split along its first
axis, and the jitted step (unchanged) becomes data parallel: XLA inserts the gradient all-reduce
because the loss is a mean over the global batch. On CPUs the collectives use gloo.

The JAX session calls `data_key` and `globalize`; each is a no-op in a single process.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import jax
import numpy as np

from tbd import topology


def _multi() -> bool:
    return jax.process_count() > 1


def data_key(key):
    """Each process draws different synthetic data; weights come from the shared key."""
    return jax.random.fold_in(key, jax.process_index()) if _multi() else key


def globalize(state: Any, batches: list[Any]) -> tuple[Any, list[Any]]:
    """State replicated over all processes' devices; each local batch leaf becomes this
    process's slice (along axis 0) of a global array. Unchanged in a single process."""
    if not _multi():
        return state, batches
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    n = jax.process_count()

    def replicate(x):
        return jax.make_array_from_single_device_arrays(x.shape, replicated, [x])

    def shard(x):
        if x.ndim == 0:
            return replicate(x)
        return jax.make_array_from_single_device_arrays((x.shape[0] * n, *x.shape[1:]), split, [x])

    return jax.tree_util.tree_map(replicate, state), [jax.tree_util.tree_map(shard, b) for b in batches]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class JaxComm:
    """The harness's control channel: PyTorch's gloo group over torchrun's rendezvous (the
    PyTorch plugin's `TorchComm`), which must also shut JAX's coordinator down first."""

    def __init__(self, group, local_rank: int, node_rank: int):
        from tbd.frameworks.torch.distributed import TorchComm

        self._channel = TorchComm(group, "jax", local_rank, node_rank)
        self.backend = "jax"
        self.rank, self.world_size = self._channel.rank, self._channel.world_size
        self.local_rank, self.node_rank = local_rank, node_rank

    def all_gather(self, obj: Any) -> list[Any]:
        return self._channel.all_gather(obj)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return self._channel.broadcast(obj, src)

    def close(self) -> None:
        jax.distributed.shutdown()  # before the control group goes: the coordinator is rank 0's
        self._channel.close()


def setup(config):
    """Join torchrun's group for control messages, then start JAX's distributed runtime."""
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    timeout = topology.collective_timeout_s(config)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
    comm = JaxComm(dist.group.WORLD, local_rank, int(os.environ.get("GROUP_RANK", 0)))
    port = comm.broadcast(_free_port() if comm.rank == 0 else None)
    if config.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{port}",
        num_processes=comm.world_size, process_id=comm.rank,
        local_device_ids=[local_rank] if config.device == "cuda" else None,
        initialization_timeout=int(timeout),
    )
    return comm

