"""Faster R-CNN with a ResNet-FPN backbone on Pascal-VOC-shaped data (21 classes).

`tbd run faster_rcnn --flavor tiny` exercises it on the CPU;
`tbd run faster_rcnn --device cuda --flavor paper` is the paper's setting (ResNet-101 FPN,
images about 500x375 resized to a short side of 600, at most 1000, batch 2).

The FLOP count walks the network layer by layer (Ren et al., "Faster R-CNN", 2015, with the FPN
of Lin et al., 2017, in torchvision's layout) and keeps, per layer, whether its backward needs
the gradient w.r.t. the input and w.r.t. the weights: the first ResNet stages are frozen (as when
fine-tuning from ImageNet weights, torchvision's default `trainable_layers=3`), so they cost a
forward only, and the first trainable layers after them skip the input gradient.

Settings to know when comparing: the paper flavor samples 128 RoIs per image for the box head
(the paper's setting); torchvision's default, used for the Faster R-CNN line of
REFERENCE_NUMBERS.md, is 512 (hparam `rois_per_image=512` reproduces it). The paper flavor's
learning rate is torchvision's detection references' (0.02 for 16 images) scaled to its 2 images,
0.0025, and warms up linearly over 1000 steps as theirs does (hparams `warmup_steps`,
`warmup_factor`): the freshly initialized heads diverge at full lr in the first steps. At 0.01,
four times that, a run on an H200 (2026-12-01) lost its loss to NaN some 600 steps in, where
the warm-up had it at about 0.006. Throughput is in images;
images differ in size, so the FLOPs per image are those of the nominal image (`nominal_size`).

In JAX (`jax_impl.py`) the model is the same (parameter counts equal), with static shapes: each
batch is padded to the `pad_multiple` grid (at most four shapes a flavor, each compiled once),
and torchvision's variable-length lists are fixed counts with validity masks (2000 proposals per
image, exactly `rois_per_image` RoI slots, a mask over the anchors for the RPN's sample), random
subsets drawn by `top_k` of uniform keys instead of `randperm`. NMS keeps exactly what
torchvision's greedy NMS keeps (tiled, a fixed-point loop per tile). What differs: the order in
which the 7x7x256 RoI features are flattened into the box head (NHWC, torch CHW) and the random
streams; sizes that would shrink an image are refused (the raw image must fit the padded canvas).
Implementations: PyTorch's is torchvision's own model, its frozen BatchNorm layers swapped for
one multiply-add each with the affine computed once (`torch_impl.FrozenAffine`) and its anchors
kept per padded shape (`torch_impl.CachedAnchors`). TensorFlow has no maintained equivalent
with torchvision's design, so `tf_impl.py` writes it with TensorFlow ops, RoIAlign included
(`tf.image.crop_and_resize` at roi_align's sample points, averaged; it reads zeros past the
image border where roi_align clamps); the parameters are torchvision's.
"""

from __future__ import annotations

from tbd.workloads.base import Flavor, WorkloadSpec

FLAVORS = {
    "tiny": Flavor(
        "tiny",
        batch_size=2,
        description="ResNet-18 FPN, images about 128x88 resized to a short side of 96, 5 classes, 32 RoIs/image, SGD lr 1e-3 after a 10-step warm-up",
        hparams=dict(
            backbone="resnet18", trainable_layers=3, num_classes=5, image_long=128, image_short=(80, 96),
            min_size=96, max_size=160, rois_per_image=32, max_boxes=5, pad_multiple=32,
            lr=1e-3, warmup_steps=10, warmup_factor=1e-3, momentum=0.9, weight_decay=1e-4,
        ),
    ),
    "paper": Flavor(
        "paper",
        batch_size=2,
        description="ResNet-101 FPN, VOC-like images (long side 500, short 281-375) resized to min 600 / max 1000, "
                    "21 classes, 128 RoIs/image, SGD lr 0.0025 (linear warm-up from 2.5e-6 over 1000 steps) momentum 0.9 wd 1e-4",
        hparams=dict(
            backbone="resnet101", trainable_layers=3, num_classes=21, image_long=500, image_short=(281, 375),
            min_size=600, max_size=1000, rois_per_image=128, max_boxes=5, pad_multiple=128,
            lr=0.0025, warmup_steps=1000, warmup_factor=1e-3, momentum=0.9, weight_decay=1e-4,
        ),
    ),
}

