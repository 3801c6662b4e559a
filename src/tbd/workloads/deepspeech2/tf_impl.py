"""Deep Speech 2 in TensorFlow: conv front end, Keras bidirectional GRUs, tf.nn.ctc_loss, Adam.

`tbd run deepspeech2 --framework tf --flavor tiny` exercises it on the CPU; the architecture and
data are described in `spec.py`.

The torch implementation's model with the same parameters: two bias-free convolutions over
(frequency, time) with explicit symmetric padding, batch norm (torch's momentum and eps) and
hardtanh(0, 20); then `keras.layers.Bidirectional(keras.layers.GRU(reset_after=True))` layers,
whose layout is cuDNN's (and torch's): per direction a kernel, a recurrent kernel and two bias
vectors, the recurrent one inside the reset gate, n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
so the parameter count equals torch's (Keras' gate order z, r, h is torch's r, z, n permuted; the
function is the same); on a GPU it runs cuDNN's GRU kernel (right-padded mask, default
activations). The features entering the GRUs are ordered (frequency, channel), torch's
(channel, frequency): a permutation of the first GRU's input weights. Initialization as torch:
convolutions and the linear layer U(+-1/sqrt(fan_in)), every GRU tensor U(+-1/sqrt(hidden)).
The loss is torch's `ctc_loss(reduction='mean', zero_infinity=True)` through `tf.nn.ctc_loss`:
each utterance's loss over its transcript length, averaged.

Shapes: frames and transcripts are padded to the fixed widths of `data.frame_edges` and
`data.label_width` (as in JAX), so the step is traced for a handful of shapes. Each GRU sees a
mask of the true output lengths: the forward direction holds its state past an utterance's
end, the backward one starts at its last frame (as a packed sequence does), and CTC reads only
the true lengths, so padding changes nothing but batch norm's statistics (zero frames up to
the bucket's edge, up to the batch's longest utterance in torch).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tbd.frameworks.base import BuildContext
from tbd.frameworks.tf.session import TfTask, to_device
from tbd.workloads.common_tf import conv2d, dense
from tbd.workloads.deepspeech2.data import bucketed_host, frame_edges, padded_batch
from tbd.workloads.deepspeech2.spec import CONVS, FRAMES_PER_S, NUM_CHARS, conv_out
from tbd.workloads.draws import shape_draws


def output_lengths(frames):
    for (_, kt), (_, st), (_, pt) in CONVS:
        frames = conv_out(frames, kt, st, pt)  # integer arithmetic works on tensors too
    return frames


class DeepSpeech2(keras.Model):
    def __init__(self, hp, **kwargs):
        super().__init__(**kwargs)
        c = hp["conv_channels"]
        self.convs = []
        c_in = 1
        for i, (kernel, stride, pad) in enumerate(CONVS):
            self.convs.append(keras.Sequential([
                layers.ZeroPadding2D(pad), conv2d(c, kernel, c_in, stride=stride, use_bias=False, name=f"conv{i}"),
                layers.BatchNormalization(momentum=0.9, epsilon=1e-5), layers.ReLU(max_value=20.0),  # hardtanh(0, 20)
            ], name=f"conv_block{i}"))
            c_in = c
        H = hp["hidden"]
        init = keras.initializers.RandomUniform(-1.0 / math.sqrt(H), 1.0 / math.sqrt(H))
        gru = lambda name: layers.GRU(H, return_sequences=True, reset_after=True, kernel_initializer=init,  # noqa: E731
                                      recurrent_initializer=init, bias_initializer=init, name=name)
        self.rnns = [layers.Bidirectional(gru(f"gru{i}"), merge_mode="concat", name=f"bigru{i}") for i in range(hp["gru_layers"])]
        self.fc = dense(NUM_CHARS, 2 * H, name="fc")

    def call(self, spec, frames, training=False):
        """spec (B, F, T, 1), frames (B,) -> logits (B, T', chars) fp32, output lengths (B,)."""
        x = spec
        for block in self.convs:
            x = block(x, training=training)  # (B, F', T', C)
        B, T = tf.shape(x)[0], tf.shape(x)[2]
        x = tf.reshape(tf.transpose(x, (0, 2, 1, 3)), (B, T, x.shape[1] * x.shape[3]))  # (B, T', F' C)
        lengths = output_lengths(frames)
        mask = tf.range(T)[None, :] < lengths[:, None]
        for rnn in self.rnns:
            x = rnn(x, mask=mask, training=training)
        return tf.cast(self.fc(x), tf.float32), lengths


def from_host(host: dict, ctx: BuildContext, device: str):
    """Spectrograms of a dataset on disk as the synthetic batch (`data.bucketed_host`: padded
    to the same frame and transcript widths, so the step meets no new shapes)."""
    return to_device(bucketed_host(host, ctx.hparams), device)


def build(ctx: BuildContext) -> TfTask:
    hp, n = dict(ctx.hparams), ctx.batch_size
    edges = frame_edges(int(round(hp["max_s"] * FRAMES_PER_S)))
    draws = shape_draws("deepspeech2", ctx.seed, ctx.data_pool)
    model = DeepSpeech2(hp, name="deepspeech2")
    model(np.zeros((1, hp["freq_bins"], 16, 1), np.float32), np.full((1,), 16, np.int32))  # creates the variables

    def loss(model, batch, training):
        spec, labels, frames, n_chars = batch
        logits, lengths = model(spec, frames, training=training)
        per_utterance = tf.nn.ctc_loss(labels, logits, n_chars, lengths, logits_time_major=False, blank_index=0)
        per_utterance = tf.where(tf.math.is_inf(per_utterance), tf.zeros_like(per_utterance), per_utterance)  # zero_infinity
        # torch's 'mean': each loss over its transcript length, then the batch mean.
        return tf.reduce_mean(per_utterance / tf.cast(tf.maximum(n_chars, 1), tf.float32))

    def make_batch(rng):  # the same batch in every framework (tbd.workloads.draws)
        draw = next(draws)
        return padded_batch(np.random.default_rng(draw.seed), n, hp, edges, draw.quantile)

    b1, b2 = hp["betas"]
    return TfTask(
        model=model,
        optimizer=keras.optimizers.Adam(learning_rate=hp["lr"], beta_1=b1, beta_2=b2, epsilon=1e-8),
        make_batch=make_batch,
        loss=loss,
        units=lambda batch: float(np.sum(batch[2])) / FRAMES_PER_S,  # seconds of audio (host arrays or tensors)
        samples=lambda batch: float(batch[2].shape[0]),  # utterances
        extra={"frame_edges": edges},
    )
