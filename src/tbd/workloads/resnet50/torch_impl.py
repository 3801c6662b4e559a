"""ResNet-50 in PyTorch: torchvision's `resnet50`, SGD with momentum and weight decay."""

from __future__ import annotations

import torchvision

from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.image_torch import classification_task


def build(ctx: BuildContext) -> TorchTask:
    return classification_task(torchvision.models.resnet50(num_classes=ctx.hparams["num_classes"]), ctx)
