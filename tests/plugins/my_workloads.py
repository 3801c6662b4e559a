"""A workload in one file, given by path: `tbd run tests/plugins/my_workloads.py:TinyMLP`.

The object form of a plugin: a `spec` and one `build_<framework>(ctx)` per framework.
"""

import torch
import torch.nn.functional as F

from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.base import Flavor, WorkloadSpec


class TinyMLP:
    spec = WorkloadSpec(
        name="tiny_mlp_file",
        domain="regression",
        dataset="random vectors and targets",
        description="two-layer perceptron, mean squared error, Adam",
        flavors={"tiny": Flavor("tiny", 16, "width 32, batch 16", {"width": 32, "lr": 1e-2})},
        sample_unit="vectors",
        unit="vectors",
        units_per_sample=lambda flavor: 1.0,
        train_flops_per_sample=lambda flavor: None,  # counted by the session (count_flops below)
    )

    @staticmethod
    def build_torch(ctx: BuildContext) -> TorchTask:
        width, n = ctx.hparams["width"], ctx.batch_size

        def make_batch(gen: torch.Generator, device: torch.device):
            return (torch.randn(n, width, generator=gen, device=device), torch.randn(n, width, generator=gen, device=device))

        return TorchTask(
            model=torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, width)),
            make_optimizer=lambda model: torch.optim.Adam(model.parameters(), lr=ctx.hparams["lr"]),
            make_batch=make_batch,
            loss=lambda model, batch: F.mse_loss(model(batch[0]), batch[1]),
            count_flops=True,
        )
