"""Inception-v3 in MXNet Gluon: the model zoo's blocks in torchvision's layout, no auxiliary head.

Gluon's `inception_v3` ends in an 8x8 average pool, which only fits 299 px images; here the
same blocks (the zoo's Mixed A-E builders, BatchNorm eps 1e-3 as torchvision) end in a global
average pool, identical at 299 px and usable at the tiny flavor's 75 px. Dropout 0.5 before the
classifier, as torchvision. The zoo's builders are private functions of mxnet 1.9.1, the only
version this plugin supports (its environment pins it).
"""

from __future__ import annotations

from mxnet.gluon import HybridBlock, nn
from mxnet.gluon.model_zoo.vision import inception as zoo

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.mxnet.session import MxnetTask
from tbd.workloads.image_mxnet import classification_task, classifier

FEATURES = 2048  # channels after Mixed_7c


class InceptionV3(HybridBlock):
    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(zoo._make_basic_conv(channels=32, kernel_size=3, strides=2))  # Conv2d_1a_3x3
            self.features.add(zoo._make_basic_conv(channels=32, kernel_size=3))
            self.features.add(zoo._make_basic_conv(channels=64, kernel_size=3, padding=1))
            self.features.add(nn.MaxPool2D(pool_size=3, strides=2))
            self.features.add(zoo._make_basic_conv(channels=80, kernel_size=1))
            self.features.add(zoo._make_basic_conv(channels=192, kernel_size=3))
            self.features.add(nn.MaxPool2D(pool_size=3, strides=2))
            for i, pool_features in enumerate((32, 64, 64)):  # Mixed_5b .. 5d
                self.features.add(zoo._make_A(pool_features, f"A{i + 1}_"))
            self.features.add(zoo._make_B("B_"))  # Mixed_6a
            for i, channels_7x7 in enumerate((128, 160, 160, 192)):  # Mixed_6b .. 6e
                self.features.add(zoo._make_C(channels_7x7, f"C{i + 1}_"))
            self.features.add(zoo._make_D("D_"))  # Mixed_7a
            self.features.add(zoo._make_E("E1_"), zoo._make_E("E2_"))  # Mixed_7b, 7c
            self.features.add(nn.GlobalAvgPool2D())
            self.features.add(nn.Dropout(0.5))
            self.classifier = classifier(num_classes, fan_in=FEATURES)

    def hybrid_forward(self, F, x):
        return self.classifier(self.features(x))


def build(ctx: BuildContext) -> MxnetTask:
    size = ctx.hparams["image_size"]
    if size < 75:
        raise UsageError(f"inception_v3 needs images of at least 75 px, got image_size={size}; use 75 or more")
    net = InceptionV3(ctx.hparams["num_classes"], prefix="inception3_")
    return classification_task(net, ctx)
