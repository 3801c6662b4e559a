"""Deep Speech 2 in JAX: conv front end, bidirectional GRUs as `lax.scan`s, optax's CTC, Adam.

`tbd run deepspeech2 --framework jax --flavor tiny` exercises it on the CPU; the architecture and
data are described in `spec.py`.

The torch implementation's model with the same parameters: two bias-free convolutions with
batch norm (torch's momentum and eps) and hardtanh(0, 20), the GRU stack in cuDNN's layout --
per layer and direction W_ih, W_hh and *both* biases b_ih and b_hh, with b_hn inside the reset
gate as torch computes n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) -- so the parameter counts
are equal (Flax's own GRUCell has one bias per gate but two for n: 4H instead of 6H per
direction), and the linear layer to 29 characters. Initialization as torch: convolutions and
the linear layer U(+-1/sqrt(fan_in)), every GRU tensor U(+-1/sqrt(hidden)). The loss is torch's
`ctc_loss(reduction='mean')`: each utterance's loss over its transcript length, averaged.

Shapes: torch packs each batch at its own lengths; XLA compiles per shape, so the frames are
padded to a fixed set of lengths (`frame_edges`: multiples of 16 up to 128, then steps of an
eighth -- finer than the text workloads' quarter, because every padded frame is a sequential
GRU step) and the transcripts to a width fixed by the frame bucket. The GRUs run over the
padded steps with each utterance's state held past its end (forward) or kept at zero until
its end is reached (backward, which so starts at each utterance's last frame, as a packed
sequence does); their outputs there are zeros, as `pad_packed_sequence` gives, and CTC sees each
utterance's true output length. So the loss is torch's, except that batch norm's statistics
see the zero frames up to the bucket's edge instead of up to the batch's longest utterance.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tbd.frameworks.base import BuildContext
from tbd.frameworks.jax.session import JaxTask, compute_dtype
from tbd.workloads.common_jax import torch_default_rule, torch_like_init
from tbd.workloads.deepspeech2.data import bucketed_host, frame_edges, padded_batch
from tbd.workloads.deepspeech2.spec import CONVS, FRAMES_PER_S, NUM_CHARS, conv_out
from tbd.workloads.draws import shape_draws
from tbd.workloads.resnet50.jax_impl import batch_norm

# lax.scan's unroll: 1 runs a loop. XLA's cost analysis counts a loop's body once, so the FLOPs
# test sets True (fully unrolled, the same computation) to have every step counted.
SCAN_UNROLL: int | bool = 1


def output_lengths(frames):
    for (_, kt), (_, st), (_, pt) in CONVS:
        frames = conv_out(frames, kt, st, pt)  # integer arithmetic works on arrays too
    return frames


class BiGRU(nn.Module):
    """One bidirectional GRU layer over padded (B, T, n_in) inputs, torch's parameters and gates."""

    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, lengths):
        H, dt = self.hidden, self.dtype
        n_in = x.shape[-1]
        p = lambda name, *shape: self.param(name, nn.initializers.zeros, shape, jnp.float32).astype(dt)  # noqa: E731
        w_ih = [p(f"weight_ih{d}", n_in, 3 * H) for d in ("", "_reverse")]
        w_hh = [p(f"weight_hh{d}", H, 3 * H) for d in ("", "_reverse")]
        b_ih = [p(f"bias_ih{d}", 3 * H) for d in ("", "_reverse")]
        b_hh = [p(f"bias_hh{d}", 3 * H) for d in ("", "_reverse")]
        B, T, _ = x.shape
        # Input projections of both directions for all steps in one product, out of the loop.
        pre = (x @ jnp.concatenate(w_ih, -1) + jnp.concatenate(b_ih)).reshape(B, T, 2, 3 * H)
        pre = jnp.moveaxis(pre, 1, 0)  # (T, B, 2, 3H)
        valid = (jnp.arange(T)[:, None] < lengths[None, :])[..., None]  # (T, B, 1)
        # Both directions in one loop: step s runs time s forward and time T-1-s backward.
        xs = (jnp.stack([pre[:, :, 0], pre[::-1, :, 1]], 1), jnp.stack([valid, valid[::-1]], 1))  # (T, 2, B, .)
        whh, bhh = jnp.stack(w_hh), jnp.stack(b_hh)[:, None, :]  # (2, H, 3H), (2, 1, 3H)

        def step(h, inputs):
            pre_t, ok = inputs
            gh = jnp.einsum("dbh,dhk->dbk", h, whh) + bhh
            r = jax.nn.sigmoid(pre_t[..., :H] + gh[..., :H])
            z = jax.nn.sigmoid(pre_t[..., H : 2 * H] + gh[..., H : 2 * H])
            n = jnp.tanh(pre_t[..., 2 * H :] + r * gh[..., 2 * H :])
            h_new = (1 - z) * n + z * h
            # Past an utterance's end: forward holds its state, backward has not started (zeros).
            return jnp.where(ok, h_new, h), jnp.where(ok, h_new, 0).astype(dt)

        _, ys = jax.lax.scan(step, jnp.zeros((2, B, H), dt), xs, unroll=SCAN_UNROLL)  # (T, 2, B, H)
        out = jnp.concatenate([ys[:, 0], ys[::-1, 1]], -1)  # (T, B, 2H): [forward, backward] as torch
        return jnp.swapaxes(out, 0, 1)


