"""GPT (GPT-2 architecture) in JAX: Flax linen, optax AdamW, fused attention.

`tbd run gpt --framework jax --flavor tiny` exercises it on the CPU; `tbd run gpt --framework jax
--device cuda --flavor paper --precision bf16` is the 124M setting of `bench/frameworks_compare_gpu.py`.

The model is the torch implementation's layer for layer (same parameter count): learned
positions, pre-LayerNorm blocks (eps 1e-5, as torch), one QKV product per layer, GELU in its
tanh form, biases, the output projection tied to the token embedding, GPT-2 initialization
(N(0, 0.02), residual projections scaled by 1/sqrt(2 x layers), zero biases). AdamW with
torch's defaults (eps 1e-8) and decay on matrices and embeddings only.

Attention is `jax.nn.dot_product_attention(is_causal=True)`: on a GPU in bf16 its cuDNN
(flash) kernel, elsewhere XLA's own (scores over all keys, masked); the JAX option `attention`
(auto, cudnn, xla) forces one. bf16: activations and matrix products in bf16, parameters and
AdamW state in fp32, the logits upcast to fp32 for the cross-entropy (as torch's autocast).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.jax.session import JaxTask, compute_dtype
from tbd.workloads.common_jax import host_generator, torch_like_init, zipf_tokens
from tbd.workloads.gpt.spec import GPT2_VOCAB

ATTENTION = ("auto", "cudnn", "xla")


def attention_implementation(option: str, device: str, precision: str) -> str | None:
    """`implementation` for jax.nn.dot_product_attention: cuDNN needs a GPU and 16-bit inputs."""
    if option not in ATTENTION:
        raise UsageError(f"unknown attention '{option}'; valid: {', '.join(ATTENTION)} (--option attention=...)")
    if option == "auto":
        return "cudnn" if device.startswith("cuda") and precision == "bf16" else "xla"
    if option == "cudnn" and not (device.startswith("cuda") and precision == "bf16"):
        raise UsageError("attention=cudnn needs --device cuda --precision bf16; use --option attention=xla")
    return option


class Block(nn.Module):
    d: int
    heads: int
    attention: str | None
    dtype: Any

    @nn.compact
    def __call__(self, x):
        B, T, C = x.shape
        dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32, name=name)  # noqa: E731
        norm = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32, name=name)  # noqa: E731
        qkv = dense(3 * C, "qkv")(norm("ln1")(x)).reshape(B, T, 3, self.heads, C // self.heads)  # (B, T, 3, nh, hs)
        y = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], is_causal=True, implementation=self.attention)
        x = x + dense(C, "proj")(y.reshape(B, T, C))
        return x + dense(C, "fc_proj")(nn.gelu(dense(4 * C, "fc")(norm("ln2")(x)), approximate=True))


class GPT(nn.Module):
    hp: dict
    attention: str | None = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, idx):
        hp = self.hp
        T = idx.shape[1]
        wte = self.param("wte", nn.initializers.normal(0.02), (hp["vocab"], hp["d_model"]), jnp.float32)
        wpe = self.param("wpe", nn.initializers.normal(0.02), (hp["block_size"], hp["d_model"]), jnp.float32)
        x = (wte[idx] + wpe[:T]).astype(self.dtype)  # (B, T, C)
        for i in range(hp["layers"]):
            x = Block(hp["d_model"], hp["heads"], self.attention, self.dtype, name=f"block{i}")(x)
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32, name="ln_f")(x)
        return x @ wte.astype(self.dtype).T  # (B, T, V): the output layer tied to the embedding


def gpt2_rule(layers: int):
    residual = 0.02 / math.sqrt(2 * layers)

    def rule(names, shape):
        if names[-1] == "bias":
            return "zeros", 0.0
        if names[-1] == "scale":  # LayerNorm
            return "ones", 1.0
        if names[-2:-1] in (("proj",), ("fc_proj",)):
            return "normal", residual
        return "normal", 0.02

    return rule


def adamw(hp) -> optax.GradientTransformation:
    """torch.optim.AdamW: decoupled decay lr x wd x p, on matrices and embeddings only."""
    b1, b2 = hp["betas"]
    decay = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.adamw(hp["lr"], b1=b1, b2=b2, eps=1e-8, weight_decay=hp["weight_decay"], mask=decay)


def from_host(host: dict, ctx: BuildContext, device):
    """Windows of T + 1 tokens from a token file: inputs the first T, targets the last T (int32)."""
    stream = host["tokens"].astype("int32")
    return jax.device_put((stream[:, :-1], stream[:, 1:]), device)


def build(ctx: BuildContext) -> JaxTask:
    hp = dict(ctx.hparams)
    if hp.get("dropout", 0.0):
        raise UsageError("the JAX gpt has no dropout; use --hparam dropout=0 (every flavor's default)")
    n, T = ctx.batch_size, hp["block_size"]
    model = GPT(hp, attention_implementation(ctx.options.get("attention", "auto"), ctx.device, ctx.precision), compute_dtype(ctx.precision))

    def init(rng):
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, T), jnp.int32))
        return torch_like_init(shapes["params"], gpt2_rule(hp["layers"]), rng), {}

    def loss(params, model_state, batch, rng, train=True):
        idx, targets = batch
        logits = model.apply({"params": params}, idx).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(), model_state

    def make_batch(key, device):
        # One stream of T + 1 ids per row (inputs its first T, targets its last T), below
        # GPT-2's 50,257 as in torch: the padding rows of the embedding never occur.
        stream = zipf_tokens(host_generator(key), (n, T + 1), min(hp["vocab"], GPT2_VOCAB), first=0)
        return jax.device_put((stream[:, :-1], stream[:, 1:]), device)

    return JaxTask(init=init, loss=loss, optimizer=adamw(hp), make_batch=make_batch, extra={"model": model})
