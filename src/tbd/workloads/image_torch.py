"""The PyTorch training task shared by the image classifiers (resnet50, inception_v3):
synthetic ImageNet-shaped batches, cross-entropy, SGD with momentum and weight decay."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask


def classification_task(model: torch.nn.Module, ctx: BuildContext) -> TorchTask:
    hp = ctx.hparams
    size, classes, n = hp["image_size"], hp["num_classes"], ctx.batch_size

    def make_batch(gen: torch.Generator, device: torch.device):
        images = torch.randn(n, 3, size, size, generator=gen, device=device)  # (B, 3, H, W)
        labels = torch.randint(0, classes, (n,), generator=gen, device=device)
        return (images, labels)

    def make_optimizer(model):
        return torch.optim.SGD(
            model.parameters(), lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"], foreach=True,
        )

    def loss(model, batch):
        images, labels = batch
        return F.cross_entropy(model(images), labels)

    return TorchTask(model=model, make_optimizer=make_optimizer, make_batch=make_batch, loss=loss)
