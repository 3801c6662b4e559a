"""Seq2Seq NMT in TensorFlow: Keras LSTM encoder, Bahdanau-attention decoder with input feeding, Adam.

`tbd run seq2seq --framework tf --flavor tiny` exercises it on the CPU.

The torch implementation's model (the TF NMT tutorial's attention model): a `keras.layers.LSTM`
encoder per layer (cuDNN's kernel on a GPU: the mask is right-padded and the activations are the
defaults), each sentence's final state taken at its own length through the mask; a decoder whose
first LSTM layer reads the target embedding with the previous attentional vector (input
feeding), Bahdanau attention queried by the top state, the attentional vector tanh(W_c [h;
context]) feeding the output projection. Everything initialized U(-0.1, 0.1) as TF NMT does
(Keras' forget-gate bias of 1 turned off), the PAD rows of the embeddings without lookup
gradients (`padding_idx`), dropout in the same places, mean cross-entropy over the target words.
As in torch, what does not depend on the previous decoder step is hoisted out of the loop (the
embedding gates of all steps, the attention keys, the projection and loss); the loop is a
`tf.scan` over the target steps.

One layer differs in its parameters: Keras' LSTM has one bias vector per layer where torch's
(cuDNN's layout) has two, b_ih and b_hh, which only ever appear summed: the TF encoder has
layers x 4 x hidden parameters fewer (256 in the tiny flavor, 4,096 at the paper's size), the
same function. tests/workloads/test_tf_parity.py checks that this is the whole difference.

Shapes: source and target are padded to fixed lengths (`text_host.length_edges`) as in JAX, so
the step is traced for a handful of shapes; padded target steps are masked out of the loss.
"""

from __future__ import annotations

import random

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tbd.frameworks.base import BuildContext
from tbd.frameworks.tf.session import TfTask, to_device
from tbd.workloads.draws import shape_draws
from tbd.workloads.text_data import PAD, LengthModel, draw_bucketed_batch
from tbd.workloads.text_host import bucket, length_edges
from tbd.workloads.text_host import pad_to_buckets, padded_pairs

UNIFORM = keras.initializers.RandomUniform(-0.1, 0.1)  # TF NMT's initialization of every weight


def lstm_cell(gates, c):
    i, f, g, o = tf.split(gates, 4, axis=-1)  # torch's and Keras' gate order
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


