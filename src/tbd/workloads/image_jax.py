"""What the JAX image classifiers share (resnet50, inception_v3): the SGD PyTorch trains them
with, the cross-entropy loss through BatchNorm's mutable statistics, and synthetic batches of
N(0, 1) images in NHWC with uniform labels (as the PyTorch side draws them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tbd.data.images import MEAN, STD
from tbd.frameworks.jax.session import JaxTask


def from_host(host: dict, ctx, device):
    """A loader's batch (uint8 images (B, S, S, 3), labels) on the device: images normalized
    with ImageNet's mean and std there (the transfer stays uint8), labels int32."""
    images = jax.device_put(host["images"], device)
    mean, std = (jnp.asarray(v, jnp.float32) * 255 for v in (MEAN, STD))
    return ((images.astype(jnp.float32) - mean) / std, jax.device_put(host["labels"].astype(np.int32), device))


def torch_sgd(lr: float, momentum: float, weight_decay: float) -> optax.GradientTransformation:
    """torch.optim.SGD: g + wd * p (all parameters) before the momentum buffer b = m * b + g,
    which starts at g on the first step exactly as optax's trace starting from zero."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=momentum))


def classification_task(model, init: Callable[[jax.Array], tuple[Any, Any]], hp: dict[str, Any], batch_size: int) -> JaxTask:
    """A JaxTask training `model` (a Flax module with BatchNorm, and dropout where it has it) on
    synthetic `image_size` images of `num_classes` classes, with PyTorch's SGD."""
    size, classes, n = hp["image_size"], hp["num_classes"], batch_size

    def loss(params, batch_stats, batch, rng, train=True):
        images, labels = batch
        variables = {"params": params, "batch_stats": batch_stats}
        if train:
            logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": rng})
            batch_stats = updates["batch_stats"]
        else:
            logits = model.apply(variables, images, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), batch_stats

    def make_batch(key, device):
        k_img, k_lab = jax.random.split(key)
        with jax.default_device(device):
            images = jax.random.normal(k_img, (n, size, size, 3), jnp.float32)  # (B, H, W, 3), N(0, 1) as torch's
            labels = jax.random.randint(k_lab, (n,), 0, classes, jnp.int32)
        return (images, labels)

    return JaxTask(init=init, loss=loss, optimizer=torch_sgd(hp["lr"], hp["momentum"], hp["weight_decay"]),
                   make_batch=make_batch, extra={"model": model})
