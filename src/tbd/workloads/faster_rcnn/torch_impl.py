"""Faster R-CNN in PyTorch: torchvision's `FasterRCNN` on a `resnet_fpn_backbone`, SGD.

`tbd run faster_rcnn --flavor tiny` exercises it. The model is torchvision's own, configured as
in REFERENCE_NUMBERS.md (frozen BatchNorm, stages 2-4 trained, the model's transform resizes and
pads each batch), with the flavor's RoIs per image. The loss is the sum of the model's four
losses (RPN objectness and box regression, classifier and box regression of the box head).

Frozen BatchNorm normally holds ImageNet statistics; with no weights to download, its statistics
are instead set from one forward pass of random images (each layer normalizes what reaches it),
which keeps activations at the scale a pretrained backbone gives. Without it, a ResNet-101 with
identity BatchNorm produces features around 1e4 and the first SGD steps diverge. Calibrated,
each frozen BatchNorm becomes one multiply-add with its affine computed once (`FrozenAffine`),
where torchvision's recomputes it at every forward, and the anchors are kept per padded shape
(`CachedAnchors`): a training step at the paper size dispatches 1,412 ops instead of
torchvision's 1,978 (views left out; counted on the CPU, second step).
"""

from __future__ import annotations

import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.faster_rcnn.spec import RESNETS


