"""Seq2Seq NMT (2-layer LSTM encoder and decoder, Bahdanau attention) on IWSLT15 En-Vi shapes.

`tbd run seq2seq --flavor tiny` exercises it on the CPU.

Throughput: a sample is one sentence pair; the unit is tokens, counted as the non-pad source
plus target tokens of each step (padding is not work). Batches are bucketed (similar lengths,
each padded to its own longest sentence), so the counts vary from step to step.

FLOPs: matrix products only (2 per multiply-add), backward = 2x forward, for the lengths of
each pair (pads excluded), averaged over the flavor's length distribution:
- encoder LSTM, per source token and layer: 4 gates x H x (input + H)
- decoder LSTM (input feeding: the previous attentional vector joins the embedding), per target
  token: layer 1 4H(E + H + H), layer 2 4H(2H)
- Bahdanau attention: keys W_k enc once per source token (H x H), per target token the query
  (H x H), the scores v . tanh(k + q) (H per source token), the context (H per source token)
  and the attentional vector W_c [h; c] (2H x H)
- the output projection, H x V_tgt per target token
Element-wise work (gates, tanh, softmax) is left out, as FLOP counts usually do.
Checked against torch's FlopCounterMode (tests/workloads/test_flops_suite_b.py) with oneDNN
off on the CPU: the counter has no formula for fused RNN kernels (oneDNN's on the CPU, cuDNN's
`_cudnn_rnn` on a GPU), so the encoder LSTM is only counted when it runs as plain matrix products.
"""

from __future__ import annotations

from tbd.workloads.base import Flavor, WorkloadSpec
from tbd.workloads.draws import RESIDENT_LENGTHS
from tbd.workloads.text_data import expected_tokens_per_pair, expected_train_flops

# IWSLT15 English-Vietnamese as prepared by the TF NMT tutorial: vocabularies of 17,191 English
# and 7,709 Vietnamese words; training pairs cut at 50 tokens; about 20 English and 25
# Vietnamese tokens per sentence on average.
IWSLT15_LENGTHS = dict(mean_src_len=20.0, len_sigma=0.55, tgt_ratio=1.2, tgt_ratio_sigma=0.2, min_len=2, max_len=50)

FLAVORS = {
    "tiny": Flavor(
        "tiny",
        batch_size=8,
        description="vocabularies 256/192, 2 layers of 32 units, sentences up to 12 tokens: a CPU step in well under a second",
        hparams=dict(
            src_vocab=256, tgt_vocab=192, embed=32, hidden=32, layers=2, dropout=0.0, lr=1e-2,
            mean_src_len=8.0, len_sigma=0.4, tgt_ratio=1.2, tgt_ratio_sigma=0.2, min_len=2, max_len=12,
        ),
    ),
    "paper": Flavor(
        "paper",
        batch_size=128,
        description="IWSLT15 En-Vi: vocabularies 17,191/7,709, embedding 512, 2x512 LSTM encoder and decoder, "
                    "Bahdanau attention, dropout 0.2, Adam 3e-4, 128 pairs per bucketed batch",
        hparams=dict(src_vocab=17191, tgt_vocab=7709, embed=512, hidden=512, layers=2, dropout=0.2, lr=3e-4, **IWSLT15_LENGTHS),
    ),
}


def forward_flops(hp, src_len: int, tgt_len: int) -> float:
    """Matrix-product FLOPs of one forward pass over one pair (see the module docstring)."""
    e, h, layers, v = hp["embed"], hp["hidden"], hp["layers"], hp["tgt_vocab"]
    lstm = lambda n_in: 2.0 * 4 * h * (n_in + h)  # noqa: E731  one LSTM cell step
    encoder = src_len * (lstm(e) + (layers - 1) * lstm(h))
    decoder = tgt_len * (lstm(e + h) + (layers - 1) * lstm(h))
    attention = src_len * 2.0 * h * h  # keys, once per source token
    attention += tgt_len * (2.0 * h * h + src_len * 2.0 * h * 2 + 2.0 * 2 * h * h)  # query, scores + context, W_c
    output = tgt_len * 2.0 * h * v
    return encoder + decoder + attention + output


def train_flops_per_sample(flavor: Flavor) -> float:
    return expected_train_flops(flavor.hparams, forward_flops)


def tokens_per_pair(flavor: Flavor) -> float:
    return expected_tokens_per_pair(flavor.hparams)


SPEC = WorkloadSpec(
    name="seq2seq",
    domain="machine translation",
    dataset="IWSLT15 En-Vi (synthetic sentence pairs with its vocabularies and length distribution)",
    description="NMT: 2-layer LSTM encoder and decoder with Bahdanau attention and input feeding, Adam, "
                "bucketed variable-length batches, masked cross-entropy",
    variable_shapes=True,
    synthetic_lengths=RESIDENT_LENGTHS,
    recurrent=True,
    # Every pair at the corpus' longest: source max_len, target source x ratio clipped to max_len.
    longest_inputs=lambda hp: {"mean_src_len": float(hp["max_len"]), "len_sigma": 0.0, "tgt_ratio_sigma": 0.0},
    flavors=FLAVORS,
    sample_unit="sentence pairs",
    unit="tokens",
    batch_unit="sentence pairs",
    units_per_sample=tokens_per_pair,
    train_flops_per_sample=train_flops_per_sample,
    flops_note="matrix products of LSTMs, attention and output layer at each pair's own lengths "
               "(non-pad tokens), averaged over the length distribution; backward = 2x forward",
    data_format="parallel_text",
)
