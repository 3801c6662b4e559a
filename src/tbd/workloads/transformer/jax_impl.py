"""Transformer base in JAX: Flax linen, optax Adam with the paper's warm-up schedule.

`tbd run transformer --framework jax --flavor tiny` exercises it on the CPU.

Layer for layer the torch implementation (same parameter count): post-LayerNorm blocks (eps
1e-5), one QKV product for self-attention, Q and KV products for cross-attention, ReLU FFN,
sinusoidal positions, one embedding shared by source, target and the pre-softmax layer
(N(0, d^-0.5)), torch's default uniform initialization of the linear layers, dropout in the
same places, label-smoothed cross-entropy over the non-pad target words, Adam (0.9, 0.98, 1e-9)
with lr = scale x d^-0.5 x min(step^-0.5, step x warmup^-1.5). As with `padding_idx` in torch,
the PAD row of the embedding gets no gradient from the lookups.

Shapes: XLA compiles one program per shape, so a batch is padded to a fixed set of shapes:
source and target to the same length, rounded up to `common_jax.length_edges` (8, 16, ..., 64,
80, 104, ... max_len), as torch does too, and the number of pairs rounded up to a power of two
with empty (all-PAD) rows (torch keeps its pairs: its compiled graph has a dynamic batch dim). Padded rows and
positions are masked out of attention and loss, so the loss is torch's; the padding costs
compute (at most 2x rows, less than 1.25x length) and a handful of compilations per run
(`compile_count` in the record). Throughput counts the real tokens only, as in torch.

Attention: `jax.nn.dot_product_attention` with the key-padding mask (and causal for the
decoder) when attention dropout is off; with dropout (the paper flavor: 0.1) an explicit
softmax(QK^T)V with dropout on the probabilities, as torch's SDPA does in training: JAX's fused
attention has no dropout.
"""

from __future__ import annotations

import functools
import math
import random
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tbd.frameworks.base import BuildContext
from tbd.frameworks.jax.session import JaxTask, compute_dtype
from tbd.workloads.common_jax import PAD, bucket, host_generator, length_edges, pow2_at_least, torch_default_rule, torch_like_init
from tbd.workloads.draws import shape_draws
from tbd.workloads.text_data import LengthModel, draw_bucketed_batch
from tbd.workloads.text_host import pad_to_buckets, padded_pairs


def attend(q, k, v, mask, causal: bool, dropout: float, module: nn.Module, train: bool):
    """q (B, T, h, dh), k and v (B, S, h, dh), mask (B, 1, 1, S) or None -> (B, T, h, dh)."""
    if not (train and dropout > 0):
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
    scores = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
    allowed = jnp.ones(scores.shape, bool) if mask is None else jnp.broadcast_to(mask, scores.shape)
    if causal:
        allowed = allowed & jnp.tril(jnp.ones(scores.shape[-2:], bool))
    scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
    probs = nn.Dropout(dropout, deterministic=False)(jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype))
    return jnp.einsum("bhts,bshd->bthd", probs, v)


class Attention(nn.Module):
    heads: int
    dropout: float
    cross: bool
    dtype: Any

    @nn.compact
    def __call__(self, x, memory=None, mask=None, causal=False, train=True):
        B, T, d = x.shape
        dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32, name=name)  # noqa: E731
        split = lambda t: t.reshape(B, -1, self.heads, d // self.heads)  # noqa: E731
        if self.cross:
            q = dense(d, "q")(x)
            k, v = jnp.split(dense(2 * d, "kv")(memory), 2, axis=-1)
        else:
            q, k, v = jnp.split(dense(3 * d, "qkv")(x), 3, axis=-1)
        y = attend(split(q), split(k), split(v), mask, causal, self.dropout, self, train)
        return dense(d, "out")(y.reshape(B, T, d))


class Layer(nn.Module):
    heads: int
    ff: int
    dropout: float
    decoder: bool
    dtype: Any

    @nn.compact
    def __call__(self, x, self_mask=None, memory=None, memory_mask=None, train=True):
        d = x.shape[-1]
        drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)  # noqa: E731
        norm = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32, name=name)  # noqa: E731
        attn = Attention(self.heads, self.dropout, False, self.dtype, name="self_attn")
        x = norm("norm0")(x + drop(attn(x, mask=self_mask, causal=self.decoder, train=train)))
        if self.decoder:
            cross = Attention(self.heads, self.dropout, True, self.dtype, name="cross_attn")
            x = norm("norm1")(x + drop(cross(x, memory, mask=memory_mask, train=train)))
        h = drop(nn.relu(nn.Dense(self.ff, dtype=self.dtype, param_dtype=jnp.float32, name="ffn_in")(x)))
        h = nn.Dense(d, dtype=self.dtype, param_dtype=jnp.float32, name="ffn_out")(h)
        return norm("norm2" if self.decoder else "norm1")(x + drop(h))


