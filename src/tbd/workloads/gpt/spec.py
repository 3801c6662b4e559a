"""GPT: decoder-only language model with the GPT-2 architecture, four sizes.

`tbd run gpt --flavor tiny` exercises it on the CPU; `tbd run gpt --device cuda --flavor paper
--precision bf16 --compile` is the GPT-2 124M setting of `bench/gpt_gpu.py`.

Architecture: learned positions, pre-LayerNorm blocks, GELU (tanh form, as GPT-2), biases,
fused causal attention, the output projection tied to the token embedding, the vocabulary
padded from 50,257 to 50,304 (a multiple of 64, for tensor cores). Training: AdamW, lr 6e-4,
betas (0.9, 0.95), weight decay 0.1 on matrices only. Dropout 0 in every flavor, as in current
pretraining practice (nanoGPT's GPT-2 reproduction); GPT-2 itself used 0.1.
Precision: bf16 autocast is the setting these flavors are meant for (`--precision bf16`); the
harness' default fp32 runs too.

Throughput: a sample is one sequence of `block_size` tokens; the unit is tokens.

FLOPs per token: 6 N + 12 L d T (forward + backward), N = parameters used in matrix products
(attention and MLP weights of every layer plus the tied output projection; embeddings looked
up, biases and norms left out), L layers, d width, T context. 6 N is Kaplan et al. (2020);
12 L d T counts attention scores and values over all T keys for causal attention too (PaLM,
Chowdhery et al. 2022, appendix B; nanoGPT's `estimate_mfu` uses the same formula).
"""

from __future__ import annotations

from tbd.workloads.base import Flavor, WorkloadSpec

GPT2_VOCAB = 50257
PADDED_VOCAB = 50304  # next multiple of 64


def _flavor(name, batch_size, description, layers, d_model, heads, block, vocab=PADDED_VOCAB, **extra):
    hp = dict(
        layers=layers, d_model=d_model, heads=heads, block_size=block, vocab=vocab, dropout=0.0,
        lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1,
    )
    hp.update(extra)
    return Flavor(name, batch_size, description, hp)


FLAVORS = {
    "tiny": _flavor("tiny", 4, "2 layers, d 64, 4 heads, 64-token context, vocabulary 512: a CPU step in well under a second",
                    layers=2, d_model=64, heads=4, block=64, vocab=512, lr=3e-3),
    "paper": _flavor("paper", 16, "GPT-2 124M: 12 layers, d 768, 12 heads, 1024-token context, batch 16 x 1024 tokens; "
                     "meant for --precision bf16 (autocast) and --compile", layers=12, d_model=768, heads=12, block=1024),
    "350m": _flavor("350m", 16, "GPT-2 medium (350M): 24 layers, d 1024, 16 heads, 1024-token context, batch 16 x 1024",
                    layers=24, d_model=1024, heads=16, block=1024),
    "1.3b": _flavor("1.3b", 8, "GPT-3 XL-style 1.3B: 24 layers, d 2048, 16 heads of 128, 2048-token context, batch 8 x 2048, "
                    "lr 2e-4 (GPT-3's for this size)", layers=24, d_model=2048, heads=16, block=2048, lr=2e-4),
}


def matmul_params(hp) -> int:
    """N: weights used in matrix products (QKV 3d^2, output d^2, MLP 8d^2 per layer; tied head)."""
    d = hp["d_model"]
    return hp["layers"] * 12 * d * d + hp["vocab"] * d


def train_flops_per_token(hp) -> float:
    return 6.0 * matmul_params(hp) + 12.0 * hp["layers"] * hp["d_model"] * hp["block_size"]


SPEC = WorkloadSpec(
    name="gpt",
    domain="language modeling",
    dataset="OpenWebText-like token streams (synthetic Zipf-distributed GPT-2 token ids)",
    description="decoder-only Transformer (GPT-2 architecture), next-token cross-entropy, AdamW",
    flavors=FLAVORS,
    sample_unit="sequences",
    unit="tokens",
    batch_unit="sequences",
    units_per_sample=lambda flavor: float(flavor["block_size"]),
    sequence_hparam="block_size",  # --seq-len sets the context
    train_flops_per_sample=lambda flavor: flavor["block_size"] * train_flops_per_token(flavor.hparams),
    flops_note="6N + 12LdT per token (N: matmul weights incl. the tied output layer; PaLM appendix B, "
               "nanoGPT estimate_mfu), forward + backward",
    data_format="tokens",
)
