"""Transformer base in TensorFlow: Keras 3 layers, Adam with the paper's warm-up schedule.

`tbd run transformer --framework tf --flavor tiny` exercises it on the CPU.

Layer for layer the torch implementation (same parameter count): post-LayerNorm blocks (eps
1e-5), one QKV product for self-attention, Q and KV products for cross-attention, ReLU FFN,
sinusoidal positions, one embedding shared by source, target and the pre-softmax layer
(N(0, d^-0.5)), torch's default uniform initialization of the linear layers, dropout in the same
places (attention dropout on the probabilities, as torch's SDPA in training), label-smoothed
cross-entropy over the non-pad target words, Adam (0.9, 0.98, 1e-9) with lr = scale x d^-0.5 x
min(step^-0.5, step x warmup^-1.5). As with `padding_idx` in torch, the PAD row of the
embedding gets no gradient from the lookups.

Shapes: as in the JAX implementation, a batch is padded to a fixed set of shapes (source and
target to one length from `text_host.length_edges`, rows to a power of two with empty all-PAD
rows), so the step is traced (and under --compile XLA-compiled) for a handful of shapes, not
one per batch; padded rows and positions are masked out of attention and loss, and throughput
counts the real tokens only. Attention is written out (QK^T, mask, fp32 softmax, dropout, V):
TensorFlow has no fused attention kernel outside XLA.
"""

from __future__ import annotations

import math
import random

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tbd.frameworks.base import BuildContext
from tbd.frameworks.tf.session import TfTask, to_device
from tbd.workloads.common_tf import dense
from tbd.workloads.draws import shape_draws
from tbd.workloads.text_data import PAD, LengthModel, draw_bucketed_batch
from tbd.workloads.text_host import bucket, length_edges, pad_to_buckets, padded_pairs, pow2_at_least


def attend(q, k, v, mask, causal: bool, dropout: layers.Dropout | None, training: bool):
    """q (B, h, T, dh), k and v (B, h, S, dh), mask (B, 1, 1, S) of allowed keys -> (B, h, T, dh)."""
    scores = tf.cast(tf.matmul(q, k, transpose_b=True), tf.float32) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = tf.where(mask, scores, scores.dtype.min)
    if causal:
        T, S = tf.shape(scores)[-2], tf.shape(scores)[-1]
        scores = tf.where(tf.linalg.band_part(tf.ones((T, S), tf.bool), -1, 0), scores, scores.dtype.min)
    probs = tf.cast(tf.nn.softmax(scores, axis=-1), v.dtype)
    if dropout is not None and training:
        probs = dropout(probs, training=True)
    return tf.matmul(probs, v)


