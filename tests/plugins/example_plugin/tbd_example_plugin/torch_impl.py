"""tiny_mlp in PyTorch."""

import torch
import torch.nn.functional as F

from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask


def build(ctx: BuildContext) -> TorchTask:
    width, n = ctx.hparams["width"], ctx.batch_size

    def make_batch(gen: torch.Generator, device: torch.device):
        return (torch.randn(n, width, generator=gen, device=device), torch.randn(n, width, generator=gen, device=device))

    return TorchTask(
        model=torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, width)),
        make_optimizer=lambda model: torch.optim.Adam(model.parameters(), lr=ctx.hparams["lr"]),
        make_batch=make_batch,
        loss=lambda model, batch: F.mse_loss(model(batch[0]), batch[1]),
    )
