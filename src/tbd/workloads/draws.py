"""The host-side draws that decide a synthetic batch's shapes (sentence and utterance lengths),
the same in every framework.

Each batch a session makes gets its own seed from the workload, the run's `--seed` and the
batch's index alone, so PyTorch, JAX and TensorFlow train the same lengths for the same seed.
Drawn from each framework's own generator instead, every framework had its own mix of long and
short batches: seq2seq's two resident batches held 20 tokens a pair under PyTorch and 39 under
JAX on an H200 (2026-11-29), so their tokens/s were not comparable. The token ids and feature
values are still drawn by each framework on its device.

Each batch also gets a quantile: where in the length order of its pool of draws its bucket lies.
The session's resident batches take evenly spaced quantiles ((i + 0.5) / pool: 0.25 and 0.75,
the middles of the two halves, for the default two), so they stand for the length distribution
whatever the batch size. Picked at random, two buckets could both be short at one batch size and both long
at another, and a batch-size comparison of tokens/s measured the draw as much as the batch.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass


# The record's method says it (WorkloadSpec.synthetic_lengths of the workloads that draw here).
RESIDENT_LENGTHS = "lengths in buckets at evenly spaced quantiles of the length distribution, (i + 0.5) / pool, the same in every framework"


@dataclass(frozen=True)
class ShapeDraw:
    seed: int  # the batch's own seed: its pool of lengths (and ids, where a framework draws them on the host)
    quantile: float  # in [0, 1): where its bucket lies in the pool's length order


def shape_draws(workload: str, seed: int, pool: int) -> Iterator[ShapeDraw]:
    """The draw of each batch a session makes, in order, for `pool` resident batches (crc32:
    stable across processes, unlike hash())."""
    if pool < 1:
        raise ValueError(f"a pool holds at least one batch, not {pool}")
    for index in itertools.count():
        yield ShapeDraw(zlib.crc32(f"{workload}:{seed}:{index}".encode()), (index % pool + 0.5) / pool)
