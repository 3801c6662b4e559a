"""The PyTorch training task shared by the image classifiers (resnet50, inception_v3):
synthetic ImageNet-shaped batches (or batches of a dataset on disk, `from_host`),
cross-entropy, SGD with momentum and weight decay."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tbd.data.images import MEAN, STD
from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask

_NORMALIZE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def from_host(host: dict, ctx: BuildContext, device: torch.device):
    """A loader's batch (uint8 or 0-255 float images, (B, S, S, 3)) as (images (B, 3, S, S)
    normalized with ImageNet's mean and std, labels), on the device; normalizing there keeps
    the bytes crossing to it uint8."""
    if device not in _NORMALIZE:
        _NORMALIZE[device] = tuple(torch.tensor(v, device=device).mul(255).view(1, 3, 1, 1) for v in (MEAN, STD))
    mean, std = _NORMALIZE[device]
    images = host["images"].to(device, non_blocking=True).permute(0, 3, 1, 2).float()  # NCHW view of NHWC memory
    return ((images - mean) / std, host["labels"].to(device, non_blocking=True))


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
