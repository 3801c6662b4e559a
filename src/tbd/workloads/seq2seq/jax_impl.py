"""Seq2Seq NMT in JAX: LSTM encoder, Bahdanau-attention decoder with input feeding, optax Adam.

`tbd run seq2seq --framework jax --flavor tiny` exercises it on the CPU.

The torch implementation's model with the same parameters (cuDNN's LSTM layout included: two
bias vectors per encoder layer, b_ih and b_hh, kept so the counts are equal), all initialized
U(-0.1, 0.1) as TF NMT does, the PAD rows of the embeddings without lookup gradients
(`padding_idx`), dropout in the same places, the mean cross-entropy over the target words.
Both recurrences are `lax.scan`s; as in torch, what does not depend on the previous step is
hoisted out of them (the encoder's input projections, the decoder's embedding gates, the
attention keys, the output projection and the loss).

Shapes: torch packs each batch at its own lengths; XLA compiles per shape, so source and target
are padded to fixed lengths (`common_jax.length_edges`: 8, 16, ..., 48, max_len). The encoder
holds each sentence's state once past its length (the packed sequence's final state) and
outputs zeros there; attention masks the padded source positions; the decoder runs over the
padded target steps too, which are masked out of the loss. So the loss is torch's; the padded
steps are compute that torch does not do (at most the next edge's share) and each
(source edge, target edge) pair is one compilation (`compile_count` in the record).
"""

from __future__ import annotations

import random
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tbd.frameworks.base import BuildContext
from tbd.frameworks.jax.session import JaxTask, compute_dtype
from tbd.workloads.common_jax import PAD, bucket, host_generator, length_edges, torch_like_init
from tbd.workloads.draws import shape_draws
from tbd.workloads.text_data import LengthModel, draw_bucketed_batch
from tbd.workloads.text_host import pad_to_buckets, padded_pairs

# lax.scan's unroll: 1 runs a loop. XLA's cost analysis counts a loop's body once, so the FLOPs
# test sets True (fully unrolled, the same computation) to have every step counted.
SCAN_UNROLL: int | bool = 1


def lstm_cell(gates, c):
    i, f, g, o = jnp.split(gates, 4, axis=-1)  # torch's gate order
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def embed_lookup(table, ids):
    e = table[ids]
    return jnp.where((ids == PAD)[..., None], jax.lax.stop_gradient(e), e)  # padding_idx: no gradient


