"""GPT (GPT-2 architecture) in TensorFlow: Keras 3 layers, AdamW, one tf.function step.

`tbd run gpt --framework tf --flavor tiny` exercises it. Layer for layer the torch
implementation (same parameter count: 124,475,904 for the paper flavor): learned positions,
pre-LayerNorm blocks (eps 1e-5), one QKV product per layer, causal attention through
`keras.ops.dot_product_attention(is_causal=True)` (on the TensorFlow backend: matmul, mask and
softmax, which XLA fuses under --compile), GELU in its tanh form, biases, the output projection
tied to the token embedding. GPT-2 initialization: N(0, 0.02), residual projections N(0,
0.02 / sqrt(2 x layers)), zero biases. AdamW as torch's: decoupled decay lr x wd x p on matrices
and embeddings only, eps 1e-8. No dropout (every flavor's is 0).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tbd.errors import UsageError
from tbd.frameworks.base import BuildContext
from tbd.frameworks.tf.session import TfTask, to_device
from tbd.workloads.gpt.spec import GPT2_VOCAB
from tbd.workloads.text_host import zipf_tokens


def _normal(std: float):
    return keras.initializers.RandomNormal(0.0, std)


class Block(layers.Layer):
    """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d: int, heads: int, n_layers: int, **kwargs):
        super().__init__(**kwargs)
        self.d, self.heads = d, heads
        residual = _normal(0.02 / math.sqrt(2 * n_layers))
        dense = lambda n, init, name: layers.Dense(n, kernel_initializer=init, bias_initializer="zeros", name=name)  # noqa: E731
        self.ln1 = layers.LayerNormalization(epsilon=1e-5, name="ln1")
        self.ln2 = layers.LayerNormalization(epsilon=1e-5, name="ln2")
        self.qkv = dense(3 * d, _normal(0.02), "qkv")
        self.proj = dense(d, residual, "proj")
        self.fc = dense(4 * d, _normal(0.02), "fc")
        self.fc_proj = dense(d, residual, "fc_proj")

    def call(self, x):
        B, T = tf.shape(x)[0], tf.shape(x)[1]
        qkv = tf.reshape(self.qkv(self.ln1(x)), (B, T, 3, self.heads, self.d // self.heads))  # (B, T, 3, nh, hs)
        y = keras.ops.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], is_causal=True)
        x = x + self.proj(tf.reshape(y, (B, T, self.d)))
        return x + self.fc_proj(keras.activations.gelu(self.fc(self.ln2(x)), approximate=True))


class GPT(keras.Model):
    def __init__(self, hp, **kwargs):
        super().__init__(**kwargs)
        d = hp["d_model"]
        self.wte = layers.Embedding(hp["vocab"], d, embeddings_initializer=_normal(0.02), name="wte")
        self.wpe = layers.Embedding(hp["block_size"], d, embeddings_initializer=_normal(0.02), name="wpe")
        self.blocks = [Block(d, hp["heads"], hp["layers"], name=f"block{i}") for i in range(hp["layers"])]
        self.ln_f = layers.LayerNormalization(epsilon=1e-5, name="ln_f")

    def call(self, idx):
        T = tf.shape(idx)[1]
        x = self.wte(idx) + self.wpe(tf.range(T))[None]  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        # (B, T, V): the output layer tied to the embedding, in the compute dtype
        return tf.matmul(x, tf.cast(self.wte.embeddings, x.dtype), transpose_b=True)


def adamw(hp, model: keras.Model) -> keras.optimizers.AdamW:
    """torch.optim.AdamW: decoupled decay lr x wd x p, on matrices and embeddings only."""
    b1, b2 = hp["betas"]
    opt = keras.optimizers.AdamW(learning_rate=hp["lr"], beta_1=b1, beta_2=b2, epsilon=1e-8, weight_decay=hp["weight_decay"])
    opt.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
    return opt


def from_host(host: dict, ctx: BuildContext, device: str):
    """Windows of T + 1 tokens from a token file: inputs the first T, targets the last T (int32)."""
    stream = host["tokens"].astype(np.int32)
    return to_device((stream[:, :-1], stream[:, 1:]), device)


def build(ctx: BuildContext) -> TfTask:
    hp = dict(ctx.hparams)
    if hp.get("dropout", 0.0):
        raise UsageError("the TensorFlow gpt has no dropout; use --hparam dropout=0 (every flavor's default)")
    n, T = ctx.batch_size, hp["block_size"]
    model = GPT(hp, name="gpt")
    model(np.zeros((1, 1), np.int32))  # creates the variables

    def make_batch(rng: np.random.Generator):
        # One stream of T + 1 ids per row (inputs its first T, targets its last T), below
        # GPT-2's 50,257 as in torch: the padding rows of the embedding never occur.
        stream = zipf_tokens(rng, (n, T + 1), min(hp["vocab"], GPT2_VOCAB), first=0)
        return (stream[:, :-1], stream[:, 1:])

    def loss(model, batch, training):
        idx, targets = batch
        logits = tf.cast(model(idx, training=training), tf.float32)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))

    return TfTask(model=model, optimizer=adamw(hp, model), make_batch=make_batch, loss=loss)
