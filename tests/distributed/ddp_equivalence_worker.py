"""Train a tiny MLP a few steps through the PyTorch adapter and save its parameters.

Under torchrun (2 ranks) the adapter wraps the model in DDP or FSDP2 and each rank trains on its
half of a fixed global batch; run directly (one process) it trains on the whole batch. Used by
tests/distributed/test_distributed.py: `python -m torch.distributed.run --nproc-per-node 2
tests/distributed/ddp_equivalence_worker.py OUT_DIR ddp fsdp2`.

The model has no BatchNorm on purpose: BN normalizes with statistics of the rank's own shard, so
a BN model under DDP is not the same function as one process on the whole batch, and
parameters would differ for a reason that has nothing to do with gradient averaging.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

from tbd.config import RunConfig
from tbd import topology
from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch import distributed as torch_distributed
from tbd.frameworks.torch import session as torch_adapter
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.resnet50.spec import SPEC  # any spec with 1 unit per sample serves

GLOBAL_BATCH, STEPS = 8, 5


class Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(2))
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        x = torch.tanh(self.inp(x))
        for block in self.blocks:
            x = x + block(x)
        return self.out(x)


class TinyImpl:
    @staticmethod
    def build(ctx) -> TorchTask:
        def make_batch(gen, device):
            # One fixed global batch; each rank takes its contiguous share (rank order).
            g = torch.Generator().manual_seed(123)
            x, y = torch.randn(GLOBAL_BATCH, 6, generator=g), torch.randint(0, 3, (GLOBAL_BATCH,), generator=g)
            lo = torch_distributed.rank() * ctx.batch_size
            return (x[lo : lo + ctx.batch_size].to(device), y[lo : lo + ctx.batch_size].to(device))

        return TorchTask(
            model=Blocks(),
            make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.2, momentum=0.9),
            make_batch=make_batch,
            loss=lambda model, batch: F.cross_entropy(model(batch[0]), batch[1]),
        )


def train(config) -> dict:
    torch.manual_seed(config.seed)  # open_session seeds the same way: this is the model it builds
    initial = {k: v.detach().clone() for k, v in Blocks().state_dict().items()}
    ctx = BuildContext.for_run(config, topology.local_share(config.batch_size, torch_distributed.world_size()))
    session = torch_adapter.open_session(config, SPEC, TinyImpl, ctx)
    session.run_steps(STEPS)
    model = session.model.module if hasattr(session.model, "module") else session.model
    # FSDP2 holds a shard of each parameter per rank; full_tensor() gathers the whole one.
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()}
    return {"state": state, "initial": initial, "wrapped": type(session.model).__name__, "loss": session.last_loss()}


def main(out_dir: str, parallels: list[str]) -> None:
    """Train once per parallel mode ('ddp', 'fsdp2'; in one process the model stays unwrapped)
    and save <out_dir>/<mode>.pt from rank 0."""
    comm = None
    for parallel in parallels:
        config = RunConfig(workload="resnet50", device="cpu", batch_size=GLOBAL_BATCH, data_pool=1, parallel=parallel)
        if comm is None and "RANK" in os.environ:
            comm = torch_distributed.setup(config)
        result = train(config)
        if torch_distributed.rank() == 0:
            torch.save(result, os.path.join(out_dir, f"{parallel}.pt"))
    if comm is not None:
        comm.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
