"""Sentence-pair lengths like real translation corpora, and bucketed batches of them.

`tbd run seq2seq` and `tbd run transformer` draw their synthetic batches through this module.
It is framework-neutral (plain Python) because lengths decide tensor shapes on the host; the
token ids themselves are drawn by each framework on its device.

Lengths: a source length from a log-normal (clipped to the corpus' range) and a target length
correlated with it (target = source x ratio x log-normal noise), which is how the lengths of
parallel corpora behave: long sentences translate to long sentences.

Bucketing: real input pipelines sort sentences by length and cut batches from neighbours, so a
batch pads little. We imitate that per batch: draw a pool of pairs, sort it by length, cut it
into batches (a fixed number of pairs, or as many pairs as fit a padded-token budget) and pick
the batch at a quantile of the pool's length order (tbd.workloads.draws: a session's resident
batches at evenly spaced quantiles). Quantiles count batches, as an epoch steps them: each batch
once, and so every pair once, so the lengths trained follow the corpus distribution.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# Special token ids shared by every framework's text batches; word ids start at FIRST_WORD.
PAD, UNK, BOS, EOS = 0, 1, 2, 3
FIRST_WORD = 4

Pair = tuple[int, int]  # (source length, target length) in tokens, special tokens included


@dataclass(frozen=True)
class LengthModel:
    mean_src: float  # mean source length before clipping
    sigma: float  # log-normal shape of the source length
    ratio: float  # mean target length / source length
    ratio_sigma: float  # log-normal noise of that ratio per pair
    min_len: int
    max_len: int

    @classmethod
    def from_hparams(cls, hp) -> "LengthModel":
        return cls(hp["mean_src_len"], hp["len_sigma"], hp["tgt_ratio"], hp["tgt_ratio_sigma"], hp["min_len"], hp["max_len"])

    def draw(self, rng: random.Random) -> Pair:
        # mean of a log-normal is exp(mu + sigma^2 / 2): pick mu so that the mean is mean_src
        mu = math.log(self.mean_src) - self.sigma**2 / 2
        src = round(rng.lognormvariate(mu, self.sigma))
        tgt = round(src * self.ratio * rng.lognormvariate(-self.ratio_sigma**2 / 2, self.ratio_sigma))
        clip = lambda n: min(self.max_len, max(self.min_len, n))  # noqa: E731
        return clip(src), clip(tgt)

    def draw_many(self, rng: random.Random, n: int) -> list[Pair]:
        return [self.draw(rng) for _ in range(n)]


def batches_of_size(pairs: list[Pair], batch_size: int) -> list[list[Pair]]:
    """Sort by length and cut into batches of `batch_size` pairs (the last, partial one dropped
    unless it is the only one)."""
    ordered = sorted(pairs, key=lambda p: (p[0], p[1]))
    cut = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    full = [b for b in cut if len(b) == batch_size]
    return full or cut


def batches_of_tokens(pairs: list[Pair], max_tokens: int) -> list[list[Pair]]:
    """Sort by length and cut into batches whose padded size, pairs x longest side (fairseq's
    `--max-tokens` rule), stays within `max_tokens`."""
    ordered = sorted(pairs, key=lambda p: (max(p), p[0]))
    out: list[list[Pair]] = []
    current: list[Pair] = []
    longest = 0
    for pair in ordered:
        longest_if_added = max(longest, max(pair))
        if current and (len(current) + 1) * longest_if_added > max_tokens:
            out.append(current)
            current, longest_if_added = [], max(pair)
        current.append(pair)
        longest = longest_if_added
    if current:
        out.append(current)
    # The tail batch of the pool is usually short of the budget: keep full ones when there are.
    full = [b for b in out if len(b) * max(max(p) for p in b) >= max_tokens // 2]
    return full or out


def batch_at_quantile(batches: list[list[Pair]], quantile: float) -> list[Pair]:
    """The batch at `quantile` of the pool's batches in length order. Counted in batches, as an
    epoch steps them: each batch once, whatever number of pairs a token budget puts in it."""
    return batches[min(int(quantile * len(batches)), len(batches) - 1)]


def draw_bucketed_batch(rng: random.Random, model: LengthModel, quantile: float, batch_size: int | None = None,
                        max_tokens: int | None = None, pool_batches: int = 32) -> list[Pair]:
    """One batch of similar-length pairs, sorted longest source first (what packed RNNs want):
    the one at `quantile` of the pool's length order."""
    if (batch_size is None) == (max_tokens is None):
        raise ValueError("give exactly one of batch_size and max_tokens")
    if batch_size is not None:
        batches = batches_of_size(model.draw_many(rng, batch_size * pool_batches), batch_size)
    else:
        mean_pairs = max(1, int(max_tokens / max(model.mean_src, model.mean_src * model.ratio)))
        batches = batches_of_tokens(model.draw_many(rng, mean_pairs * pool_batches), max_tokens)
    batch = batch_at_quantile(batches, quantile)
    return sorted(batch, key=lambda p: -p[0])


def expected(model: LengthModel, fn, draws: int = 4000, seed: int = 1234) -> float:
    """Mean of fn(src_len, tgt_len) over the length distribution (a fixed-seed Monte Carlo, so
    the FLOPs per sample of a flavor are one deterministic number)."""
    rng = random.Random(seed)
    return sum(fn(*model.draw(rng)) for _ in range(draws)) / draws


def expected_train_flops(hparams, forward_flops) -> float:
    """Training FLOPs per sentence pair averaged over the flavor's length distribution, from
    `forward_flops(hparams, src_len, tgt_len)` (backward = 2x forward)."""
    from tbd.workloads.base import TRAIN_FLOPS_PER_FORWARD

    return TRAIN_FLOPS_PER_FORWARD * expected(LengthModel.from_hparams(hparams), lambda s, t: forward_flops(hparams, s, t))


def expected_tokens_per_pair(hparams) -> float:
    """Source plus target tokens of an average sentence pair."""
    return expected(LengthModel.from_hparams(hparams), lambda s, t: s + t)
