"""TensorFlow helpers shared by the workloads' `tf_impl.py` files: PyTorch's default
initializers as Keras initializers, and a model holding several networks.

`tbd run gpt --framework tf --flavor tiny` exercises them. Keras' defaults (Glorot-uniform
kernels, zero biases) differ from PyTorch's; the TF workloads start from PyTorch's so that the
three frameworks train the same function from the same distribution of starting points.
"""

from __future__ import annotations

import math

import keras


def torch_uniform(fan_in: int) -> keras.initializers.Initializer:
    """nn.Linear / nn.Conv's default for weights and biases: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(max(1, fan_in))
    return keras.initializers.RandomUniform(-bound, bound)


def kaiming_normal_fan_out() -> keras.initializers.Initializer:
    """torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu") (torchvision's ResNet)."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def dense(units: int, fan_in: int, use_bias: bool = True, name: str | None = None, **kwargs) -> keras.layers.Dense:
    """A Dense layer initialized as torch's nn.Linear(fan_in, units)."""
    init = torch_uniform(fan_in)
    return keras.layers.Dense(units, use_bias=use_bias, kernel_initializer=init, bias_initializer=init, name=name, **kwargs)


def conv2d(filters: int, kernel: int | tuple[int, int], c_in: int, stride: int = 1, use_bias: bool = True,
           name: str | None = None, **kwargs) -> keras.layers.Conv2D:
    """A 'valid' Conv2D (NHWC) initialized as torch's nn.Conv2d(c_in, filters, kernel); padding
    is a separate ZeroPadding2D where torch pads symmetrically ('same' pads the bottom-right
    more than the top-left at stride 2)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    init = torch_uniform(c_in * kh * kw)
    return keras.layers.Conv2D(filters, (kh, kw), strides=stride, padding="valid", use_bias=use_bias,
                               kernel_initializer=init, bias_initializer=init, name=name, **kwargs)


def param_count(model) -> int:
    """Trainable parameters (what torch's `model.parameters()` counts; BN running statistics are
    non-trainable variables in Keras and buffers in torch)."""
    return int(sum(math.prod(v.shape) for v in model.trainable_variables))
