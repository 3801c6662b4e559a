"""The TensorFlow training task shared by the image classifiers (resnet50, inception_v3):
synthetic ImageNet-shaped batches (N(0, 1) images in NHWC, uniform labels, as the PyTorch side
draws them) or batches of a dataset on disk (`from_host`), cross-entropy in fp32, and PyTorch's
SGD: momentum, and weight decay added to the gradient of every variable (Keras' SGD
`weight_decay` is the decoupled kind)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tbd.data.images import MEAN, STD
from tbd.frameworks.tf.session import TfTask


def from_host(host: dict, ctx, device: str):
    """A loader's batch (uint8 images (B, S, S, 3), labels) on the device as the synthetic one:
    float32 NHWC images normalized with ImageNet's mean and std there (the copy stays uint8),
    int32 labels."""
    with tf.device(device):
        images = tf.cast(tf.convert_to_tensor(host["images"]), tf.float32)
        mean, std = (tf.constant(np.asarray(v, np.float32) * 255) for v in (MEAN, STD))
        return ((images - mean) / std, tf.convert_to_tensor(host["labels"].astype(np.int32)))


def torch_sgd(lr: float, momentum: float) -> keras.optimizers.SGD:
    """torch.optim.SGD's momentum: Keras keeps v = m v - lr g, p += v, which is torch's b = m b + g,
    p -= lr b with v = -lr b (the same updates at a constant learning rate)."""
    return keras.optimizers.SGD(learning_rate=lr, momentum=momentum)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy over integer labels, in fp32 whatever the compute dtype."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32)))


def classification_task(model: keras.Model, hp, batch_size: int) -> TfTask:
    size, classes, n = hp["image_size"], hp["num_classes"], batch_size

    def make_batch(rng: np.random.Generator):
        images = rng.standard_normal((n, size, size, 3), dtype=np.float32)  # (B, H, W, 3)
        labels = rng.integers(0, classes, (n,), dtype=np.int32)
        return (images, labels)

    def loss(model, batch, training):
        images, labels = batch
        return cross_entropy(model(images, training=training), labels)

    return TfTask(model=model, optimizer=torch_sgd(hp["lr"], hp["momentum"]), make_batch=make_batch, loss=loss,
                  coupled_weight_decay=hp["weight_decay"])
