"""Inception-v3 (without the auxiliary classifier) on ImageNet-shaped data.

`tbd run inception_v3 --flavor tiny` exercises it on the CPU;
`tbd run inception_v3 --device cuda --flavor paper -b 256 --precision bf16 --channels-last` is
the setting compared with torchvision's own model in bench/reference_inception.py.

The FLOP count below walks the network of Szegedy et al., "Rethinking the Inception
Architecture" (2016), block by block, in the layout torchvision uses (Mixed_5b ... Mixed_7c).
"""

from __future__ import annotations

from tbd.workloads.base import TRAIN_FLOPS_PER_FORWARD, Flavor, WorkloadSpec, linear_flops

FLAVORS = {
    "tiny": Flavor(
        "tiny",
        batch_size=2,
        description="75 px (the smallest input Inception-v3 accepts), 10 classes: a CPU step well under 2 s",
        hparams=dict(image_size=75, num_classes=10, lr=0.1, momentum=0.9, weight_decay=1e-4),
        min_batch=2,
        min_batch_note="BatchNorm needs more than one value per channel, and the tiny images leave a 1x1 map at the last stage",
    ),
    "paper": Flavor(
        "paper",
        batch_size=32,
        description="299 px, 1000 classes, SGD lr 0.1, momentum 0.9, weight decay 1e-4 (as resnet50)",
        hparams=dict(image_size=299, num_classes=1000, lr=0.1, momentum=0.9, weight_decay=1e-4),
    ),
}


def _out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _conv(c_in: int, c_out: int, kh: int, kw: int, s: int) -> float:
    """Forward FLOPs of a convolution with a (kh, kw) kernel and an s x s output (2 per multiply-add)."""
    return 2.0 * c_in * c_out * kh * kw * s * s


def _block_a(c_in: int, pool_features: int, s: int) -> tuple[float, int]:
    """1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avgpool -> 1x1, all at the input size."""
    f = _conv(c_in, 64, 1, 1, s)
    f += _conv(c_in, 48, 1, 1, s) + _conv(48, 64, 5, 5, s)
    f += _conv(c_in, 64, 1, 1, s) + _conv(64, 96, 3, 3, s) + _conv(96, 96, 3, 3, s)
    f += _conv(c_in, pool_features, 1, 1, s)
    return f, 64 + 64 + 96 + pool_features


def _block_b(c_in: int, s: int) -> tuple[float, int, int]:
    """Grid reduction 35 -> 17: stride-2 3x3 | 1x1 -> 3x3 -> stride-2 3x3 | max pool."""
    s2 = _out(s, 3, 2)
    f = _conv(c_in, 384, 3, 3, s2)
    f += _conv(c_in, 64, 1, 1, s) + _conv(64, 96, 3, 3, s) + _conv(96, 96, 3, 3, s2)
    return f, 384 + 96 + c_in, s2


def _block_c(c_in: int, c7: int, s: int) -> tuple[float, int]:
    """Factorized 7x7 (1x7 and 7x1 convolutions) at the 17x17 grid."""
    f = _conv(c_in, 192, 1, 1, s)
    f += _conv(c_in, c7, 1, 1, s) + _conv(c7, c7, 1, 7, s) + _conv(c7, 192, 7, 1, s)
    f += _conv(c_in, c7, 1, 1, s) + 3 * _conv(c7, c7, 7, 1, s) + _conv(c7, 192, 1, 7, s)
    f += _conv(c_in, 192, 1, 1, s)
    return f, 768


def _block_d(c_in: int, s: int) -> tuple[float, int, int]:
    """Grid reduction 17 -> 8."""
    s2 = _out(s, 3, 2)
    f = _conv(c_in, 192, 1, 1, s) + _conv(192, 320, 3, 3, s2)
    f += _conv(c_in, 192, 1, 1, s) + _conv(192, 192, 1, 7, s) + _conv(192, 192, 7, 1, s) + _conv(192, 192, 3, 3, s2)
    return f, 320 + 192 + c_in, s2


def _block_e(c_in: int, s: int) -> tuple[float, int]:
    """Expanded filter bank at the 8x8 grid: 1x3 and 3x1 branches side by side."""
    f = _conv(c_in, 320, 1, 1, s)
    f += _conv(c_in, 384, 1, 1, s) + 2 * _conv(384, 384, 1, 3, s)
    f += _conv(c_in, 448, 1, 1, s) + _conv(448, 384, 3, 3, s) + 2 * _conv(384, 384, 1, 3, s)
    f += _conv(c_in, 192, 1, 1, s)
    return f, 320 + 768 + 768 + 192


def forward_flops(image_size: int, num_classes: int) -> float:
    """Convolutions and the classifier of one image; BN, ReLU and pooling are left out (well
    under 1%), as usual for CNN FLOP counts."""
    s = _out(image_size, 3, 2)  # Conv2d_1a_3x3, stride 2
    f = _conv(3, 32, 3, 3, s)
    s = _out(s, 3)
    f += _conv(32, 32, 3, 3, s)  # 2a
    f += _conv(32, 64, 3, 3, s)  # 2b, padded
    s = _out(s, 3, 2)  # max pool
    f += _conv(64, 80, 1, 1, s)  # 3b
    s = _out(s, 3)
    f += _conv(80, 192, 3, 3, s)  # 4a
    s = _out(s, 3, 2)  # max pool
    c = 192
    for pool_features in (32, 64, 64):  # Mixed_5b, 5c, 5d
        df, c = _block_a(c, pool_features, s)
        f += df
    df, c, s = _block_b(c, s)  # Mixed_6a
    f += df
    for c7 in (128, 160, 160, 192):  # Mixed_6b .. 6e
        df, c = _block_c(c, c7, s)
        f += df
    df, c, s = _block_d(c, s)  # Mixed_7a
    f += df
    for _ in range(2):  # Mixed_7b, 7c
        df, c = _block_e(c, s)
        f += df
    return f + linear_flops(c, num_classes)


def first_layer_flops(image_size: int) -> float:
    return _conv(3, 32, 3, 3, _out(image_size, 3, 2))


def train_flops_per_sample(flavor: Flavor) -> float:
    """Forward + backward (2x forward), except that the first convolution needs no gradient
    with respect to the input images, so its backward is 1x its forward."""
    size = flavor["image_size"]
    return TRAIN_FLOPS_PER_FORWARD * forward_flops(size, flavor["num_classes"]) - first_layer_flops(size)


SPEC = WorkloadSpec(
    name="inception_v3",
    domain="image classification",
    dataset="ImageNet-1k at 299x299 (synthetic images and labels of the same shapes)",
    description="Inception-v3 (torchvision layout, no auxiliary classifier), SGD with momentum, cross-entropy",
    flavors=FLAVORS,
    sample_unit="images",
    unit="images",
    batch_unit="images",
    units_per_sample=lambda flavor: 1.0,
    train_flops_per_sample=train_flops_per_sample,
    flops_note="convolutions and classifier, 2 FLOPs per multiply-add, backward = 2x forward "
               "(1x for the first convolution: no gradient w.r.t. the images); the auxiliary head is not built",
    convolutional=True,
    data_format="imagenet",
)