# (block kind, blocks per stage) of torchvision's ResNets; "basic" = two 3x3, "bottleneck" = 1x1-3x3-1x1.
RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}
FPN_CHANNELS = 256
NUM_ANCHORS = 3  # aspect ratios 0.5, 1, 2 at one size per FPN level
ROI_POOL = 7  # MultiScaleRoIAlign output is 7x7
BOX_HIDDEN = 1024  # TwoMLPHead representation size


def _half(size: int) -> int:
    """Output size of every stride-2 layer here (3x3 pad 1, 7x7 pad 3, 1x1 pad 0, max pool 3 pad 1)."""
    return (size - 1) // 2 + 1


def resize_scale(flavor, height: int, width: int) -> float:
    """The model's transform's scale: the short side to min_size, unless the long side would pass max_size."""
    return min(flavor["min_size"] / min(height, width), flavor["max_size"] / max(height, width))


def resized_size(flavor: Flavor, height: int, width: int) -> tuple[int, int]:
    """(H, W) the model's transform feeds the backbone: scale to min_size / max_size, pad to 32."""
    scale = resize_scale(flavor, height, width)
    h, w = int(height * scale), int(width * scale)
    return -(-h // 32) * 32, -(-w // 32) * 32


def largest_image_short(hp) -> int:
    """The short side (within the flavor's range) whose image the transform makes largest: the one
    that reaches min_size just as the long side reaches max_size (300 in the paper flavor: 600 x
    1000, padded to 640 x 1024, the largest of the padded shapes)."""
    lo, hi = hp["image_short"]
    return max(range(lo, hi + 1), key=lambda short: short * resize_scale(hp, short, hp["image_long"]) ** 2)


class _Count:
    """Sum of training FLOPs: forward, plus one forward's worth for each gradient backward needs."""

    def __init__(self) -> None:
        self.forward = 0.0
        self.train = 0.0

    def add(self, flops: float, input_grad: bool, weight_grad: bool) -> None:
        self.forward += flops
        self.train += flops * (1 + input_grad + weight_grad)


def _conv(count: _Count, c_in: int, c_out: int, k: int, h: int, w: int, input_grad: bool = True, weight_grad: bool = True) -> None:
    count.add(2.0 * c_in * c_out * k * k * h * w, input_grad, weight_grad)


def _backbone(count: _Count, name: str, trainable_layers: int, h: int, w: int) -> list[tuple[int, int, int, bool]]:
    """ResNet body; returns (channels, H, W, needs grad) of the outputs of stages 1-4."""
    kind, blocks = RESNETS[name]
    expansion = 4 if kind == "bottleneck" else 1
    stem_trains = trainable_layers == 5  # torchvision trains layer4, layer3, ... conv1 in that order
    h, w = _half(h), _half(w)
    _conv(count, 3, 64, 7, h, w, input_grad=False, weight_grad=stem_trains)
    h, w = _half(h), _half(w)  # max pool
    c, grad = 64, stem_trains  # does the running activation require grad?
    outputs = []
    for stage, n in enumerate(blocks, start=1):
        width = 64 * 2 ** (stage - 1)
        train = stage > 4 - trainable_layers
        for b in range(n):
            stride = 2 if (b == 0 and stage > 1) else 1
            ho, wo = (_half(h), _half(w)) if stride == 2 else (h, w)
            ig = grad  # the block input needs a gradient only if something before it trains
            if kind == "basic":
                _conv(count, c, width, 3, ho, wo, ig, train)
                _conv(count, width, width, 3, ho, wo, ig or train, train)
            else:
                _conv(count, c, width, 1, h, w, ig, train)
                _conv(count, width, width, 3, ho, wo, ig or train, train)
                _conv(count, width, width * expansion, 1, ho, wo, ig or train, train)
            if stride == 2 or c != width * expansion:
                _conv(count, c, width * expansion, 1, ho, wo, ig, train)
            c, h, w, grad = width * expansion, ho, wo, grad or train
        outputs.append((c, h, w, grad))
    return outputs


def count_step(flavor: Flavor, height: int, width: int, rois: int) -> _Count:
    """FLOPs of one image of padded size (height, width) with `rois` sampled RoIs."""
    count = _Count()
    stages = _backbone(count, flavor["backbone"], flavor["trainable_layers"], height, width)
    levels = []
    for c, h, w, grad in stages:  # FPN: lateral 1x1 and output 3x3 per level
        _conv(count, c, FPN_CHANNELS, 1, h, w, input_grad=grad)
        _conv(count, FPN_CHANNELS, FPN_CHANNELS, 3, h, w)
        levels.append((h, w))
    levels.append((_half(levels[-1][0]), _half(levels[-1][1])))  # "pool" level: stride-2 max pool
    for h, w in levels:  # RPN head, shared across levels
        _conv(count, FPN_CHANNELS, FPN_CHANNELS, 3, h, w)
        _conv(count, FPN_CHANNELS, NUM_ANCHORS, 1, h, w)
        _conv(count, FPN_CHANNELS, 4 * NUM_ANCHORS, 1, h, w)
    classes = flavor["num_classes"]
    for n_in, n_out in ((FPN_CHANNELS * ROI_POOL * ROI_POOL, BOX_HIDDEN), (BOX_HIDDEN, BOX_HIDDEN), (BOX_HIDDEN, classes), (BOX_HIDDEN, 4 * classes)):
        count.add(2.0 * rois * n_in * n_out, True, True)
    return count


def nominal_size(flavor: Flavor) -> tuple[int, int]:
    """The padded backbone input of a typical image: landscape, long side x the largest short side."""
    return resized_size(flavor, max(flavor["image_short"]), flavor["image_long"])


def train_flops_per_sample(flavor: Flavor) -> float:
    h, w = nominal_size(flavor)
    return count_step(flavor, h, w, flavor["rois_per_image"]).train


SPEC = WorkloadSpec(
    name="faster_rcnn",
    domain="object detection",
    dataset="Pascal VOC 2007 (synthetic images of VOC sizes and aspect ratios, 1-5 boxes each)",
    description="torchvision Faster R-CNN with a ResNet-FPN backbone (frozen BN, stages 2-4 trained), SGD",
    # Images vary in size, but each batch is padded to a multiple of `pad_multiple` (128 in the
    # paper flavor): with one orientation per batch that leaves at most four padded shapes
    # (640 x 896/1024 and its transpose), as detection training's aspect-ratio grouping does, so
    # kernels are tuned once per shape instead of every step.
    variable_shapes=False,
    # `tbd memory --max-batch` sizes batches with every image at the largest size the flavor
    # draws: a batch of drawn sizes pads to 640 x 896 or 640 x 1024 by chance, and a fit through
    # both shapes is not a line (per-sample peaks 797-931 MiB on an H200, fp32, 2026-11-30).
    longest_inputs=lambda hp: {"image_short": (largest_image_short(hp),) * 2},
    host_work_per_sample=True,
    flavors=FLAVORS,
    sample_unit="images",
    unit="images",
    batch_unit="images",
    units_per_sample=lambda flavor: 1.0,
    train_flops_per_sample=train_flops_per_sample,
    flops_note="backbone, FPN, RPN head and box head (2 FLOPs per multiply-add; backward = 1x forward per "
               "gradient it needs: input and weights, 2x in all for trained layers, none for frozen ones) at the "
               "nominal image (long side x largest short side, resized and padded to 32) and the flavor's RoIs "
               "per image; left out: RoIAlign, NMS, anchor matching, box coding, BN and elementwise ops "
               "(torchvision ops FlopCounterMode cannot count, and a few % of the total)",
    convolutional=True,
    data_format="voc",
)
