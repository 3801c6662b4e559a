"""ResNet-50 in TensorFlow: Keras 3 layers, torchvision's architecture, PyTorch's SGD.

`tbd run resnet50 --framework tf --flavor tiny` exercises it. Not `keras.applications.ResNet50`:
that one is v1 (stride in the first 1x1 convolution) with biased convolutions (25,636,712
parameters at 1000 classes). This one is torchvision's `resnet50` layer for layer: v1.5 (stride
in the 3x3 convolution), convolutions without bias, torch's symmetric padding (explicit
ZeroPadding2D, not 'same'), BatchNorm eps 1e-5 and momentum 0.1 in torch's convention (0.9 in
Keras'), a biased classifier: 25,557,032 trainable parameters, as torchvision's. The max pool
pads with zeros, not -inf as torch: its input is a ReLU's output (>= 0), so the result is the
same. Initialization as torchvision: Kaiming-normal fan-out convolutions, BN scale 1 and shift
0, torch's uniform default for the classifier. Images are NHWC, TensorFlow's native layout.
"""

from __future__ import annotations

import keras
from keras import layers

from tbd.frameworks.base import BuildContext
from tbd.frameworks.tf.session import TfTask
from tbd.workloads.common_tf import dense, kaiming_normal_fan_out
from tbd.workloads.image_tf import classification_task, from_host  # noqa: F401  (from_host: batches of a dataset on disk, --data)
from tbd.workloads.resnet50.spec import EXPANSION, STAGES


def conv_bn(x, filters: int, kernel: int, stride: int, pad: int, name: str, relu: bool = True):
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=False,
                      kernel_initializer=kaiming_normal_fan_out(), name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def bottleneck(x, width: int, stride: int, project: bool, name: str):
    out = conv_bn(x, width, 1, 1, 0, f"{name}_1")
    out = conv_bn(out, width, 3, stride, 1, f"{name}_2")  # v1.5: the stride sits in the 3x3 convolution
    out = conv_bn(out, width * EXPANSION, 1, 1, 0, f"{name}_3", relu=False)
    shortcut = conv_bn(x, width * EXPANSION, 1, stride, 0, f"{name}_downsample", relu=False) if project else x
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([out, shortcut]))


def resnet50(image_size: int, num_classes: int) -> keras.Model:
    images = keras.Input((image_size, image_size, 3), name="images")
    x = conv_bn(images, 64, 7, 2, 3, "conv1")
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, 2, name="pool1")(x)
    for stage, (blocks, width) in enumerate(STAGES):
        for block in range(blocks):
            stride = 2 if (block == 0 and stage > 0) else 1
            x = bottleneck(x, width, stride, project=block == 0, name=f"layer{stage + 1}_{block}")
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    logits = dense(num_classes, STAGES[-1][1] * EXPANSION, name="fc")(x)
    return keras.Model(images, logits, name="resnet50")


def build(ctx: BuildContext) -> TfTask:
    hp = ctx.hparams
    return classification_task(resnet50(hp["image_size"], hp["num_classes"]), hp, ctx.batch_size)
