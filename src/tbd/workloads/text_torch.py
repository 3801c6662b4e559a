"""PyTorch helpers for synthetic text: Zipf-distributed token ids and padded batches.

Used by the torch implementations of seq2seq, transformer and gpt (`tbd run gpt` exercises it).
Token frequencies in real text follow Zipf's law; drawing ids that way (rather than uniformly)
gives embedding gradients and the softmax the skew they have on real data.
"""

from __future__ import annotations

import torch

from tbd.workloads.text_data import BOS, EOS, FIRST_WORD, PAD, UNK  # noqa: F401  (re-exported: ids below FIRST_WORD are special tokens)


def zipf_tokens(shape: tuple[int, ...], vocab: int, gen: torch.Generator, device: torch.device, first: int = FIRST_WORD) -> torch.Tensor:
    """Ids in [first, vocab) with P(rank r) proportional to 1/r, drawn on `device` from `gen`."""
    ranks = torch.arange(1, vocab - first + 1, device=device, dtype=torch.float32)
    probs = 1.0 / ranks
    n = 1
    for s in shape:
        n *= s
    ids = torch.multinomial(probs, n, replacement=True, generator=gen)
    return (ids + first).view(shape)


def padded(lengths: list[int], vocab: int, gen: torch.Generator, device: torch.device, bos: bool = False, eos: bool = False) -> torch.Tensor:
    """(B, max length) ids, right-padded with PAD; optional BOS first / EOS last in each row."""
    longest = max(lengths)
    ids = zipf_tokens((len(lengths), longest), vocab, gen, device)
    lens = torch.tensor(lengths, device=device)
    pos = torch.arange(longest, device=device)
    if bos:
        ids[:, 0] = BOS
    if eos:
        ids[torch.arange(len(lengths), device=device), lens - 1] = EOS
    return ids.masked_fill(pos[None, :] >= lens[:, None], PAD)
