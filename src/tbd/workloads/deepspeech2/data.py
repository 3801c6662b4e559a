"""Deep Speech 2's synthetic utterance lengths, shared by the PyTorch, JAX and TensorFlow implementations.

Exercised by `pytest -q tests/workloads/test_flops_suite_c.py`. NumPy only: durations, frame and
character counts of one length bucket; each framework draws the spectrogram values and the
characters with its own generator. The compiled frameworks (JAX, TensorFlow) pad frames and
transcripts to a fixed set of widths (`frame_edges`, `label_width`).
"""

from __future__ import annotations

import math

import numpy as np

from tbd.workloads.deepspeech2.spec import FRAMES_PER_S, NUM_CHARS, feature_sizes
from tbd.workloads.text_host import bucket

BUCKET_POOL = 256  # a batch is `batch` neighbours among BUCKET_POOL x batch sorted draws


def sample_durations(rng: np.random.Generator, n: int, hp) -> np.ndarray:
    """Seconds of audio: max_s minus a gamma(1.5) draw, clipped -- most mass just under max_s and
    a tail of short utterances, like LibriSpeech's segmentation into utterances of up to ~17 s."""
    scale = (hp["max_s"] - hp["mean_s"]) / 1.5
    return np.clip(hp["max_s"] - rng.gamma(1.5, scale, size=n), hp["min_s"], hp["max_s"])


def bucketed_batch(rng: np.random.Generator, n: int, hp, quantile: float) -> np.ndarray:
    """Durations of one length bucket: n neighbours in the sorted order of many draws, centred on
    the draw at `quantile` of that order (tbd.workloads.draws)."""
    pool = np.sort(sample_durations(rng, BUCKET_POOL * n, hp))
    start = min(max(int(quantile * len(pool)) - n // 2, 0), len(pool) - n)
    return pool[start : start + n]


def utterance_lengths(rng: np.random.Generator, n: int, hp, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """(frames, characters) of one length bucket of n utterances, int64 each."""
    seconds = bucketed_batch(rng, n, hp, quantile)
    frames = np.maximum(np.round(seconds * FRAMES_PER_S).astype(np.int64), 1)
    # ~chars_per_s characters per second, capped so CTC stays feasible (repeats need blanks).
    out_frames = np.array([feature_sizes(hp["freq_bins"], int(t))[-1][1] for t in frames])
    n_chars = np.minimum(np.maximum(np.round(seconds * hp["chars_per_s"]), 1), out_frames // 2).astype(np.int64)
    return frames, n_chars


def frame_edges(max_frames: int) -> list[int]:
    """The padded frame counts a run compiles for: multiples of 16 up to 128, then steps of an
    eighth (rounded up to 16) up to `max_frames`, which is always the last."""
    edges, n = [], 16
    while n < max_frames:
        edges.append(n)
        n = n + 16 if n < 128 else int(math.ceil(n * 1.125 / 16) * 16)
    return edges + [max_frames]


def label_width(hp, frames: int) -> int:
    """Transcript width for utterances of at most `frames` frames: no more characters than
    round(seconds x chars_per_s) nor half the output frames (data.utterance_lengths' caps)."""
    by_rate = int((frames + 0.5) / FRAMES_PER_S * hp["chars_per_s"] + 0.5)
    return max(1, min(feature_sizes(hp["freq_bins"], frames)[-1][1] // 2, by_rate))


def padded_batch(rng: np.random.Generator, n: int, hp, edges: list[int], quantile: float) -> tuple[np.ndarray, ...]:
    """One bucket of n utterances padded to a frame edge, on the host: spectrograms (n, freq,
    frames, 1) N(0, 1) with silence (zeros) past each end, transcripts (n, label_width) of
    characters 1..28 (0 is the CTC blank) padded with 0, frame and character counts (int32)."""
    frames, n_chars = utterance_lengths(rng, n, hp, quantile)
    width = bucket(int(frames.max()), edges)
    chars = label_width(hp, width)
    if n_chars.max() > chars:
        raise RuntimeError(f"deepspeech2: {n_chars.max()} characters exceed the bucket's transcript width {chars}")
    spec = rng.standard_normal((n, hp["freq_bins"], width, 1), dtype="float32")
    spec *= (np.arange(width)[None, :] < frames[:, None])[:, None, :, None]
    labels = rng.integers(1, NUM_CHARS, (n, chars))
    labels *= np.arange(chars)[None, :] < n_chars[:, None]
    return spec, labels.astype("int32"), frames.astype("int32"), n_chars.astype("int32")


def bucketed_host(host: dict, hp) -> tuple[np.ndarray, ...]:
    """A loader's LibriSpeech batch (tbd.data.speech) as `padded_batch` gives the synthetic one:
    (spec (B, F, T, 1) padded to the frame bucket, labels (B, chars) padded to its transcript
    width, frames, characters), int32 counts. Utterances past the flavor's longest bucket (its
    max_s) are cut to it, and transcripts to the bucket's width (CTC needs room for them)."""
    edges = frame_edges(int(round(hp["max_s"] * FRAMES_PER_S)))
    width = bucket(int(host["frames"].max()), edges)
    chars = label_width(hp, width)
    n, freq = len(host["frames"]), host["spec"].shape[2]
    spec = np.zeros((n, freq, width, 1), np.float32)
    t = min(width, host["spec"].shape[3])
    spec[:, :, :t, 0] = host["spec"][:, 0, :, :t]
    frames = np.minimum(host["frames"], width).astype(np.int32)
    n_chars = np.minimum(host["n_chars"], chars).astype(np.int32)
    labels = np.zeros((n, chars), np.int32)
    starts = np.concatenate([[0], np.cumsum(host["n_chars"])[:-1]])
    for i, (start, count) in enumerate(zip(starts, n_chars)):
        labels[i, :count] = host["targets"][start : start + count]
    return spec, labels, frames, n_chars
