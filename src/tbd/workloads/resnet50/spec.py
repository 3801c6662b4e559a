"""ResNet-50 (v1.5: stride in the 3x3 convolution, as torchvision) on ImageNet-shaped data.

`tbd run resnet50 --flavor tiny` exercises it on the CPU.
"""

from __future__ import annotations

from tbd.workloads.base import TRAIN_FLOPS_PER_FORWARD, Flavor, WorkloadSpec, conv2d_flops, linear_flops

# (blocks, bottleneck width) of the four stages; the output width is 4x the bottleneck width.
STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))
EXPANSION = 4

FLAVORS = {
    "tiny": Flavor(
        "tiny",
        batch_size=4,
        description="32 px, 10 classes, SGD lr 0.003: a CPU step in well under a second",
        # Not the paper's lr 0.1: on 4 images of 32 px (1x1 maps in the last stage, so BatchNorm
        # normalizes 4 values a channel) it sends the loss to 30-280 and back in every framework,
        # and whether 30 steps on one batch end low depends on the seed. At 0.003 a fixed batch
        # is learned in about 10 steps in torch, JAX, TensorFlow and MXNet (seeds 0-3, 2026-12-01).
        hparams=dict(image_size=32, num_classes=10, lr=0.003, momentum=0.9, weight_decay=1e-4),
        min_batch=2,
        min_batch_note="BatchNorm needs more than one value per channel, and the tiny images leave a 1x1 map at the last stage",
    ),
    "paper": Flavor(
        "paper",
        batch_size=32,
        description="224 px, 1000 classes, SGD lr 0.1, momentum 0.9, weight decay 1e-4",
        hparams=dict(image_size=224, num_classes=1000, lr=0.1, momentum=0.9, weight_decay=1e-4),
    ),
}


def _out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def forward_flops(image_size: int, num_classes: int) -> float:
    """Multiply-adds x2 of convolutions and the classifier; BN, ReLU and pooling are left out
    (under 1% of the total), as FLOP counters for ResNets usually do."""
    s = _out(image_size, 7, 2, 3)
    flops = conv2d_flops(3, 64, 7, s, s)
    s = _out(s, 3, 2, 1)  # max pool
    c_in = 64
    for stage, (blocks, width) in enumerate(STAGES):
        for block in range(blocks):
            stride = 2 if (block == 0 and stage > 0) else 1
            s_out = _out(s, 3, stride, 1)
            flops += conv2d_flops(c_in, width, 1, s, s)
            flops += conv2d_flops(width, width, 3, s_out, s_out)
            flops += conv2d_flops(width, width * EXPANSION, 1, s_out, s_out)
            if block == 0:  # projection shortcut
                flops += conv2d_flops(c_in, width * EXPANSION, 1, s_out, s_out)
            c_in, s = width * EXPANSION, s_out
    return flops + linear_flops(c_in, num_classes)


def train_flops_per_sample(flavor: Flavor) -> float:
    return TRAIN_FLOPS_PER_FORWARD * forward_flops(flavor["image_size"], flavor["num_classes"])


SPEC = WorkloadSpec(
    name="resnet50",
    domain="image classification",
    dataset="ImageNet-1k (synthetic images and labels of the same shapes)",
    description="ResNet-50 v1.5, SGD with momentum, cross-entropy",
    flavors=FLAVORS,
    sample_unit="images",
    unit="images",
    batch_unit="images",
    units_per_sample=lambda flavor: 1.0,
    train_flops_per_sample=train_flops_per_sample,
    flops_note="convolutions and classifier, 2 FLOPs per multiply-add, backward = 2x forward",
    convolutional=True,
    data_format="imagenet",
)
