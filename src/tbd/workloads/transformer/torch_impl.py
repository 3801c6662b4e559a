"""Transformer base in PyTorch, with fused attention (F.scaled_dot_product_attention).

`tbd run transformer --flavor tiny` exercises it on the CPU (`--device cuda --flavor paper` on a GPU).

Our own layers rather than `nn.Transformer`: its fast path serves inference only, while
`scaled_dot_product_attention` picks a fused kernel (flash / memory-efficient) in training too.
Post-LayerNorm residual blocks, sinusoidal positions and a three-way tied embedding (source,
target and pre-softmax weights) as in the paper. Padding: batches are right-padded, so the
decoder's causal mask alone keeps every real query off the pads (the pad rows are masked in
the loss); the encoder and cross-attention get a key-padding mask.

Shapes: each batch is padded to one width for source and target, the next of a fixed set of
lengths (`text_host.length_edges` of the flavor's max_len: multiples of 8, steps of a quarter
past 64, as JAX pads its batches), in eager mode too, so both do the same work; the loss and the
throughput count the real tokens only. Under --compile the batch and length dimensions are
dynamic, so one graph serves every bucket; the edges keep the lengths it sees few (a guard that
specializes a length, on some device or torch version, then costs a compile per edge, not one
per step) and multiples of 8 (tensor-core and fused-attention alignment).

The learning rate follows the paper's schedule, lr = scale x d^-0.5 x min(step^-0.5,
step x warmup^-1.5), stepped after every update: this needs a custom `train_step`.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.draws import shape_draws
from tbd.workloads.text_data import LengthModel, draw_bucketed_batch
from tbd.workloads.text_host import bucket, length_edges
from tbd.workloads.text_torch import BOS, PAD, padded


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float, cross: bool):
        super().__init__()
        self.heads, self.dropout, self.cross = heads, dropout, cross
        if cross:  # queries from the decoder, keys and values from the encoder output
            self.q, self.kv = nn.Linear(d, d), nn.Linear(d, 2 * d)
        else:
            self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x, memory=None, mask=None, causal=False):
        B, T, d = x.shape
        if self.cross:
            q, (k, v) = self.q(x), self.kv(memory).chunk(2, dim=-1)
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        split = lambda t: t.view(B, -1, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731  (B, h, T, d/h)
        y = F.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(B, T, d))


class Layer(nn.Module):
    """Post-LN block: x = LN(x + drop(sublayer(x))) for self-attention, [cross-attention], FFN."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float, decoder: bool):
        super().__init__()
        self.self_attn = Attention(d, heads, dropout, cross=False)
        self.cross_attn = Attention(d, heads, dropout, cross=True) if decoder else None
        self.ffn = nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(3 if decoder else 2))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, self_mask=None, memory=None, memory_mask=None):
        x = self.norms[0](x + self.drop(self.self_attn(x, mask=self_mask, causal=self.cross_attn is not None)))
        if self.cross_attn is not None:
            x = self.norms[1](x + self.drop(self.cross_attn(x, memory, mask=memory_mask)))
        return self.norms[-1](x + self.drop(self.ffn(x)))


def sinusoids(length: int, d: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(length, d)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return table  # (length, d)


class Transformer(nn.Module):
    def __init__(self, hp):
        super().__init__()
        d, dropout = hp["d_model"], hp["dropout"]
        self.d = d
        self.embed = nn.Embedding(hp["vocab"], d, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, 0.0, d**-0.5)  # tied to the softmax: keep logits O(1)
        self.register_buffer("positions", sinusoids(hp["max_len"] + 1, d), persistent=False)
        self.encoder = nn.ModuleList(Layer(d, hp["heads"], hp["ff"], dropout, decoder=False) for _ in range(hp["enc_layers"]))
        self.decoder = nn.ModuleList(Layer(d, hp["heads"], hp["ff"], dropout, decoder=True) for _ in range(hp["dec_layers"]))
        self.drop = nn.Dropout(dropout)
        self.label_smoothing = hp["label_smoothing"]

    def _embed(self, ids):
        return self.drop(self.embed(ids) * math.sqrt(self.d) + self.positions[: ids.shape[1]])

    def forward(self, src, tgt_in, tgt_out):
        """src (B, S), tgt_in / tgt_out (B, T), right-padded with PAD. Returns the label-smoothed
        cross-entropy averaged over the target words."""
        key_mask = (src != PAD)[:, None, None, :]  # (B, 1, 1, S): True where a key may be attended
        x = self._embed(src)
        for layer in self.encoder:
            x = layer(x, self_mask=key_mask)
        y = self._embed(tgt_in)
        for layer in self.decoder:
            y = layer(y, memory=x, memory_mask=key_mask)
        logits = F.linear(y, self.embed.weight)  # (B, T, V), weights tied to the embedding
        return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD, label_smoothing=self.label_smoothing)


