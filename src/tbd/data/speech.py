"""LibriSpeech-style speech for deepspeech2: `SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt` with one
`UTTERANCE-ID TRANSCRIPT` line per utterance, and `UTTERANCE-ID.flac` (or `.wav`) beside it.

Audio is 16 kHz mono (LibriSpeech's rate). WAV is read with Python's `wave` module; FLAC needs
the `soundfile` package. Each sample: the 161-bin log spectrogram Deep Speech 2 takes (20 ms
Hamming windows every 10 ms, n_fft 320, log(1 + |STFT|), normalized per utterance) and the
transcript as character ids (blank 0, a-z 1-26, space 27, apostrophe 28). Batches are length
buckets: pools of 32 batches sorted by file size (proportional to duration), cut, shuffled.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tbd.data.base import Dataset, bad_data, existing_dir, spread
from tbd.errors import UsageError

RATE = 16000
N_FFT, HOP = 320, 160  # 20 ms windows, 10 ms hop: 161 frequency bins, 100 frames per second
POOL_BATCHES = 32
LAYOUT = "LibriSpeech-style folders (SPEAKER/CHAPTER/*.trans.txt with .flac or .wav files)"
ALPHABET = {c: i + 1 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")} | {" ": 27, "'": 28}


def _soundfile():
    try:
        import soundfile
    except (ImportError, OSError):
        raise UsageError("FLAC audio needs the soundfile package: pip install 'tbd[data]' (or pip install soundfile), "
                         "or give WAV files") from None
    return soundfile


def read_audio(path: Path) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at 16 kHz; raises on a corrupt file or another format."""
    if path.suffix.lower() == ".wav":
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
        if width != 2:
            raise ValueError(f"{8 * width}-bit samples; 16-bit PCM expected")
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
        if len(samples) < frames * channels:
            raise ValueError(f"truncated: {len(samples) // channels} of {frames} frames")
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1)
    else:
        with open(path, "rb") as f:
            if f.read(4) != b"fLaC":
                raise ValueError("not a FLAC file (no fLaC marker)")
        data, rate = _soundfile().read(str(path), dtype="float32", always_2d=True)
        samples = data.mean(axis=1)
    if rate != RATE:
        raise ValueError(f"{rate} Hz audio; deepspeech2 reads {RATE} Hz (LibriSpeech's rate): resample it")
    return samples


def spectrogram(samples: np.ndarray) -> np.ndarray:
    """(161, frames) normalized log magnitude spectrogram."""
    if len(samples) < N_FFT:
        samples = np.pad(samples, (0, N_FFT - len(samples)))
    windows = np.lib.stride_tricks.sliding_window_view(samples, N_FFT)[::HOP] * np.hamming(N_FFT).astype(np.float32)
    spec = np.log1p(np.abs(np.fft.rfft(windows, axis=1))).T.astype(np.float32)  # (161, T)
    return (spec - spec.mean()) / (spec.std() + 1e-5)


def characters(text: str) -> np.ndarray:
    return np.array([ALPHABET[c] for c in text.lower() if c in ALPHABET], np.int64)