class Attention(layers.Layer):
    def __init__(self, d: int, heads: int, dropout: float, cross: bool, **kwargs):
        super().__init__(**kwargs)
        self.d, self.heads, self.cross = d, heads, cross
        if cross:  # queries from the decoder, keys and values from the encoder output
            self.q, self.kv = dense(d, d, name="q"), dense(2 * d, d, name="kv")
        else:
            self.qkv = dense(3 * d, d, name="qkv")
        self.out = dense(d, d, name="out")
        self.drop = layers.Dropout(dropout) if dropout > 0 else None

    def call(self, x, memory=None, key_mask=None, causal=False, training=False):
        B, T = tf.shape(x)[0], tf.shape(x)[1]
        if self.cross:
            q, (k, v) = self.q(x), tf.split(self.kv(memory), 2, axis=-1)
        else:
            q, k, v = tf.split(self.qkv(x), 3, axis=-1)
        split = lambda t: tf.transpose(tf.reshape(t, (B, -1, self.heads, self.d // self.heads)), (0, 2, 1, 3))  # noqa: E731  (B, h, T, dh)
        y = attend(split(q), split(k), split(v), key_mask, causal, self.drop, training)
        return self.out(tf.reshape(tf.transpose(y, (0, 2, 1, 3)), (B, T, self.d)))


class Layer(layers.Layer):
    """Post-LN block: x = LN(x + drop(sublayer(x))) for self-attention, [cross-attention], FFN."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float, decoder: bool, **kwargs):
        super().__init__(**kwargs)
        self.self_attn = Attention(d, heads, dropout, cross=False, name="self_attn")
        self.cross_attn = Attention(d, heads, dropout, cross=True, name="cross_attn") if decoder else None
        self.ffn_in, self.ffn_out = dense(ff, d, name="ffn_in"), dense(d, ff, name="ffn_out")
        self.norms = [layers.LayerNormalization(epsilon=1e-5, name=f"norm{i}") for i in range(3 if decoder else 2)]
        self.drop = layers.Dropout(dropout)

    def call(self, x, self_mask=None, memory=None, memory_mask=None, training=False):
        drop = lambda y: self.drop(y, training=training)  # noqa: E731
        x = self.norms[0](x + drop(self.self_attn(x, key_mask=self_mask, causal=self.cross_attn is not None, training=training)))
        if self.cross_attn is not None:
            x = self.norms[1](x + drop(self.cross_attn(x, memory, key_mask=memory_mask, training=training)))
        h = self.ffn_out(drop(tf.nn.relu(self.ffn_in(x))))
        return self.norms[-1](x + drop(h))


def sinusoids(length: int, d: int) -> np.ndarray:
    pos = np.arange(length, dtype=np.float32)[:, None]
    freq = np.exp(np.arange(0, d, 2, dtype=np.float32) * (-math.log(10000.0) / d))
    table = np.zeros((length, d), np.float32)
    table[:, 0::2], table[:, 1::2] = np.sin(pos * freq), np.cos(pos * freq)
    return table  # (length, d)


class Transformer(keras.Model):
    def __init__(self, hp, **kwargs):
        super().__init__(**kwargs)
        d = self.d = hp["d_model"]
        self.embed = self.add_weight(shape=(hp["vocab"], d), initializer=keras.initializers.RandomNormal(0.0, d**-0.5),
                                     name="embed", autocast=False)
        self.positions = tf.constant(sinusoids(hp["max_len"] + 1, d))
        self.encoder = [Layer(d, hp["heads"], hp["ff"], hp["dropout"], False, name=f"encoder{i}") for i in range(hp["enc_layers"])]
        self.decoder = [Layer(d, hp["heads"], hp["ff"], hp["dropout"], True, name=f"decoder{i}") for i in range(hp["dec_layers"])]
        self.drop = layers.Dropout(hp["dropout"])

    def _embed(self, ids, training):
        e = tf.gather(self.embed, ids)
        e = tf.where((ids == PAD)[..., None], tf.stop_gradient(e), e)  # padding_idx: no gradient from the lookups
        e = e * math.sqrt(self.d) + self.positions[None, : tf.shape(ids)[1]]
        return self.drop(tf.cast(e, self.compute_dtype), training=training)

    def call(self, src, tgt_in, training=False):
        """src (B, S), tgt_in (B, T) right-padded with PAD -> logits (B, T, V)."""
        key_mask = (src != PAD)[:, None, None, :]  # (B, 1, 1, S): True where a key may be attended
        x = self._embed(src, training)
        for layer in self.encoder:
            x = layer(x, self_mask=key_mask, training=training)
        y = self._embed(tgt_in, training)
        for layer in self.decoder:
            y = layer(y, memory=x, memory_mask=key_mask, training=training)
        return tf.matmul(y, tf.cast(self.embed, y.dtype), transpose_b=True)  # tied to the embedding


def smoothed_cross_entropy(logits, targets, smoothing: float):
    """torch's cross_entropy(ignore_index=PAD, label_smoothing=eps): (1 - eps) NLL + eps x mean
    over classes of -log p, averaged over the non-pad targets."""
    logp = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    nll = -tf.gather(logp, targets, batch_dims=2)
    per_token = (1.0 - smoothing) * nll - smoothing * tf.reduce_mean(logp, axis=-1)
    words = tf.cast(targets != PAD, tf.float32)
    return tf.reduce_sum(per_token * words) / tf.maximum(tf.reduce_sum(words), 1.0)


class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """lr = scale x d^-0.5 x min(step^-0.5, step x warmup^-1.5); update k (from 0) uses step k + 1,
    as LambdaLR in torch."""

    def __init__(self, scale: float, d_model: int, warmup: int):
        self.scale, self.d_model, self.warmup = scale, d_model, warmup

    def __call__(self, iteration):
        step = tf.cast(iteration, tf.float32) + 1.0
        return self.scale * self.d_model**-0.5 * tf.minimum(step**-0.5, step * self.warmup**-1.5)

    def get_config(self):
        return {"scale": self.scale, "d_model": self.d_model, "warmup": self.warmup}


def from_host(host: dict, ctx: BuildContext, device: str):
    """Bucketed batches of a dataset on disk, padded like the synthetic ones: one width for both
    sides (a length bucket), rows to a power of two (so the shapes stay few)."""
    edges = length_edges(ctx.hparams["max_len"])
    width = bucket(max(host["src"].shape[1], host["tgt_out"].shape[1]), edges)
    return to_device(pad_to_buckets(host, pow2_at_least(len(host["src"])), width, width), device)


def build(ctx: BuildContext) -> TfTask:
    hp = dict(ctx.hparams)
    lengths = LengthModel.from_hparams(hp)
    draws = shape_draws("transformer", ctx.seed, ctx.data_pool)
    edges = length_edges(hp["max_len"])
    model = Transformer(hp, name="transformer")
    model(np.full((1, 2), 4, np.int32), np.full((1, 2), 4, np.int32))  # creates the variables

    def make_batch(rng: np.random.Generator):
        draw = next(draws)
        pairs = draw_bucketed_batch(random.Random(draw.seed), lengths, max_tokens=ctx.batch_size, quantile=draw.quantile)
        width = bucket(max(max(p) for p in pairs), edges)
        return padded_pairs(rng, pairs, pow2_at_least(len(pairs)), width, width, hp["vocab"], hp["vocab"])

    def loss(model, batch, training):
        src, tgt_in, tgt_out = batch[:3]
        return smoothed_cross_entropy(model(src, tgt_in, training=training), tgt_out, hp["label_smoothing"])

    b1, b2 = hp["betas"]
    schedule = WarmupInverseSqrt(hp["lr_scale"], hp["d_model"], hp["warmup_steps"])
    return TfTask(
        model=model,
        optimizer=keras.optimizers.Adam(learning_rate=schedule, beta_1=b1, beta_2=b2, epsilon=hp["eps"]),
        make_batch=make_batch,
        loss=loss,
        units=lambda batch: float(np.sum(batch[3]) + np.sum(batch[4])),  # source + target words, no pads (host arrays or tensors)
        samples=lambda batch: float(np.count_nonzero(np.asarray(batch[3]) > 0)),  # real pairs, not the empty rows
        extra={"length_edges": edges},
    )
