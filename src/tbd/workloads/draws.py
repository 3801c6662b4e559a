"""The host-side draws that decide a synthetic batch's shapes (sentence and utterance lengths),
the same in every framework.

Each batch a session makes gets its own seed from the workload, the run's `--seed` and the
batch's index alone, so PyTorch, JAX and TensorFlow train the same lengths for the same seed.
Drawn from each framework's own generator instead, every framework had its own mix of long and
short batches: seq2seq's two resident batches held 20 tokens a pair under PyTorch and 39 under
JAX on an H200 (2026-11-29), so their tokens/s were not comparable. The token ids and feature
values are still drawn by each framework on its device.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator


def shape_seeds(workload: str, seed: int) -> Iterator[int]:
    """The seed of each batch a session draws, in order (crc32: stable across processes, unlike hash())."""
    for index in itertools.count():
        yield zlib.crc32(f"{workload}:{seed}:{index}".encode())
