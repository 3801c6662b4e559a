"""TensorFlow side of multi-process runs: `tf.distribute.MultiWorkerMirroredStrategy` behind
torchrun's ranks.

`tbd run resnet50 --framework tf --nproc-per-node 2 --device cpu` exercises it (2 processes over
loopback). torchrun is the process launcher for TensorFlow runs too (RANK, LOCAL_RANK,
WORLD_SIZE come from it), and a gloo group of torch.distributed carries the harness's control
messages (the PyTorch plugin's `TorchComm`, as the JAX plugin does), so the lock-step measurement
and the per-rank record are the same as in PyTorch runs. The training itself is pure TensorFlow:
every rank picks a free port, the ports are gathered over the control group into a `TF_CONFIG`
cluster of workers, and each process builds a MultiWorkerMirroredStrategy over it (one replica
per process: the rank's GPU, or its CPU). Variables are mirrored, each rank trains on its own
share of the global batch, and the optimizer all-reduces the gradients (ring collectives on
CPUs, NCCL on GPUs) before every update.

The session calls `strategy()` and `rank()`; outside a distributed run they are TensorFlow's
default strategy and 0.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from typing import Any

from tbd import topology

_strategy = None  # the run's MultiWorkerMirroredStrategy, once `setup` made it
_rank = 0
_implementation = ""


def strategy():
    import tensorflow as tf

    return _strategy if _strategy is not None else tf.distribute.get_strategy()


def rank() -> int:
    return _rank


def describe() -> str:
    """How the step is distributed, for the run's record."""
    if _strategy is None:
        return "none (one process, TensorFlow's default strategy)"
    return f"MultiWorkerMirroredStrategy ({_strategy.num_replicas_in_sync} workers, {_implementation} all-reduce of the gradients)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def cluster_spec(addresses: list[str], index: int) -> dict[str, Any]:
    """The TF_CONFIG of worker `index` in a cluster of `addresses` (host:port each)."""
    return {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}}


def setup(config):
    """Join torchrun's group for control messages, then build the strategy over all ranks."""
    global _strategy, _rank, _implementation
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    timeout = topology.collective_timeout_s(config)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
    # The harness's control channel: the PyTorch plugin's gloo group over torchrun's rendezvous.
    from tbd.frameworks.torch.distributed import TorchComm

    comm = TorchComm(dist.group.WORLD, "tf", local_rank, int(os.environ.get("GROUP_RANK", 0)))
    host = "127.0.0.1" if config.nnodes == 1 else socket.getfqdn()
    addresses = comm.all_gather(f"{host}:{_free_port()}")
    os.environ["TF_CONFIG"] = json.dumps(cluster_spec(addresses, comm.rank))

    import tensorflow as tf

    if config.device == "cuda":
        gpus = tf.config.list_physical_devices("GPU")
        if local_rank >= len(gpus):
            from tbd.errors import UsageError

            raise UsageError(f"local rank {local_rank} has no GPU ({len(gpus)} visible to TensorFlow); use --nproc-per-node {len(gpus)} or fewer")
        tf.config.set_visible_devices(gpus[local_rank], "GPU")  # one GPU, one replica per process
        implementation = tf.distribute.experimental.CommunicationImplementation.NCCL
    else:
        tf.config.set_visible_devices([], "GPU")
        implementation = tf.distribute.experimental.CommunicationImplementation.RING
    options = tf.distribute.experimental.CommunicationOptions(implementation=implementation, timeout_seconds=timeout)
    _strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    _rank = comm.rank
    _implementation = "NCCL" if config.device == "cuda" else "ring (gRPC)"
    return comm