@torch.no_grad()
def calibrate_frozen_bn(model: FasterRCNN, generator: torch.Generator, size: int = 128) -> None:
    """Set each FrozenBatchNorm2d's running mean and variance to those of its own input, for
    random images normalized as the model's transform normalizes them."""

    def set_stats(module, args):
        x = args[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    body = model.backbone.body
    hooks = [m.register_forward_pre_hook(set_stats) for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    try:
        images = torch.stack([model.transform.normalize(img) for img in torch.rand(2, 3, size, size, generator=generator)])
        body(images)  # pre-hooks run in forward order, so each layer sees calibrated inputs
    finally:
        for h in hooks:
            h.remove()


class FrozenAffine(torch.nn.Module):
    """A calibrated FrozenBatchNorm2d with its affine precomputed. torchvision's recomputes scale
    and shift from its four buffers at every forward: seven kernels a layer where one multiply-add
    is the work, some 600 extra launches a ResNet-101 forward, in a step whose pace the host's
    launches set on a GPU. The buffers never change, so the result is the same up to rounding."""

    def __init__(self, bn: FrozenBatchNorm2d):
        super().__init__()
        scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).clone())
        self.register_buffer("shift", (bn.bias - bn.running_mean * scale).reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


def precompute_frozen_bn(model: torch.nn.Module) -> int:
    """Swap each FrozenBatchNorm2d of `model` for its FrozenAffine (after calibrate_frozen_bn);
    how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FrozenBatchNorm2d):
                setattr(parent, name, FrozenAffine(child))
                swapped += 1
    return swapped


class CachedAnchors(torch.nn.Module):
    """torchvision's AnchorGenerator with its anchors kept per padded batch shape: they depend on
    the padded image size and the feature maps' sizes alone, and the padding grid leaves a handful
    of shapes, where the generator rebuilds them from aranges and grids at every step (some 60 ops)."""

    def __init__(self, generator: torch.nn.Module):
        super().__init__()
        self.generator = generator
        self.anchors: dict[tuple, torch.Tensor] = {}

    def forward(self, image_list, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        first = feature_maps[0]
        key = (tuple(image_list.tensors.shape[-2:]), tuple(tuple(f.shape[-2:]) for f in feature_maps), first.dtype, first.device)
        if key not in self.anchors:
            self.anchors[key] = self.generator(image_list, feature_maps)[0]  # every image of a batch has the same anchors
        return [self.anchors[key]] * len(image_list.image_sizes)


def make_model(hp: dict, seed: int = 0) -> FasterRCNN:
    if hp["backbone"] not in RESNETS:
        raise UsageError(f"faster_rcnn backbone '{hp['backbone']}' is not one of {', '.join(RESNETS)}; pick one of them")
    # weights=None: nothing is downloaded. Frozen BN and trainable_layers as torchvision's default.
    backbone = resnet_fpn_backbone(backbone_name=hp["backbone"], weights=None, trainable_layers=hp["trainable_layers"])
    model = FasterRCNN(
        backbone, num_classes=hp["num_classes"], min_size=hp["min_size"], max_size=hp["max_size"],
        box_batch_size_per_image=hp["rois_per_image"],
    )
    # Pad each batch to a coarse grid: a handful of padded shapes instead of one per image size.
    model.transform.size_divisible = hp.get("pad_multiple", 32)
    calibrate_frozen_bn(model, torch.Generator().manual_seed(seed))
    return model


def make_images(gen: torch.Generator, device: torch.device, hp: dict, n: int):
    """VOC-like images with their boxes: long side `image_long`, short side drawn from the
    `image_short` range; one orientation per batch, as VOC training batches are grouped by aspect
    ratio (so padding to the batch's largest image stays small); 1 to max_boxes boxes per image."""
    lo, hi = hp["image_short"]
    landscape = bool(torch.rand((), generator=gen, device=device) < 0.7)  # most VOC images are landscape
    shorts = torch.randint(lo, hi + 1, (n,), generator=gen, device=device).tolist()
    images, targets = [], []
    for short in shorts:
        h, w = (short, hp["image_long"]) if landscape else (hp["image_long"], short)
        images.append(torch.rand(3, h, w, generator=gen, device=device))  # (3, H, W) in [0, 1]
        k = int(torch.randint(1, hp["max_boxes"] + 1, (), generator=gen, device=device))
        # Box sides 10-90% of the image's, placed inside it: x1 < x2 <= W, y1 < y2 <= H.
        frac = 0.1 + 0.8 * torch.rand(k, 2, generator=gen, device=device)
        size = frac * torch.tensor([w, h], device=device, dtype=torch.float32)
        corner = torch.rand(k, 2, generator=gen, device=device) * (torch.tensor([w, h], device=device) - size)
        boxes = torch.cat([corner, corner + size], dim=1)  # (k, 4) as x1, y1, x2, y2
        labels = torch.randint(1, hp["num_classes"], (k,), generator=gen, device=device)  # 0 is background
        targets.append({"boxes": boxes, "labels": labels})
    return images, targets


def from_host(host: dict, ctx: BuildContext, device: torch.device):
    """A loader's VOC batch (uint8 HWC images at their own sizes, boxes, labels) as the
    synthetic batches are: (3, H, W) images in [0, 1] and target dicts, on the device. The
    model's transform resizes and pads them, as it does the synthetic ones."""
    images = [img.to(device, non_blocking=True).permute(2, 0, 1).float().div_(255).contiguous() for img in host["images"]]
    targets = [{"boxes": b.to(device, non_blocking=True), "labels": lab.to(device, non_blocking=True)}
               for b, lab in zip(host["boxes"], host["labels"])]
    return (images, targets)


def build(ctx: BuildContext) -> TorchTask:
    hp = ctx.hparams
    n = ctx.batch_size

    def make_batch(gen: torch.Generator, device: torch.device):
        return make_images(gen, device, hp, n)

    def make_optimizer(model):
        # Frozen stages have no gradients; leaving them out is what torchvision's references do.
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"], foreach=True)
        if hp["warmup_steps"] > 0:
            # Linear warm-up, as torchvision's detection references: freshly initialized heads on
            # top of large RoI feature vectors diverge at full lr in the first steps. Stepped by a
            # post-step hook, so the adapter's plain step (and its GradScaler) stays as it is;
            # it changes a Python float, no device work.
            warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=hp["warmup_factor"], total_iters=hp["warmup_steps"])
            opt.register_step_post_hook(lambda *_: warmup.step())
        return opt

    def loss(model, batch):
        images, targets = batch
        losses = model(images, targets)  # training mode: a dict of the four losses
        return sum(losses.values())

    # torchvision's model as a user builds it (bench/faster_rcnn_gpu.py's plain loop takes it so),
    # with the frozen BatchNorm's affine computed once instead of at every forward, and the
    # anchors once per padded shape.
    model = make_model(hp, ctx.seed)
    precompute_frozen_bn(model)
    model.rpn.anchor_generator = CachedAnchors(model.rpn.anchor_generator)
    return TorchTask(model=model, make_optimizer=make_optimizer, make_batch=make_batch, loss=loss)