class Seq2Seq(keras.Model):
    def __init__(self, hp, seed: int, **kwargs):
        super().__init__(**kwargs)
        E, H, L = hp["embed"], hp["hidden"], hp["layers"]
        self.hp, self.rate = hp, hp["dropout"]
        weight = lambda name, *shape: self.add_weight(shape=shape, initializer=UNIFORM, name=name, autocast=False)  # noqa: E731
        self.src_embed, self.tgt_embed = weight("src_embed", hp["src_vocab"], E), weight("tgt_embed", hp["tgt_vocab"], E)
        self.encoder = [layers.LSTM(H, return_sequences=True, return_state=True, kernel_initializer=UNIFORM, recurrent_initializer=UNIFORM,
                                    bias_initializer=UNIFORM, unit_forget_bias=False, name=f"encoder{i}") for i in range(L)]
        # Decoder layer 1 gates = W_e emb + W_r [att_prev; h_prev] + b; layers 2.. = W [h_below; h_prev] + b
        self.gates_embed_w, self.gates_embed_b = weight("gates_embed_w", E, 4 * H), weight("gates_embed_b", 4 * H)
        self.gates_recurrent_w = [weight(f"gates_recurrent{i}_w", 2 * H, 4 * H) for i in range(L)]
        self.gates_recurrent_b = [None] + [weight(f"gates_recurrent{i}_b", 4 * H) for i in range(1, L)]
        self.keys, self.query = weight("keys", H, H), weight("query", H, H)  # W_k (encoder outputs), W_q (top state)
        self.score, self.combine = weight("score", H, 1), weight("combine", 2 * H, H)  # v, W_c
        self.project = weight("project", H, hp["tgt_vocab"])
        self.noise = tf.random.Generator.from_seed(seed)  # dropout masks

    def _drop(self, x, training):
        if not training or self.rate == 0:
            return x
        keep = self.noise.uniform(tf.shape(x)) >= self.rate
        return tf.where(keep, x / (1.0 - self.rate), tf.zeros_like(x))

    def _embed(self, table, ids):
        e = tf.gather(table, ids)
        return tf.where((ids == PAD)[..., None], tf.stop_gradient(e), e)  # padding_idx: no gradient from the lookups

    def call(self, src, tgt_in, training=False):
        """src (B, S), tgt_in (B, T) right-padded with PAD -> logits (B, T, V)."""
        dt = self.compute_dtype
        w = lambda v: tf.cast(v, dt)  # noqa: E731
        src_ok = src != PAD
        x = self._drop(tf.cast(self._embed(self.src_embed, src), dt), training)
        finals = []
        for i, lstm in enumerate(self.encoder):
            x, h, c = lstm(x, mask=src_ok, training=training)
            finals.append((tf.cast(h, dt), tf.cast(c, dt)))
            if i < len(self.encoder) - 1:
                x = self._drop(x, training)
        enc = tf.cast(x, dt)  # (B, S, H)

        L = len(self.encoder)
        pre = tf.matmul(self._drop(tf.cast(self._embed(self.tgt_embed, tgt_in), dt), training), w(self.gates_embed_w)) + w(self.gates_embed_b)
        keys = tf.matmul(enc, w(self.keys))  # (B, S, H)
        w_rec = [w(v) for v in self.gates_recurrent_w]
        b_rec = [None] + [w(v) for v in self.gates_recurrent_b[1:]]
        w_q, v, w_c = w(self.query), w(self.score), w(self.combine)
        T, B, H = tf.shape(tgt_in)[1], tf.shape(tgt_in)[0], self.hp["hidden"]
        # Dropout between the decoder's layers, one mask per step and layer, drawn before the loop.
        keep = (tf.cast(self.noise.uniform((T, L, B, H)) >= self.rate, dt) / (1.0 - self.rate)
                if training and self.rate > 0 and L > 1 else tf.ones((T, 1, 1, 1), dt))

        def step(carry, inputs):
            hs, cs, att = carry
            pre_t, keep_t = inputs
            hs, cs = list(hs), list(cs)
            hs[0], cs[0] = lstm_cell(pre_t + tf.matmul(tf.concat([att, hs[0]], -1), w_rec[0]), cs[0])
            for layer in range(1, L):
                below = hs[layer - 1] * keep_t[min(layer, keep_t.shape[0] - 1)]
                hs[layer], cs[layer] = lstm_cell(tf.matmul(tf.concat([below, hs[layer]], -1), w_rec[layer]) + b_rec[layer], cs[layer])
            top = hs[-1]
            scores = tf.cast(tf.squeeze(tf.matmul(tf.tanh(keys + tf.matmul(top, w_q)[:, None, :]), v), -1), tf.float32)  # (B, S): Bahdanau
            alpha = tf.cast(tf.nn.softmax(tf.where(src_ok, scores, tf.float32.min), axis=-1), dt)
            context = tf.einsum("bs,bsh->bh", alpha, enc)
            att = tf.tanh(tf.matmul(tf.concat([top, context], -1), w_c))
            return tuple(hs), tuple(cs), att

        init = (tuple(h for h, _ in finals), tuple(c for _, c in finals), tf.zeros((B, H), dt))
        _, _, atts = tf.scan(step, (tf.transpose(pre, (1, 0, 2)), keep), initializer=init)
        att = self._drop(tf.transpose(atts, (1, 0, 2)), training)  # (B, T, H)
        return tf.matmul(att, w(self.project))  # (B, T, V)


def from_host(host: dict, ctx: BuildContext, device: str):
    """Bucketed batches of a dataset on disk, each side padded to its length bucket (as the
    synthetic batches), sorted longest source first as the loader gives them."""
    edges = length_edges(ctx.hparams["max_len"])
    widths = (bucket(host["src"].shape[1], edges), bucket(host["tgt_out"].shape[1], edges))
    return to_device(pad_to_buckets(host, len(host["src"]), *widths), device)


def build(ctx: BuildContext) -> TfTask:
    hp = dict(ctx.hparams)
    lengths = LengthModel.from_hparams(hp)
    draws = shape_draws("seq2seq", ctx.seed, ctx.data_pool)
    edges = length_edges(hp["max_len"])
    model = Seq2Seq(hp, ctx.seed, name="seq2seq")
    ids = np.full((1, 2), 4, np.int32)
    model(ids, ids)  # creates the variables

    def make_batch(rng: np.random.Generator):
        draw = next(draws)
        pairs = draw_bucketed_batch(random.Random(draw.seed), lengths, batch_size=ctx.batch_size, quantile=draw.quantile)
        src_w, tgt_w = bucket(max(s for s, _ in pairs), edges), bucket(max(t for _, t in pairs), edges)
        return padded_pairs(rng, pairs, len(pairs), src_w, tgt_w, hp["src_vocab"], hp["tgt_vocab"])

    def loss(model, batch, training):
        src, tgt_in, tgt_out = batch[:3]
        logits = tf.cast(model(src, tgt_in, training=training), tf.float32)
        words = tf.cast(tgt_out != PAD, tf.float32)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tgt_out, logits=logits)
        return tf.reduce_sum(nll * words) / tf.maximum(tf.reduce_sum(words), 1.0)

    return TfTask(
        model=model,
        optimizer=keras.optimizers.Adam(learning_rate=hp["lr"], epsilon=1e-8),  # torch.optim.Adam's defaults
        make_batch=make_batch,
        loss=loss,
        units=lambda batch: float(np.sum(batch[3]) + np.sum(batch[4])),  # source + target words, no pads (host arrays or tensors)
        samples=lambda batch: float(batch[3].shape[0]),
        extra={"length_edges": edges},
    )