def padded_width(hp, longest: int) -> int:
    """The length a batch whose longest sentence (either side) has `longest` tokens is padded to
    (a sentence from disk longer than max_len keeps its own length)."""
    return max(longest, bucket(longest, length_edges(hp["max_len"])))


def to_width(ids: torch.Tensor, width: int) -> torch.Tensor:
    """(B, T) ids right-padded with PAD to (B, width); under --compile B and width are dynamic."""
    ids = F.pad(ids, (0, width - ids.shape[1]), value=PAD)
    torch._dynamo.maybe_mark_dynamic(ids, 0)
    torch._dynamo.maybe_mark_dynamic(ids, 1)
    return ids


def from_host(host: dict, ctx: BuildContext, device: torch.device):
    """A loader's bucketed batch as the synthetic batch: (src, tgt_in, tgt_out, src_lens, tgt_lens),
    padded to the batch's length edge (`padded_width`)."""
    width = padded_width(ctx.hparams, max(host["src"].shape[1], host["tgt_out"].shape[1]))
    src, tgt_in, tgt_out = (to_width(host[k].to(device, non_blocking=True), width) for k in ("src", "tgt_in", "tgt_out"))
    return (src, tgt_in, tgt_out, host["src_lens"], host["tgt_lens"])


def build(ctx: BuildContext) -> TorchTask:
    hp = ctx.hparams
    lengths = LengthModel.from_hparams(hp)
    draws = shape_draws("transformer", ctx.seed, ctx.data_pool)
    on_cuda = ctx.device.startswith("cuda")
    state = {}

    def make_batch(gen: torch.Generator, device: torch.device):
        draw = next(draws)
        pairs = draw_bucketed_batch(random.Random(draw.seed), lengths, max_tokens=ctx.batch_size, quantile=draw.quantile)
        src_lens = [s for s, _ in pairs]
        tgt_lens = [t for _, t in pairs]
        src = padded(src_lens, hp["vocab"], gen, device, eos=True)
        tgt_out = padded(tgt_lens, hp["vocab"], gen, device, eos=True)
        tgt_in = torch.cat([torch.full_like(tgt_out[:, :1], BOS), tgt_out[:, :-1]], dim=1).masked_fill(tgt_out == PAD, PAD)
        width = padded_width(hp, max(src_lens + tgt_lens))
        return (*(to_width(t, width) for t in (src, tgt_in, tgt_out)), torch.tensor(src_lens), torch.tensor(tgt_lens))

    def schedule(step: int) -> float:
        step += 1  # LambdaLR counts from 0
        return hp["lr_scale"] * hp["d_model"] ** -0.5 * min(step**-0.5, step * hp["warmup_steps"] ** -1.5)

    def make_optimizer(model):
        # lr=1: LambdaLR multiplies the base rate by schedule(step), so the rate is the schedule
        opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=tuple(hp["betas"]), eps=hp["eps"],
                               **({"fused": True} if on_cuda else {"foreach": True}))
        state["scheduler"] = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return opt

    def loss(model, batch):
        src, tgt_in, tgt_out, _, _ = batch
        return model(src, tgt_in, tgt_out)

    def train_step(session, batch):
        """The adapter's default step followed by one step of the learning-rate schedule."""
        opt = session.optimizer
        opt.zero_grad(set_to_none=True)
        with session.autocast():
            value = loss(session.train_model, batch)
        if session.scaler is not None:
            session.scaler.scale(value).backward()
            session.scaler.step(opt)
            session.scaler.update()
        else:
            value.backward()
            opt.step()
        state["scheduler"].step()
        return value

    return TorchTask(
        model=Transformer(hp),
        make_optimizer=make_optimizer,
        make_batch=make_batch,
        loss=loss,
        units=lambda batch: float(batch[3].sum() + batch[4].sum()),  # source + target words, no pads
        samples=lambda batch: float(len(batch[3])),
        train_step=train_step,
    )
