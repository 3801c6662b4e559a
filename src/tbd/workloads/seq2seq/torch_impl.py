"""Seq2Seq NMT in PyTorch: cuDNN LSTM encoder, attention decoder with input feeding.

`tbd run seq2seq --flavor tiny` exercises it on the CPU (`--device cuda --flavor paper` on a GPU).

The model is the TF NMT tutorial's attention model (the one the TBD paper trained): a 2-layer
LSTM encoder; a 2-layer LSTM decoder whose first layer reads the target embedding together with
the previous step's attentional vector (input feeding); Bahdanau (additive) attention queried by
the top decoder state; the attentional vector tanh(W_c [h; context]) feeds the output softmax.

Decoder choice: input feeding makes step t depend on step t-1's attention, so the decoder runs
step by step with teacher forcing (no parallel formulation computes the same model). What does
not depend on the previous step is hoisted out of the loop, which is exact and much cheaper:
the embedding part of the first layer's gates for all steps (one large matrix product), the
attention keys W_k enc (once per batch), and the output projection and loss for all steps.
Inside the loop remain two small LSTM cells and one attention read per step. Under
`--compile` the loop itself stays eager (see `_unroll`); the rest is compiled.

The encoder is `nn.LSTM` (cuDNN on a GPU) over packed sequences, so every sentence's final
state (the decoder's initial state) is taken at its own length, not after the padding.
"""

from __future__ import annotations

import random
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tbd.frameworks.base import BuildContext
from tbd.frameworks.torch.session import TorchTask
from tbd.workloads.draws import shape_draws
from tbd.workloads.text_data import LengthModel, draw_bucketed_batch
from tbd.workloads.text_torch import BOS, PAD, padded


class AttentionDecoder(nn.Module):
    def __init__(self, embed: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.hidden, self.dropout = hidden, dropout
        # Layer 1 gates = W_e emb + W_r [att_prev; h_prev] + b; layers 2.. = W [h_below; h_prev] + b
        self.gates_embed = nn.Linear(embed, 4 * hidden)
        self.gates_recurrent = nn.ModuleList(
            [nn.Linear(2 * hidden, 4 * hidden, bias=False)] + [nn.Linear(2 * hidden, 4 * hidden) for _ in range(layers - 1)]
        )
        self.keys = nn.Linear(hidden, hidden, bias=False)  # W_k, applied to the encoder outputs
        self.query = nn.Linear(hidden, hidden, bias=False)  # W_q, applied to the top decoder state
        self.score = nn.Linear(hidden, 1, bias=False)  # v
        self.combine = nn.Linear(2 * hidden, hidden, bias=False)  # W_c

    @staticmethod
    def _cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, emb, enc, src_mask, h, c):
        """emb (B, Tt, E) target embeddings; enc (B, Ts, H); src_mask (B, Ts) True at words;
        h, c: lists of (B, H) per layer. Returns the attentional vectors (B, Tt, H)."""
        pre = self.gates_embed(self._drop(emb))  # (B, Tt, 4H): all steps at once
        keys = self.keys(enc)  # (B, Ts, H)
        return self._drop(self._unroll(pre, keys, enc, ~src_mask, list(h), list(c)))

    def _drop(self, x):
        return F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x

    # Left out of torch.compile: traced, the loop unrolls into one graph per target length (a
    # recompilation of minutes for every bucket) while each step is a few small kernels.
    @torch.compiler.disable
    def _unroll(self, pre, keys, enc, masked, h, c):
        """One step per target position (teacher forcing); returns the attentional vectors."""
        att = enc.new_zeros(enc.shape[0], self.hidden)
        outputs = []
        for t in range(pre.shape[1]):
            gates = pre[:, t] + self.gates_recurrent[0](torch.cat([att, h[0]], dim=-1))
            h[0], c[0] = self._cell(gates, c[0])
            for layer in range(1, len(h)):
                gates = self.gates_recurrent[layer](torch.cat([self._drop(h[layer - 1]), h[layer]], dim=-1))
                h[layer], c[layer] = self._cell(gates, c[layer])
            top = h[-1]
            # Bahdanau scores v . tanh(W_k enc_s + W_q h_t) over the source words only
            scores = self.score(torch.tanh(keys + self.query(top)[:, None, :])).squeeze(-1)  # (B, Ts)
            alpha = torch.softmax(scores.masked_fill(masked, float("-inf")), dim=-1)
            context = torch.bmm(alpha[:, None, :], enc).squeeze(1)  # (B, H)
            att = torch.tanh(self.combine(torch.cat([top, context], dim=-1)))
            outputs.append(att)
        return torch.stack(outputs, dim=1)


