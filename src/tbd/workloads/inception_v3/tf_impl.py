"""Inception-v3 in TensorFlow: Keras 3 layers, torchvision's layout, PyTorch's SGD.

`tbd run inception_v3 --framework tf --flavor tiny` exercises it. Not
`keras.applications.InceptionV3` (its convolutions differ in scale handling and it has no
option for torchvision's layout); this is torchvision's `inception_v3` as the torch
implementation builds it, block for block (Conv2d_1a ... Mixed_7c, the same branches in the
same order): no auxiliary classifier, no input transform, dropout 0.5 before the classifier, so
the 1000-class model has the same 23,834,568 trainable parameters. Every convolution is
torchvision's BasicConv2d: without bias, symmetric zero padding, then BatchNorm (eps 0.001,
momentum 0.1 in torch's convention, 0.9 in Keras') and ReLU. The 3x3 average pools inside the
blocks count the zero padding (torch's default). Initialization is PyTorch's default (the torch
implementation passes init_weights=False): convolutions and the classifier U(+-1/sqrt(fan_in)),
BN scale 1 and shift 0. Images are NHWC, TensorFlow's native layout.
"""

from __future__ import annotations

import keras
from keras import layers

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.tf.session import TfTask
from tbd.workloads.common_tf import conv2d, dense
from tbd.workloads.image_tf import classification_task, from_host  # noqa: F401  (from_host: batches of a dataset on disk, --data)

# (name, kind, width) of the Mixed_* blocks, input to output (A: pool_features, C: channels_7x7).
BLOCKS = (("Mixed_5b", "A", 32), ("Mixed_5c", "A", 64), ("Mixed_5d", "A", 64), ("Mixed_6a", "B", 0),
          ("Mixed_6b", "C", 128), ("Mixed_6c", "C", 160), ("Mixed_6d", "C", 160), ("Mixed_6e", "C", 192),
          ("Mixed_7a", "D", 0), ("Mixed_7b", "E", 0), ("Mixed_7c", "E", 0))