class Seq2Seq(nn.Module):
    hp: dict
    dtype: Any = jnp.float32

    def _p(self, name, *shape):
        return self.param(name, nn.initializers.uniform(0.2), shape, jnp.float32).astype(self.dtype)

    def _dropout(self, x, train: bool, key=None):
        rate = self.hp["dropout"]
        if not train or rate == 0:
            return x
        key = self.make_rng("dropout") if key is None else key
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)

    @nn.compact
    def __call__(self, src, src_lens, tgt_in, train=True):
        hp, dt = self.hp, self.dtype
        E, H, L = hp["embed"], hp["hidden"], hp["layers"]
        src_table = self.param("src_embed", nn.initializers.uniform(0.2), (hp["src_vocab"], E), jnp.float32)
        tgt_table = self.param("tgt_embed", nn.initializers.uniform(0.2), (hp["tgt_vocab"], E), jnp.float32)
        B, S = src.shape

        # Encoder: layer by layer, each a scan over time; states frozen past each sentence's length.
        x = self._dropout(embed_lookup(src_table, src).astype(dt), train)
        valid = (jnp.arange(S)[:, None] < src_lens[None, :])[..., None]  # (S, B, 1)
        finals = []
        for layer in range(L):
            n_in = E if layer == 0 else H
            w_ih, w_hh = self._p(f"enc_w_ih{layer}", n_in, 4 * H), self._p(f"enc_w_hh{layer}", H, 4 * H)
            pre = x @ w_ih + self._p(f"enc_b_ih{layer}", 4 * H) + self._p(f"enc_b_hh{layer}", 4 * H)  # (B, S, 4H)

            def step(carry, inputs, w_hh=w_hh):
                h, c = carry
                pre_t, ok = inputs
                h_new, c_new = lstm_cell(pre_t + h @ w_hh, c)
                h, c = jnp.where(ok, h_new, h), jnp.where(ok, c_new, c)
                return (h, c), jnp.where(ok, h_new, 0).astype(dt)

            zeros = jnp.zeros((B, H), dt)
            (h, c), out = jax.lax.scan(step, (zeros, zeros), (jnp.swapaxes(pre, 0, 1), valid), unroll=SCAN_UNROLL)
            finals.append((h, c))
            x = jnp.swapaxes(out, 0, 1)  # (B, S, H)
            if layer < L - 1:
                x = self._dropout(x, train)
        enc = x

        # Decoder: embedding gates and attention keys for all steps at once, then one scan.
        T = tgt_in.shape[1]
        pre = self._dropout(embed_lookup(tgt_table, tgt_in).astype(dt), train) @ self._p("gates_embed_w", E, 4 * H)
        pre = pre + self._p("gates_embed_b", 4 * H)
        w_rec = [self._p("gates_recurrent0_w", 2 * H, 4 * H)]
        b_rec = [None]
        for layer in range(1, L):
            w_rec.append(self._p(f"gates_recurrent{layer}_w", 2 * H, 4 * H))
            b_rec.append(self._p(f"gates_recurrent{layer}_b", 4 * H))
        keys = enc @ self._p("keys", H, H)  # (B, S, H)
        w_q, v, w_c = self._p("query", H, H), self._p("score", H, 1), self._p("combine", 2 * H, H)
        src_ok = src != PAD
        drop_keys = jax.random.split(self.make_rng("dropout"), T) if train and hp["dropout"] > 0 else jnp.zeros((T, 2), jnp.uint32)

        def dstep(carry, inputs):
            hs, cs, att = carry
            pre_t, key = inputs
            hs, cs = list(hs), list(cs)
            hs[0], cs[0] = lstm_cell(pre_t + jnp.concatenate([att, hs[0]], -1) @ w_rec[0], cs[0])
            for layer in range(1, L):
                below = self._dropout(hs[layer - 1], train, jax.random.fold_in(key, layer)) if train and hp["dropout"] > 0 else hs[layer - 1]
                hs[layer], cs[layer] = lstm_cell(jnp.concatenate([below, hs[layer]], -1) @ w_rec[layer] + b_rec[layer], cs[layer])
            top = hs[-1]
            scores = (jnp.tanh(keys + (top @ w_q)[:, None, :]) @ v)[..., 0]  # (B, S): Bahdanau
            scores = jnp.where(src_ok, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
            alpha = jax.nn.softmax(scores, axis=-1).astype(dt)
            context = jnp.einsum("bs,bsh->bh", alpha, enc)
            att = jnp.tanh(jnp.concatenate([top, context], -1) @ w_c)
            return (tuple(hs), tuple(cs), att), att

        init = (tuple(h for h, _ in finals), tuple(c for _, c in finals), jnp.zeros((B, H), dt))
        _, atts = jax.lax.scan(dstep, init, (jnp.swapaxes(pre, 0, 1), drop_keys), unroll=SCAN_UNROLL)
        att = self._dropout(jnp.swapaxes(atts, 0, 1), train)  # (B, T, H)
        return att @ self._p("project", H, hp["tgt_vocab"])  # (B, T, V)


def from_host(host: dict, ctx: BuildContext, device):
    """Bucketed batches of a dataset on disk, each side padded to its length bucket (as the
    synthetic batches), sorted longest source first as the loader gives them."""
    edges = length_edges(ctx.hparams["max_len"])
    widths = (bucket(host["src"].shape[1], edges), bucket(host["tgt_out"].shape[1], edges))
    return jax.device_put(pad_to_buckets(host, len(host["src"]), *widths), device)


def build(ctx: BuildContext) -> JaxTask:
    hp = dict(ctx.hparams)
    lengths = LengthModel.from_hparams(hp)
    draws = shape_draws("seq2seq", ctx.seed, ctx.data_pool)
    edges = length_edges(hp["max_len"])
    model = Seq2Seq(hp, compute_dtype(ctx.precision))

    def init(rng):
        ids, lens = jax.ShapeDtypeStruct((1, 8), jnp.int32), jax.ShapeDtypeStruct((1,), jnp.int32)
        shapes = jax.eval_shape(lambda k, s, n, t: model.init(k, s, n, t, train=False), jax.random.PRNGKey(0), ids, lens, ids)
        return torch_like_init(shapes["params"], lambda names, shape: ("uniform", 0.1), rng), {}  # TF NMT: U(-0.1, 0.1)

    def loss(params, model_state, batch, rng, train=True):
        src, tgt_in, tgt_out, src_lens, _ = batch
        logits = model.apply({"params": params}, src, src_lens, tgt_in, train=train, rngs={"dropout": rng}).astype(jnp.float32)
        words = (tgt_out != PAD).astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, tgt_out)
        return (nll * words).sum() / jnp.maximum(words.sum(), 1.0), model_state

    def make_batch(key, device):
        rng = host_generator(key)
        draw = next(draws)
        pairs = draw_bucketed_batch(random.Random(draw.seed), lengths, batch_size=ctx.batch_size, quantile=draw.quantile)
        src_w, tgt_w = bucket(max(s for s, _ in pairs), edges), bucket(max(t for _, t in pairs), edges)
        return jax.device_put(padded_pairs(rng, pairs, len(pairs), src_w, tgt_w, hp["src_vocab"], hp["tgt_vocab"]), device)

    return JaxTask(
        init=init,
        loss=loss,
        optimizer=optax.adam(hp["lr"]),  # torch.optim.Adam's defaults: (0.9, 0.999), eps 1e-8
        make_batch=make_batch,
        units=lambda batch: float(batch[3].sum() + batch[4].sum()),  # source + target words, no pads
        samples=lambda batch: float(batch[3].shape[0]),
        extra={"model": model, "length_edges": edges},
    )