class LibriSpeech(Dataset):
    format = "librispeech"

    def __init__(self, path, batch_size: int, seed: int = 0, workload: str = "deepspeech2"):
        super().__init__(path, batch_size, seed)
        root = self.root = existing_dir(path, workload, LAYOUT)
        self.audio: list[Path] = []
        self.text: list[str] = []
        self.sizes: list[int] = []
        transcripts = sorted(root.rglob("*.trans.txt"))
        if not transcripts:
            raise bad_data(root, "holds no *.trans.txt transcript", f"{workload} reads {LAYOUT}")
        for trans in transcripts:
            folder = trans.parent
            present = {n for n in os.listdir(folder)}
            for number, line in enumerate(trans.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                utt, _, text = line.strip().partition(" ")
                name = next((f"{utt}{ext}" for ext in (".flac", ".wav") if f"{utt}{ext}" in present), None)
                if name is None:
                    raise bad_data(folder / f"{utt}.flac", f"is missing (line {number} of {trans.name}), nor is there a .wav",
                                   "add the audio or remove the transcript line")
                if not characters(text).size:
                    raise bad_data(trans, f"line {number} has no transcript for {utt}", "give its words after the id")
                self.audio.append(folder / name)
                self.text.append(text)
                self.sizes.append((folder / name).stat().st_size)
        if not self.audio:
            raise bad_data(root, "has transcripts without utterances", f"{workload} reads {LAYOUT}")
        seconds = []
        for i in spread(len(self.audio)):
            try:
                seconds.append(len(read_audio(self.audio[i])) / RATE)
            except UsageError:
                raise
            except Exception as exc:
                raise bad_data(self.audio[i], f"does not decode ({type(exc).__name__}: {exc})", "remove or replace the file") from None
        self.facts.update(samples=len(self.audio), mean_seconds_checked=float(np.mean(seconds)),
                          audio=sorted({p.suffix.lower() for p in self.audio}))

    def __len__(self) -> int:
        return len(self.audio)

    def name_of(self, index: int) -> str:
        return str(self.audio[index])

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        return {"spec": spectrogram(read_audio(self.audio[index])), "chars": characters(self.text[index])}

    def plan(self, epoch: int) -> list[list[int]]:
        rng = self.rng(epoch)
        order = rng.permutation(len(self))
        pool = self.batch_size * POOL_BATCHES
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool].tolist(), key=lambda i: self.sizes[i])
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk) - self.batch_size + 1, self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        frames = np.array([s["spec"].shape[1] for s in samples], np.int64)
        spec = np.zeros((len(samples), 1, samples[0]["spec"].shape[0], int(frames.max())), np.float32)  # silence (0) past each end
        for i, s in enumerate(samples):
            spec[i, 0, :, : frames[i]] = s["spec"]
        return {"spec": spec, "targets": np.concatenate([s["chars"] for s in samples]), "frames": frames,
                "n_chars": np.array([len(s["chars"]) for s in samples], np.int64)}


# -- generated datasets ----------------------------------------------------------------------

WORDS = ("the", "of", "and", "to", "a", "in", "that", "he", "was", "it", "his", "you", "with", "as", "for", "had", "her", "is", "not", "but")


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def tones(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Speech-like audio: a few harmonic tones with a syllable-rate envelope and noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = rng.uniform(90, 220)
    voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t) ** 2
    return (0.2 * voice * envelope + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def make(out: Path, size: int, rng: np.random.Generator, seconds: tuple[float, float] = (0.3, 0.8), audio: str = "wav") -> dict[str, Any]:
    """`size` utterances in LibriSpeech's layout (2 speakers, 1 chapter each) as 16 kHz WAV (or
    FLAC with soundfile installed), with their transcripts."""
    by_chapter: dict[Path, list[str]] = {}
    for i in range(size):
        speaker, chapter = 100 + i % 2, 200 + i % 2
        folder = out / str(speaker) / str(chapter)
        folder.mkdir(parents=True, exist_ok=True)
        utt = f"{speaker}-{chapter}-{i:04d}"
        duration = rng.uniform(*seconds)
        samples = tones(rng, duration)
        if audio == "flac":
            _soundfile().write(str(folder / f"{utt}.flac"), samples, RATE, format="FLAC")
        else:
            write_wav(folder / f"{utt}.wav", samples)
        words = " ".join(rng.choice(WORDS, max(1, int(duration * 3)))).upper()
        by_chapter.setdefault(folder, []).append(f"{utt} {words}")
    for folder, lines in by_chapter.items():
        (folder / f"{folder.parent.name}-{folder.name}.trans.txt").write_text("\n".join(lines) + "\n")
    return {"utterances": size, "audio": audio}