class Seq2Seq(nn.Module):
    def __init__(self, hp):
        super().__init__()
        e, h, layers, dropout = hp["embed"], hp["hidden"], hp["layers"], hp["dropout"]
        self.src_embed = nn.Embedding(hp["src_vocab"], e, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(hp["tgt_vocab"], e, padding_idx=PAD)
        self.encoder = nn.LSTM(e, h, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.decoder = AttentionDecoder(e, h, layers, dropout)
        self.project = nn.Linear(h, hp["tgt_vocab"], bias=False)
        self.dropout = dropout
        # TF NMT initializes every weight uniformly in [-0.1, 0.1]
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def forward(self, src, src_lens, tgt_in, tgt_out):
        """src (B, Ts) sorted longest first, src_lens (B,) on the CPU, tgt_in/tgt_out (B, Tt).
        Returns the mean cross-entropy over the target words (pads masked out)."""
        emb = self.src_embed(src)
        if self.dropout > 0:
            emb = F.dropout(emb, self.dropout, self.training)
        packed = pack_padded_sequence(emb, src_lens, batch_first=True, enforce_sorted=True)
        enc, (h_n, c_n) = self.encoder(packed)
        enc, _ = pad_packed_sequence(enc, batch_first=True, total_length=src.shape[1])  # (B, Ts, H)
        att = self.decoder(self.tgt_embed(tgt_in), enc, src != PAD, list(h_n), list(c_n))
        logits = self.project(att)  # (B, Tt, V)
        return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)


def from_host(host: dict, ctx: BuildContext, device: torch.device):
    """A loader's bucketed batch (sorted longest source first, padded) as the synthetic batch:
    (src, src_lens, tgt_in, tgt_out, tgt_lens), lengths left on the host for packing."""
    src, tgt_in, tgt_out = (host[k].to(device, non_blocking=True) for k in ("src", "tgt_in", "tgt_out"))
    for t in (src, tgt_in, tgt_out):
        torch._dynamo.maybe_mark_dynamic(t, 0)
        torch._dynamo.maybe_mark_dynamic(t, 1)
    return (src, host["src_lens"], tgt_in, tgt_out, host["tgt_lens"])


def build(ctx: BuildContext) -> TorchTask:
    hp = ctx.hparams
    lengths = LengthModel.from_hparams(hp)
    draws = shape_draws("seq2seq", ctx.seed, ctx.data_pool)

    def make_batch(gen: torch.Generator, device: torch.device):
        draw = next(draws)
        pairs = draw_bucketed_batch(random.Random(draw.seed), lengths, batch_size=ctx.batch_size, quantile=draw.quantile)
        src_lens = [s for s, _ in pairs]
        tgt_lens = [t for _, t in pairs]
        src = padded(src_lens, hp["src_vocab"], gen, device, eos=True)
        # Decoder input is <s> y1 .. y(n-1); it learns to emit y1 .. y(n-1) </s>.
        tgt_out = padded(tgt_lens, hp["tgt_vocab"], gen, device, eos=True)
        tgt_in = torch.cat([torch.full_like(tgt_out[:, :1], BOS), tgt_out[:, :-1]], dim=1).masked_fill(tgt_out == PAD, PAD)
        for t in (src, tgt_in, tgt_out):  # under --compile: one graph for every bucket's shape
            torch._dynamo.maybe_mark_dynamic(t, 0)
            torch._dynamo.maybe_mark_dynamic(t, 1)
        return (src, torch.tensor(src_lens), tgt_in, tgt_out, torch.tensor(tgt_lens))

    def loss(model, batch):
        src, src_lens, tgt_in, tgt_out, _ = batch
        return model(src, src_lens, tgt_in, tgt_out)

    return TorchTask(
        model=Seq2Seq(hp),
        make_optimizer=lambda model: torch.optim.Adam(model.parameters(), lr=hp["lr"], foreach=True),
        make_batch=make_batch,
        loss=loss,
        units=lambda batch: float(batch[1].sum() + batch[4].sum()),  # source + target words, no pads
        samples=lambda batch: float(len(batch[1])),
    )
