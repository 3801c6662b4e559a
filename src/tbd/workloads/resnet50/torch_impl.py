"""ResNet-50 in PyTorch: torchvision's `resnet50`, SGD with momentum and weight decay."""

from __future__ import annotations

import torchvision

from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.image_torch import classification_task
from tbd.workloads.image_torch import from_host  # noqa: F401  (batches of a dataset on disk, --data)


def build(ctx: BuildContext) -> TorchTask:
    return classification_task(torchvision.models.resnet50(num_classes=ctx.hparams["num_classes"]), ctx)