def sinusoids(length: int, d: int) -> np.ndarray:
    pos = np.arange(length, dtype=np.float32)[:, None]
    freq = np.exp(np.arange(0, d, 2, dtype=np.float32) * (-math.log(10000.0) / d))
    table = np.zeros((length, d), np.float32)
    table[:, 0::2], table[:, 1::2] = np.sin(pos * freq), np.cos(pos * freq)
    return table


class Transformer(nn.Module):
    hp: dict
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, src, tgt_in, train=True):
        hp, d = self.hp, self.hp["d_model"]
        embed = self.param("embed", nn.initializers.normal(d**-0.5), (hp["vocab"], d), jnp.float32)
        positions = jnp.asarray(sinusoids(hp["max_len"] + 1, d))
        drop = lambda y: nn.Dropout(hp["dropout"], deterministic=not train)(y)  # noqa: E731

        def embed_ids(ids):
            e = embed[ids]
            e = jnp.where((ids == PAD)[..., None], jax.lax.stop_gradient(e), e)  # padding_idx: no gradient
            return drop((e * math.sqrt(d) + positions[: ids.shape[1]]).astype(self.dtype))

        key_mask = (src != PAD)[:, None, None, :]  # (B, 1, 1, S)
        x = embed_ids(src)
        for i in range(hp["enc_layers"]):
            x = Layer(hp["heads"], hp["ff"], hp["dropout"], False, self.dtype, name=f"encoder{i}")(x, self_mask=key_mask, train=train)
        y = embed_ids(tgt_in)
        for i in range(hp["dec_layers"]):
            y = Layer(hp["heads"], hp["ff"], hp["dropout"], True, self.dtype, name=f"decoder{i}")(y, memory=x, memory_mask=key_mask, train=train)
        return y @ embed.astype(self.dtype).T  # (B, T, V): tied to the embedding


def smoothed_cross_entropy(logits, targets, smoothing: float):
    """torch's cross_entropy(ignore_index=PAD, label_smoothing=eps): (1 - eps) NLL + eps x mean
    over classes of -log p, averaged over the non-pad targets (no one-hot tensor built)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    per_token = (1.0 - smoothing) * nll - smoothing * logp.mean(axis=-1)
    words = (targets != PAD).astype(jnp.float32)
    return (per_token * words).sum() / jnp.maximum(words.sum(), 1.0)


def from_host(host: dict, ctx: BuildContext, device):
    """Bucketed batches of a dataset on disk, padded like the synthetic ones: one width for both
    sides (a length bucket), rows to a power of two (so the shapes stay few)."""
    edges = length_edges(ctx.hparams["max_len"])
    width = bucket(max(host["src"].shape[1], host["tgt_out"].shape[1]), edges)
    return jax.device_put(pad_to_buckets(host, pow2_at_least(len(host["src"])), width, width), device)


def build(ctx: BuildContext) -> JaxTask:
    hp = dict(ctx.hparams)
    lengths = LengthModel.from_hparams(hp)
    draws = shape_draws("transformer", ctx.seed, ctx.data_pool)
    edges = length_edges(hp["max_len"])
    model = Transformer(hp, compute_dtype(ctx.precision))

    def init(rng):
        shape = jax.ShapeDtypeStruct((1, 8), jnp.int32)
        shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), shape, shape)["params"]
        linear = torch_default_rule(shapes)
        rule = lambda names, s: ("normal", hp["d_model"] ** -0.5) if names == ("embed",) else linear(names, s)  # noqa: E731
        return torch_like_init(shapes, rule, rng), {}

    def loss(params, model_state, batch, rng, train=True):
        src, tgt_in, tgt_out = batch[:3]
        logits = model.apply({"params": params}, src, tgt_in, train=train, rngs={"dropout": rng})
        return smoothed_cross_entropy(logits, tgt_out, hp["label_smoothing"]), model_state

    def make_batch(key, device):
        rng = host_generator(key)
        draw = next(draws)
        pairs = draw_bucketed_batch(random.Random(draw.seed), lengths, max_tokens=ctx.batch_size, quantile=draw.quantile)
        width = bucket(max(max(p) for p in pairs), edges)
        return jax.device_put(padded_pairs(rng, pairs, pow2_at_least(len(pairs)), width, width, hp["vocab"], hp["vocab"]), device)

    def schedule(count):
        step = count + 1  # update k uses the rate of step k + 1, as LambdaLR in torch
        return hp["lr_scale"] * hp["d_model"] ** -0.5 * jnp.minimum(step**-0.5, step * hp["warmup_steps"] ** -1.5)

    b1, b2 = hp["betas"]
    return JaxTask(
        init=init,
        loss=loss,
        optimizer=optax.adam(schedule, b1=b1, b2=b2, eps=hp["eps"]),
        make_batch=make_batch,
        units=lambda batch: float(batch[3].sum() + batch[4].sum()),  # source + target words, no pads
        samples=lambda batch: float((batch[3] > 0).sum()),  # real pairs, not the empty rows
        extra={"model": model, "length_edges": edges},
    )
