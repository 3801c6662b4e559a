"""Synthetic token batches drawn on the host with NumPy, for the frameworks that draw their data
there (JAX, TensorFlow): Zipf-distributed ids, padded rows, and the fixed set of padded lengths
that compiled steps (XLA, tf.function) are built for.

`tbd run gpt --framework tf --flavor tiny` exercises it. Token ids follow Zipf's law as in
`text_torch.py` (same vocabulary range and special tokens), drawn by inverting the cumulative
distribution.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

from tbd.workloads.text_data import BOS, EOS, FIRST_WORD, PAD


def zipf_tokens(rng: np.random.Generator, shape: tuple[int, ...], vocab: int, first: int = FIRST_WORD) -> np.ndarray:
    """int32 ids in [first, vocab) with P(rank r) proportional to 1/r (as text_torch.zipf_tokens)."""
    cdf = np.cumsum(1.0 / np.arange(1, vocab - first + 1, dtype=np.float64))
    ids = np.searchsorted(cdf, rng.random(shape) * cdf[-1], side="right")
    return (np.minimum(ids, vocab - first - 1) + first).astype(np.int32)


def padded(rng: np.random.Generator, lengths: Sequence[int], rows: int, width: int, vocab: int, bos: bool = False, eos: bool = False) -> np.ndarray:
    """(rows, width) ids: row i holds lengths[i] Zipf tokens then PAD; rows past len(lengths)
    are all PAD (bucket padding). Optional BOS first / EOS last in each real row."""
    lens = np.zeros(rows, np.int64)
    lens[: len(lengths)] = lengths
    ids = zipf_tokens(rng, (rows, width), vocab)
    pos = np.arange(width)[None, :]
    if bos:
        ids[:, 0] = BOS
    if eos:
        ids = np.where(pos == lens[:, None] - 1, EOS, ids)
    return np.where(pos >= lens[:, None], PAD, ids).astype(np.int32)


def length_edges(max_len: int) -> list[int]:
    """The fixed set of padded lengths a variable-length workload compiles for: multiples of 8
    up to 64, then steps of a quarter up to `max_len` (which is always the last)."""
    edges, n = [], 8
    while n < max_len:
        edges.append(n)
        n = n + 8 if n < 64 else int(math.ceil(n * 1.25 / 8) * 8)
    return edges + [max_len]


def pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def bucket(value: int, edges: Sequence[int]) -> int:
    """The smallest edge >= value (the last edge if none is): lengths rounded up to a fixed set."""
    i = bisect.bisect_left(list(edges), value)
    return edges[min(i, len(edges) - 1)]


def padded_pairs(rng: np.random.Generator, pairs, rows: int, src_width: int, tgt_width: int, src_vocab: int, tgt_vocab: int):
    """(src, tgt_in, tgt_out, src_lens, tgt_lens) of the pairs on the host, padded to
    (rows, width); the decoder input is <s> y1 .. y(n-1), its targets y1 .. y(n-1) </s>."""
    src = padded(rng, [s for s, _ in pairs], rows, src_width, src_vocab, eos=True)
    tgt_out = padded(rng, [t for _, t in pairs], rows, tgt_width, tgt_vocab, eos=True)
    tgt_in = np.concatenate([np.full_like(tgt_out[:, :1], BOS), tgt_out[:, :-1]], axis=1)
    tgt_in = np.where(tgt_out == PAD, PAD, tgt_in)
    lens = lambda side: np.asarray([p[side] for p in pairs] + [0] * (rows - len(pairs)), np.int32)  # noqa: E731  (0: an empty row)
    return src, tgt_in, tgt_out, lens(0), lens(1)


def pad_to_buckets(host: dict, rows: int, src_width: int, tgt_width: int):
    """A loader's text batch (tbd.data's parallel text, padded to its longest sentence) padded
    further to the fixed shapes compiled steps (XLA, tf.function) are built for: (src, tgt_in, tgt_out,
    src_lens, tgt_lens), int32; sentences longer than a width (the largest bucket) are cut."""
    def fit(a, width):
        out = np.full((rows, width), PAD, np.int32)
        n, w = min(rows, a.shape[0]), min(width, a.shape[1])
        out[:n, :w] = a[:n, :w]
        return out

    lens = lambda key, width: fit(np.minimum(host[key], width)[:, None], 1)[:, 0]  # noqa: E731  (0: an empty row)
    return (fit(host["src"], src_width), fit(host["tgt_in"], tgt_width), fit(host["tgt_out"], tgt_width),
            lens("src_lens", src_width), lens("tgt_lens", tgt_width))
