"""`timm:MODEL` in PyTorch: `timm.create_model(MODEL, pretrained=False)`, cross-entropy on
synthetic images of the model's default input size, AdamW; FLOPs counted by the session."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F

from tbd.errors import UsageError, unknown
from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask


def check(config) -> None:
    """The model exists in this timm (a tag such as `.augreg_in21k` is allowed); checked before a run."""
    name = config.resolved_hparams()["model"]
    if not timm.is_model(name):
        raise unknown("timm model", name, timm.list_models(), "list them with: python -c \"import timm; print(timm.list_models('resnet*'))\"")


def create(hp) -> torch.nn.Module:
    """The model with random weights; `image_size` is passed to models that fix it (ViTs), the
    others (convolutional networks) take any size."""
    kwargs = {"pretrained": False}
    if hp["num_classes"] is not None:
        kwargs["num_classes"] = hp["num_classes"]
    if hp["image_size"] is not None:
        try:
            return timm.create_model(hp["model"], img_size=hp["image_size"], **kwargs)
        except TypeError:
            pass
    return timm.create_model(hp["model"], **kwargs)


def build(ctx: BuildContext) -> TorchTask:
    hp = ctx.hparams
    model = create(hp)
    channels, height, width = model.pretrained_cfg.get("input_size", (3, 224, 224))
    if hp["image_size"] is not None:
        height = width = hp["image_size"]
    classes, n = model.num_classes, ctx.batch_size
    if not classes:
        raise UsageError(f"timm model {hp['model']} has no classifier head (num_classes 0); give hparams num_classes")
    device_type = "cuda" if ctx.device.startswith("cuda") else "cpu"

    def make_batch(gen: torch.Generator, device: torch.device):
        images = torch.randn(n, channels, height, width, generator=gen, device=device)  # (B, C, H, W)
        labels = torch.randint(0, classes, (n,), generator=gen, device=device)
        return (images, labels)

    def loss(model, batch):
        images, labels = batch
        return F.cross_entropy(model(images), labels)

    kind = {"fused": True} if device_type == "cuda" else {"foreach": True}
    return TorchTask(
        model=model,
        make_optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"], **kind),
        make_batch=make_batch,
        loss=loss,
        count_flops=True,
        extra={"input_size": (channels, height, width), "num_classes": classes},
    )
