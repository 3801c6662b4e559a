"""What the MXNet image classifiers share (resnet50, inception_v3): synthetic N(0, 1) images in
NCHW with uniform labels (as the PyTorch side draws them), softmax cross-entropy, and SGD with
momentum and weight decay on every parameter (torch.optim.SGD's rule: for a constant learning
rate MXNet's `mom = m * mom - lr * (g + wd * w)` is the same update)."""

from __future__ import annotations

import math

import mxnet as mx
from mxnet import gluon

from tbd.frameworks.base import BuildContext
from tbd.frameworks.mxnet.session import MxnetTask


def classifier(num_classes: int, fan_in: int) -> gluon.nn.Dense:
    """The final layer with nn.Linear's initial weights, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (its
    bias starts at zero here)."""
    return gluon.nn.Dense(num_classes, in_units=fan_in, weight_initializer=mx.init.Uniform(1.0 / math.sqrt(fan_in)), prefix="classifier_")


def classification_task(net: gluon.HybridBlock, ctx: BuildContext) -> MxnetTask:
    """`net` trained on synthetic batches. Weights without an initializer of their own (the
    convolutions) start as torchvision's: Kaiming-normal, fan-out, ReLU gain; BatchNorm brings
    its own (scale 1, shift 0, running statistics 0 and 1)."""
    hp = ctx.hparams
    size, classes, n = hp["image_size"], hp["num_classes"], ctx.batch_size
    cross_entropy = gluon.loss.SoftmaxCrossEntropyLoss()

    def make_batch(rng, context):
        images = rng.standard_normal((n, 3, size, size), dtype="float32")  # (B, 3, H, W)
        labels = rng.integers(0, classes, n).astype("float32")
        return (mx.nd.array(images, ctx=context), mx.nd.array(labels, ctx=context))

    def loss(model, batch):
        images, labels = batch
        return cross_entropy(model(images), labels)

    return MxnetTask(net=net, initializer=mx.init.MSRAPrelu(factor_type="out", slope=0.0), loss=loss, make_batch=make_batch,
                     optimizer="sgd", optimizer_params={"learning_rate": hp["lr"], "momentum": hp["momentum"], "wd": hp["weight_decay"]})