def basic_conv(x, filters: int, kernel, name: str, stride: int = 1, padding=(0, 0)):
    """Conv (no bias) - BatchNorm (eps 1e-3) - ReLU, as torchvision's BasicConv2d."""
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    if padding != (0, 0):
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    x = conv2d(filters, kernel, x.shape[-1], stride=stride, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def avg_pool_3x3(x, name: str):  # stride 1, padding 1, zeros counted in the mean (torch's count_include_pad)
    return layers.AveragePooling2D(3, 1, name=name)(layers.ZeroPadding2D(1, name=f"{name}_pad")(x))


def max_pool_3x3_s2(x, name: str):
    return layers.MaxPooling2D(3, 2, name=name)(x)


def inception_block(x, kind: str, width: int, name: str):
    """One Mixed_* block: `kind` A-E as in torchvision (InceptionA ... InceptionE)."""
    conv = lambda y, f, k, n, **kw: basic_conv(y, f, k, f"{name}_{n}", **kw)  # noqa: E731
    cat = lambda parts, n="concat": layers.Concatenate(name=f"{name}_{n}")(parts)  # noqa: E731
    if kind == "A":  # 35x35: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1
        b1 = conv(x, 64, 1, "branch1x1")
        b5 = conv(conv(x, 48, 1, "branch5x5_1"), 64, 5, "branch5x5_2", padding=(2, 2))
        b3 = conv(x, 64, 1, "branch3x3dbl_1")
        b3 = conv(conv(b3, 96, 3, "branch3x3dbl_2", padding=(1, 1)), 96, 3, "branch3x3dbl_3", padding=(1, 1))
        bp = conv(avg_pool_3x3(x, f"{name}_avgpool"), width, 1, "branch_pool")
        return cat([b1, b5, b3, bp])
    if kind == "B":  # 35 -> 17: stride-2 3x3 | 1x1-3x3-stride-2 3x3 | max pool
        b3 = conv(x, 384, 3, "branch3x3", stride=2)
        bd = conv(conv(x, 64, 1, "branch3x3dbl_1"), 96, 3, "branch3x3dbl_2", padding=(1, 1))
        bd = conv(bd, 96, 3, "branch3x3dbl_3", stride=2)
        return cat([b3, bd, max_pool_3x3_s2(x, f"{name}_maxpool")])
    if kind == "C":  # 17x17, factorized 7x7: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1
        c7, k17, k71, p17, p71 = width, (1, 7), (7, 1), (0, 3), (3, 0)
        b1 = conv(x, 192, 1, "branch1x1")
        b7 = conv(x, c7, 1, "branch7x7_1")
        b7 = conv(conv(b7, c7, k17, "branch7x7_2", padding=p17), 192, k71, "branch7x7_3", padding=p71)
        bd = conv(x, c7, 1, "branch7x7dbl_1")
        bd = conv(bd, c7, k71, "branch7x7dbl_2", padding=p71)
        bd = conv(bd, c7, k17, "branch7x7dbl_3", padding=p17)
        bd = conv(bd, c7, k71, "branch7x7dbl_4", padding=p71)
        bd = conv(bd, 192, k17, "branch7x7dbl_5", padding=p17)
        bp = conv(avg_pool_3x3(x, f"{name}_avgpool"), 192, 1, "branch_pool")
        return cat([b1, b7, bd, bp])
    if kind == "D":  # 17 -> 8: 1x1-stride-2 3x3 | 1x1-1x7-7x1-stride-2 3x3 | max pool
        b3 = conv(conv(x, 192, 1, "branch3x3_1"), 320, 3, "branch3x3_2", stride=2)
        b7 = conv(x, 192, 1, "branch7x7x3_1")
        b7 = conv(conv(b7, 192, (1, 7), "branch7x7x3_2", padding=(0, 3)), 192, (7, 1), "branch7x7x3_3", padding=(3, 0))
        b7 = conv(b7, 192, 3, "branch7x7x3_4", stride=2)
        return cat([b3, b7, max_pool_3x3_s2(x, f"{name}_maxpool")])
    if kind == "E":  # 8x8, expanded: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | avgpool-1x1
        b1 = conv(x, 320, 1, "branch1x1")
        b3 = conv(x, 384, 1, "branch3x3_1")
        b3 = cat([conv(b3, 384, (1, 3), "branch3x3_2a", padding=(0, 1)), conv(b3, 384, (3, 1), "branch3x3_2b", padding=(1, 0))], "cat3x3")
        bd = conv(conv(x, 448, 1, "branch3x3dbl_1"), 384, 3, "branch3x3dbl_2", padding=(1, 1))
        bd = cat([conv(bd, 384, (1, 3), "branch3x3dbl_3a", padding=(0, 1)), conv(bd, 384, (3, 1), "branch3x3dbl_3b", padding=(1, 0))], "cat3x3dbl")
        bp = conv(avg_pool_3x3(x, f"{name}_avgpool"), 192, 1, "branch_pool")
        return cat([b1, b3, bd, bp])
    raise ValueError(f"unknown Inception block kind {kind!r}")


def inception_v3(image_size: int, num_classes: int) -> keras.Model:
    images = keras.Input((image_size, image_size, 3), name="images")
    x = basic_conv(images, 32, 3, "Conv2d_1a_3x3", stride=2)
    x = basic_conv(x, 32, 3, "Conv2d_2a_3x3")
    x = basic_conv(x, 64, 3, "Conv2d_2b_3x3", padding=(1, 1))
    x = max_pool_3x3_s2(x, "maxpool1")
    x = basic_conv(x, 80, 1, "Conv2d_3b_1x1")
    x = basic_conv(x, 192, 3, "Conv2d_4a_3x3")
    x = max_pool_3x3_s2(x, "maxpool2")
    for name, kind, width in BLOCKS:
        x = inception_block(x, kind, width, name)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)  # (B, 2048)
    x = layers.Dropout(0.5, name="dropout")(x)
    logits = dense(num_classes, x.shape[-1], name="fc")(x)
    return keras.Model(images, logits, name="inception_v3")


def build(ctx: BuildContext) -> TfTask:
    hp = ctx.hparams
    if hp["image_size"] < 75:
        raise UsageError(f"inception_v3 needs images of at least 75 px, got image_size={hp['image_size']}; use 75 or more")
    return classification_task(inception_v3(hp["image_size"], hp["num_classes"]), hp, ctx.batch_size)
