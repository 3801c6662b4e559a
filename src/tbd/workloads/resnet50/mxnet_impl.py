"""ResNet-50 in MXNet Gluon, written to torchvision's architecture (v1.5).

Gluon's model zoo `resnet50_v1` is the original v1: its stride sits in the first 1x1
convolution of a block and its 1x1 convolutions carry biases (25,575,912 trainable parameters
for 1000 classes). This definition is torchvision's `resnet50` layer for layer instead: the
stride in the 3x3 convolution, convolutions without bias, BatchNorm eps 1e-5 and momentum 0.1
in torch's convention (0.9 in Gluon's), so the 1000-class model has the same 25,557,032
parameters and the same FLOPs as the spec counts.
"""

from __future__ import annotations

from mxnet.gluon import HybridBlock, nn

from tbd.frameworks.base import BuildContext
from tbd.frameworks.mxnet.session import MxnetTask
from tbd.workloads.image_mxnet import classification_task, classifier
from tbd.workloads.resnet50.spec import EXPANSION, STAGES


def conv_bn(out: nn.HybridSequential, channels: int, kernel: int, stride: int, padding: int, relu: bool) -> None:
    out.add(nn.Conv2D(channels, kernel, strides=stride, padding=padding, use_bias=False))
    out.add(nn.BatchNorm(momentum=0.9, epsilon=1e-5))
    if relu:
        out.add(nn.Activation("relu"))


class Bottleneck(HybridBlock):
    def __init__(self, width: int, stride: int, project: bool, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            conv_bn(self.body, width, 1, 1, 0, relu=True)
            conv_bn(self.body, width, 3, stride, 1, relu=True)  # v1.5: the stride is here
            conv_bn(self.body, width * EXPANSION, 1, 1, 0, relu=False)
            self.downsample = None
            if project:  # 1x1 projection shortcut (first block of a stage)
                self.downsample = nn.HybridSequential(prefix="downsample_")
                conv_bn(self.downsample, width * EXPANSION, 1, stride, 0, relu=False)

    def hybrid_forward(self, F, x):
        shortcut = self.downsample(x) if self.downsample is not None else x
        return F.Activation(self.body(x) + shortcut, act_type="relu")


class ResNet50(HybridBlock):
    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            conv_bn(self.features, 64, 7, 2, 3, relu=True)
            self.features.add(nn.MaxPool2D(pool_size=3, strides=2, padding=1))
            for stage, (blocks, width) in enumerate(STAGES):
                for block in range(blocks):
                    stride = 2 if (block == 0 and stage > 0) else 1
                    self.features.add(Bottleneck(width, stride, project=block == 0, prefix=f"layer{stage + 1}_{block}_"))
            self.features.add(nn.GlobalAvgPool2D())
            self.classifier = classifier(num_classes, fan_in=STAGES[-1][1] * EXPANSION)

    def hybrid_forward(self, F, x):
        return self.classifier(self.features(x))


def build(ctx: BuildContext) -> MxnetTask:
    net = ResNet50(ctx.hparams["num_classes"], prefix="resnet50_")
    return classification_task(net, ctx)
