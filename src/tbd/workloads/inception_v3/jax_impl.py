"""Inception-v3 in JAX: Flax linen, torchvision's layout, SGD with momentum and weight decay.

`tbd run inception_v3 --framework jax --flavor tiny` exercises it on the CPU. The model is
torchvision's `inception_v3` as the torch implementation builds it, block for block (Conv2d_1a
... Mixed_7c, the same branches in the same order): no auxiliary classifier (the torch one
trains without it), no input transform, dropout 0.5 before the classifier, so the 1000-class
model has the same 23,834,568 parameters. Every convolution is torchvision's BasicConv2d:
without bias, then BatchNorm (eps 0.001, momentum 0.1 in torch's convention) and ReLU. The
3x3 average pools inside the blocks count the zero padding (torch's default). Initialization is
PyTorch's default (the torch implementation passes init_weights=False): convolutions and the
classifier U(+-1/sqrt(fan_in)), BN scale 1 and shift 0. Images are NHWC, Flax's native layout.
The optimizer is resnet50's (torch's SGD with momentum and weight decay on every parameter).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.jax.session import JaxTask, compute_dtype
from tbd.workloads.common_jax import torch_default_rule, torch_like_init
from tbd.workloads.image_jax import classification_task
from tbd.workloads.image_jax import from_host  # noqa: F401  (batches of a dataset on disk, --data)


class BasicConv(nn.Module):
    """Conv (no bias) - BatchNorm (eps 1e-3) - ReLU, as torchvision's BasicConv2d."""

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    train: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        (ph, pw), s = self.padding, self.stride
        x = nn.Conv(self.features, self.kernel, (s, s), padding=((ph, ph), (pw, pw)), use_bias=False,
                    dtype=self.dtype, param_dtype=jnp.float32, name="conv")(x)
        x = nn.BatchNorm(use_running_average=not self.train, momentum=0.9, epsilon=1e-3,
                         dtype=self.dtype, param_dtype=jnp.float32, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x):  # stride 1, padding 1, zeros counted in the mean (torch's count_include_pad)
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=True)


def _max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), (2, 2))


class InceptionBlock(nn.Module):
    """One Mixed_* block: `kind` A-E as in torchvision (InceptionA ... InceptionE)."""

    kind: str
    width: int = 0  # A: pool_features; C: channels_7x7
    train: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, train=self.train, dtype=self.dtype)
        k1, k3 = (1, 1), (3, 3)
        if self.kind == "A":  # 35x35: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1
            b1 = conv(64, k1, name="branch1x1")(x)
            b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(conv(48, k1, name="branch5x5_1")(x))
            b3 = conv(64, k1, name="branch3x3dbl_1")(x)
            b3 = conv(96, k3, padding=(1, 1), name="branch3x3dbl_3")(conv(96, k3, padding=(1, 1), name="branch3x3dbl_2")(b3))
            bp = conv(self.width, k1, name="branch_pool")(_avg_pool_3x3(x))
            return jnp.concatenate([b1, b5, b3, bp], axis=-1)
        if self.kind == "B":  # 35 -> 17: stride-2 3x3 | 1x1-3x3-stride-2 3x3 | max pool
            b3 = conv(384, k3, stride=2, name="branch3x3")(x)
            bd = conv(96, k3, padding=(1, 1), name="branch3x3dbl_2")(conv(64, k1, name="branch3x3dbl_1")(x))
            bd = conv(96, k3, stride=2, name="branch3x3dbl_3")(bd)
            return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)
        if self.kind == "C":  # 17x17, factorized 7x7: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1
            c7, k17, k71, p17, p71 = self.width, (1, 7), (7, 1), (0, 3), (3, 0)
            b1 = conv(192, k1, name="branch1x1")(x)
            b7 = conv(c7, k1, name="branch7x7_1")(x)
            b7 = conv(192, k71, padding=p71, name="branch7x7_3")(conv(c7, k17, padding=p17, name="branch7x7_2")(b7))
            bd = conv(c7, k1, name="branch7x7dbl_1")(x)
            bd = conv(c7, k71, padding=p71, name="branch7x7dbl_2")(bd)
            bd = conv(c7, k17, padding=p17, name="branch7x7dbl_3")(bd)
            bd = conv(c7, k71, padding=p71, name="branch7x7dbl_4")(bd)
            bd = conv(192, k17, padding=p17, name="branch7x7dbl_5")(bd)
            bp = conv(192, k1, name="branch_pool")(_avg_pool_3x3(x))
            return jnp.concatenate([b1, b7, bd, bp], axis=-1)
        if self.kind == "D":  # 17 -> 8: 1x1-stride-2 3x3 | 1x1-1x7-7x1-stride-2 3x3 | max pool
            b3 = conv(320, k3, stride=2, name="branch3x3_2")(conv(192, k1, name="branch3x3_1")(x))
            b7 = conv(192, k1, name="branch7x7x3_1")(x)
            b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7))
            b7 = conv(192, k3, stride=2, name="branch7x7x3_4")(b7)
            return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)
        if self.kind == "E":  # 8x8, expanded: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | avgpool-1x1
            b1 = conv(320, k1, name="branch1x1")(x)
            b3 = conv(384, k1, name="branch3x3_1")(x)
            b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                                  conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
            bd = conv(384, k3, padding=(1, 1), name="branch3x3dbl_2")(conv(448, k1, name="branch3x3dbl_1")(x))
            bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                                  conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
            bp = conv(192, k1, name="branch_pool")(_avg_pool_3x3(x))
            return jnp.concatenate([b1, b3, bd, bp], axis=-1)
        raise ValueError(f"unknown Inception block kind {self.kind!r}")


# (name, kind, width) of the Mixed_* blocks, input to output.
BLOCKS = (("Mixed_5b", "A", 32), ("Mixed_5c", "A", 64), ("Mixed_5d", "A", 64), ("Mixed_6a", "B", 0),
          ("Mixed_6b", "C", 128), ("Mixed_6c", "C", 160), ("Mixed_6d", "C", 160), ("Mixed_6e", "C", 192),
          ("Mixed_7a", "D", 0), ("Mixed_7b", "E", 0), ("Mixed_7c", "E", 0))


class InceptionV3(nn.Module):
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):  # (B, H, W, 3) -> (B, classes) fp32 logits
        conv = functools.partial(BasicConv, train=train, dtype=self.dtype)
        x = x.astype(self.dtype)
        x = conv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        for name, kind, width in BLOCKS:
            x = InceptionBlock(kind, width, train, self.dtype, name=name)(x)
        x = jnp.mean(x, axis=(1, 2))  # global average pool: (B, 2048)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x).astype(jnp.float32)


def build(ctx: BuildContext) -> JaxTask:
    hp = ctx.hparams
    size, classes, n = hp["image_size"], hp["num_classes"], ctx.batch_size
    if size < 75:
        raise UsageError(f"inception_v3 needs images of at least 75 px, got image_size={size}; use 75 or more")
    model = InceptionV3(num_classes=classes, dtype=compute_dtype(ctx.precision))

    def init(rng):
        sample = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), sample)
        # BatchNorm running statistics as torch starts them: mean 0, variance 1.
        stats = jax.tree_util.tree_map_with_path(
            lambda path, x: (np.ones if path[-1].key == "var" else np.zeros)(x.shape, np.float32), shapes["batch_stats"])
        return torch_like_init(shapes["params"], torch_default_rule(shapes["params"]), rng), stats

    return classification_task(model, init, hp, n)