class DeepSpeech2(nn.Module):
    hp: dict
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, spec, frames, train: bool = True):
        """spec (B, F, T, 1), frames (B,) -> logits (B, T', chars) fp32, output lengths (B,)."""
        hp, dt = self.hp, self.dtype
        x = spec.astype(dt)
        for i, (kernel, stride, pad) in enumerate(CONVS):
            x = nn.Conv(hp["conv_channels"], kernel, stride, padding=(pad[:1] * 2, pad[1:] * 2), use_bias=False,
                        dtype=dt, param_dtype=jnp.float32, name=f"conv{i + 1}")(x)
            x = jnp.clip(batch_norm(train, dt, f"bn{i + 1}")(x), 0, 20)  # hardtanh(0, 20)
        B, F, T, C = x.shape
        x = jnp.transpose(x, (0, 2, 3, 1)).reshape(B, T, C * F)  # torch's (channel, frequency) feature order
        lengths = output_lengths(frames)
        for layer in range(hp["gru_layers"]):
            x = BiGRU(hp["hidden"], dt, name=f"gru{layer}")(x, lengths)
        logits = nn.Dense(NUM_CHARS, dtype=dt, param_dtype=jnp.float32, name="fc")(x)
        return logits.astype(jnp.float32), lengths


def init_rule(shapes, hidden: int):
    default = torch_default_rule(shapes)

    def rule(names, shape):
        if names[-1].startswith(("weight_", "bias_")):  # nn.GRU: every tensor U(+-1/sqrt(hidden))
            return "uniform", 1.0 / math.sqrt(hidden)
        if names[-1] in ("mean", "var"):  # BatchNorm's running statistics
            return ("zeros" if names[-1] == "mean" else "ones"), 0.0
        return default(names, shape)

    return rule


def from_host(host: dict, ctx: BuildContext, device):
    """Spectrograms of a dataset on disk as the synthetic batch (`data.bucketed_host`)."""
    return jax.device_put(bucketed_host(host, ctx.hparams), device)


def build(ctx: BuildContext) -> JaxTask:
    hp, n = dict(ctx.hparams), ctx.batch_size
    edges = frame_edges(int(round(hp["max_s"] * FRAMES_PER_S)))
    draws = shape_draws("deepspeech2", ctx.seed, ctx.data_pool)
    model = DeepSpeech2(hp, compute_dtype(ctx.precision))

    def init(rng):
        spec = jax.ShapeDtypeStruct((1, hp["freq_bins"], 16, 1), jnp.float32)
        frames = jax.ShapeDtypeStruct((1,), jnp.int32)
        shapes = jax.eval_shape(lambda k, s, f: model.init(k, s, f, train=False), jax.random.PRNGKey(0), spec, frames)
        variables = torch_like_init(shapes, init_rule(shapes, hp["hidden"]), rng)
        return variables["params"], variables["batch_stats"]

    def loss(params, batch_stats, batch, rng, train=True):
        spec, labels, frames, n_chars = batch
        variables = {"params": params, "batch_stats": batch_stats}
        if train:
            (logits, lengths), updates = model.apply(variables, spec, frames, train=True, mutable=["batch_stats"])
            batch_stats = updates["batch_stats"]
        else:
            logits, lengths = model.apply(variables, spec, frames, train=False)
        logit_pad = (jnp.arange(logits.shape[1])[None, :] >= lengths[:, None]).astype(jnp.float32)
        label_pad = (jnp.arange(labels.shape[1])[None, :] >= n_chars[:, None]).astype(jnp.float32)
        per_utterance = optax.ctc_loss(logits, logit_pad, labels, label_pad, blank_id=0)
        # torch's 'mean': each loss over its transcript length, then the batch mean.
        return (per_utterance / jnp.maximum(n_chars, 1)).mean(), batch_stats

    def make_batch(key, device):
        # the same batch (lengths and values) in every framework for the run's seed (tbd.workloads.draws)
        draw = next(draws)
        return jax.device_put(padded_batch(np.random.default_rng(draw.seed), n, hp, edges, draw.quantile), device)

    return JaxTask(
        init=init,
        loss=loss,
        optimizer=optax.adam(hp["lr"], b1=hp["betas"][0], b2=hp["betas"][1]),  # torch's Adam: eps 1e-8 outside the root
        make_batch=make_batch,
        units=lambda batch: float(batch[2].sum()) / FRAMES_PER_S,  # seconds of audio
        samples=lambda batch: float(batch[2].shape[0]),  # utterances
        extra={"model": model, "frame_edges": edges},
    )
