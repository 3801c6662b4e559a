"""Inception-v3 in PyTorch: torchvision's `inception_v3` without the auxiliary head, SGD.

`tbd run inception_v3 --flavor tiny` exercises it. The model is torchvision's own, built exactly
as bench/reference_inception.py builds it, so the two measure the same network; the step is
the adapter's plain one (forward, cross-entropy, backward, SGD), with nothing added.
"""

from __future__ import annotations

import torch
import torchvision

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.image_torch import classification_task
from tbd.workloads.image_torch import from_host  # noqa: F401  (batches of a dataset on disk, --data)


def make_model(num_classes: int) -> torch.nn.Module:
    # aux_logits=False: the reference benchmarks train without the auxiliary classifier, and the
    # forward then returns plain logits. init_weights=False keeps PyTorch's default layer init:
    # torchvision's truncated-normal init takes seconds on a CPU for 24M weights and changes
    # nothing about step time. Nothing is downloaded.
    return torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=num_classes)


def build(ctx: BuildContext) -> TorchTask:
    size = ctx.hparams["image_size"]
    if size < 75:
        raise UsageError(f"inception_v3 needs images of at least 75 px, got image_size={size}; use 75 or more")
    return classification_task(make_model(ctx.hparams["num_classes"]), ctx)
