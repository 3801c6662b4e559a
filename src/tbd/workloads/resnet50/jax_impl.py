"""ResNet-50 in JAX: Flax linen, torchvision's architecture, SGD with momentum and weight decay.

`tbd run resnet50 --framework jax --flavor tiny` exercises it. The model matches torchvision's
`resnet50` layer for layer (v1.5: stride in the 3x3 convolution; convolutions without bias;
BatchNorm eps 1e-5 and momentum 0.1 in torch's convention, 0.9 in Flax's; a biased final Dense),
so the 1000-class model has the same 25,557,032 parameters. Images are NHWC, Flax's native
layout. Initialization follows torchvision too (Kaiming-normal fan-out for convolutions, BN
scale 1 and bias 0, torch's uniform default for the classifier), cut from two random draws:
a jitted or eager `model.init` would compile random-number kernels for every parameter shape,
which takes longer on a CPU than compiling the whole train step.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tbd.frameworks.base import BuildContext
from tbd.frameworks.jax.session import JaxTask, compute_dtype
from tbd.workloads.image_jax import classification_task, from_host, torch_sgd  # noqa: F401  (torch_sgd: the optimizer; from_host: --data batches)
from tbd.workloads.resnet50.spec import EXPANSION, STAGES


def batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
    """torch.nn.BatchNorm2d's numbers: momentum 0.1 (Flax counts the other way: 0.9), eps 1e-5.
    Statistics are fp32 even in bf16. Flax's one-pass variance E[x^2] - E[x]^2 (its default,
    one read of the activations) is kept for speed; it loses precision only where a channel's
    variance is tiny against its mean, e.g. batch 2 of 32 px images (1x1 maps in the last
    stage), where training diverges in either framework. torch's running variance is the
    unbiased one, Flax's the biased one: that only affects evaluation, never the timed step."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=dtype, param_dtype=jnp.float32, name=name)


class Bottleneck(nn.Module):
    width: int
    stride: int
    project: bool  # 1x1 projection shortcut (first block of a stage)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = lambda f, k, s, p, name: nn.Conv(  # noqa: E731
            f, (k, k), (s, s), padding=((p, p), (p, p)), use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, name=name,
        )
        norm = lambda name: batch_norm(train, self.dtype, name)  # noqa: E731
        out = nn.relu(norm("bn1")(conv(self.width, 1, 1, 0, "conv1")(x)))
        # v1.5: the stride sits in the 3x3 convolution (explicit padding 1, as torch, not 'SAME').
        out = nn.relu(norm("bn2")(conv(self.width, 3, self.stride, 1, "conv2")(out)))
        out = norm("bn3")(conv(self.width * EXPANSION, 1, 1, 0, "conv3")(out))
        if self.project:
            x = norm("downsample_bn")(conv(self.width * EXPANSION, 1, self.stride, 0, "downsample_conv")(x))
        return nn.relu(out + x)


class ResNet50(nn.Module):
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = x.astype(self.dtype)
        x = nn.Conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                    dtype=self.dtype, param_dtype=jnp.float32, name="conv1")(x)
        x = batch_norm(train, self.dtype, "bn1")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))  # pads with -inf, as torch
        for stage, (blocks, width) in enumerate(STAGES):
            for block in range(blocks):
                stride = 2 if (block == 0 and stage > 0) else 1
                x = Bottleneck(width, stride, project=block == 0, dtype=self.dtype,
                               name=f"layer{stage + 1}_{block}")(x, train)
        x = jnp.mean(x, axis=(1, 2))  # global average pool over H, W
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x)
        return x.astype(jnp.float32)  # the loss in fp32 whatever the compute dtype


def torch_style_init(model: ResNet50, image_size: int, rng: jax.Array) -> tuple[Any, Any]:
    """(params, batch_stats) as NumPy float32 arrays, initialized as torchvision's resnet50.

    All random numbers come from two draws (standard normal for the convolutions, uniform for
    the classifier) that are then cut into the parameters: two small programs to compile."""
    sample = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), sample)
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    is_conv = lambda path, x: path[-1].key == "kernel" and len(x.shape) == 4  # noqa: E731
    is_fc = lambda path, x: path[-2].key == "fc"  # noqa: E731

    def pieces(draw, key, sizes):  # one draw of sum(sizes) numbers, cut into consecutive pieces
        return iter(np.split(np.asarray(draw(key, (sum(sizes),), jnp.float32)), np.cumsum(sizes)[:-1]))

    k_conv, k_fc = jax.random.split(rng)
    normal = pieces(jax.random.normal, k_conv, [x.size for path, x in leaves if is_conv(path, x)])
    uniform = pieces(functools.partial(jax.random.uniform, minval=-1.0, maxval=1.0), k_fc,
                     [x.size for path, x in leaves if is_fc(path, x)])

    def leaf(path, x):  # called in the same (flattening) order as the draws were cut above
        if is_conv(path, x):
            # kaiming_normal_(mode="fan_out", nonlinearity="relu"); Flax kernels are (kh, kw, in, out).
            return next(normal).reshape(x.shape) * np.float32(math.sqrt(2.0 / (x.shape[0] * x.shape[1] * x.shape[3])))
        if is_fc(path, x):
            # nn.Linear's default: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            return next(uniform).reshape(x.shape) * np.float32(1.0 / math.sqrt(STAGES[-1][1] * EXPANSION))
        # BatchNorm: scale and running variance 1, bias and running mean 0.
        return (np.ones if path[-1].key in ("scale", "var") else np.zeros)(x.shape, np.float32)

    variables = jax.tree_util.tree_map_with_path(leaf, shapes)
    return variables["params"], variables["batch_stats"]


def build(ctx: BuildContext) -> JaxTask:
    hp = ctx.hparams
    size, classes, n = hp["image_size"], hp["num_classes"], ctx.batch_size
    model = ResNet50(num_classes=classes, dtype=compute_dtype(ctx.precision))

    def init(rng):
        return torch_style_init(model, size, rng)

    return classification_task(model, init, hp, n)
