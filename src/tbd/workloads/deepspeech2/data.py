"""Deep Speech 2's synthetic utterance lengths, shared by the PyTorch and JAX implementations.

Exercised by `pytest -q tests/workloads/test_flops_suite_c.py`. NumPy only: durations, frame and
character counts of one length bucket; each framework draws the spectrogram values and the
characters with its own generator.
"""

from __future__ import annotations

import numpy as np

from tbd.workloads.deepspeech2.spec import FRAMES_PER_S, feature_sizes

BUCKET_POOL = 256  # a batch is `batch` neighbours among BUCKET_POOL x batch sorted draws


def sample_durations(rng: np.random.Generator, n: int, hp) -> np.ndarray:
    """Seconds of audio: max_s minus a gamma(1.5) draw, clipped -- most mass just under max_s and
    a tail of short utterances, like LibriSpeech's segmentation into utterances of up to ~17 s."""
    scale = (hp["max_s"] - hp["mean_s"]) / 1.5
    return np.clip(hp["max_s"] - rng.gamma(1.5, scale, size=n), hp["min_s"], hp["max_s"])


def bucketed_batch(rng: np.random.Generator, n: int, hp) -> np.ndarray:
    """Durations of one length bucket: n neighbours in the sorted order of many draws."""
    pool = np.sort(sample_durations(rng, BUCKET_POOL * n, hp))
    start = rng.integers(0, len(pool) - n + 1)
    return pool[start : start + n]


def utterance_lengths(rng: np.random.Generator, n: int, hp) -> tuple[np.ndarray, np.ndarray]:
    """(frames, characters) of one length bucket of n utterances, int64 each."""
    seconds = bucketed_batch(rng, n, hp)
    frames = np.maximum(np.round(seconds * FRAMES_PER_S).astype(np.int64), 1)
    # ~chars_per_s characters per second, capped so CTC stays feasible (repeats need blanks).
    out_frames = np.array([feature_sizes(hp["freq_bins"], int(t))[-1][1] for t in frames])
    n_chars = np.minimum(np.maximum(np.round(seconds * hp["chars_per_s"]), 1), out_frames // 2).astype(np.int64)
    return frames, n_chars
