"""What every dataset format shares: samples keyed by (index, epoch), the batch stream, skipping
a corrupt sample, and the checks' one-line errors.

A loader (PyTorch's DataLoader, tf.data, ...) needs only three things of a `Dataset`:
`dataset[key]` (one host sample, NumPy), `BatchStream(dataset)` (lists of keys, epoch after
epoch, never ending) and `dataset.batch(samples)` (the collated host batch: a dict of NumPy
arrays or lists of them, plus `skipped`, the corrupt files replaced in it).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tbd.errors import UsageError

SCAN_SAMPLE = 32  # files fully decoded by the check before a run (spread evenly over the dataset)
MAX_SKIPS = 16  # corrupt samples in a row before a batch gives up (the data is broken, not a file)

Key = tuple[int, int]  # (sample index, epoch): augmentation is reproducible and differs per epoch


def samples_in(host: dict[str, Any]) -> int:
    """Samples in a collated host batch (numpy arrays, framework tensors or lists): its labels,
    else the length of its first array or list."""
    labels = host.get("labels")
    if getattr(labels, "ndim", 0):
        return len(labels)
    return next((len(v) for v in host.values() if isinstance(v, list) or getattr(v, "ndim", 0)), 0)


def _cores_per_process(processes: int) -> int:
    """The cores this process may use, shared among the ranks on the machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, processes))


def usable_loader_cores(device: str, processes: int = 1) -> int:
    """The most loader processes worth running: on a GPU, the cores this process may use less one
    for the training loop; on a CPU, half (training needs the rest)."""
    cores = _cores_per_process(processes)
    return max(1, cores - 1) if device == "cuda" else max(1, cores // 2)


def default_workers(device: str, processes: int = 1) -> int:
    """Loader processes when --workers is not given: on a GPU, the cores this process may use
    less one for the training loop (at most 16), shared among the ranks on the machine; on a
    CPU, training needs the cores itself, so a quarter of them (at least one)."""
    if device == "cuda":
        return min(16, usable_loader_cores(device, processes))
    return max(1, _cores_per_process(processes) // 4)


class DataBroken(RuntimeError):
    """Too many corrupt samples in a row while training: the dataset, not one file, is broken."""


def bad_data(path: str | Path, problem: str, fix: str) -> UsageError:
    """The one line a bad file or layout gives: the file, what is wrong, what to do."""
    return UsageError(f"{path}: {problem}; {fix}")


def spread(n: int, k: int | None = None) -> list[int]:
    """k (default SCAN_SAMPLE) indices spread evenly over range(n) (all of them when n <= k)."""
    k = SCAN_SAMPLE if k is None else k
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def existing_dir(path: str | Path, workload: str, layout: str, reader: str | None = None) -> Path:
    """The folder --data names. `workload` is the one whose format it holds ('tbd data make
    WORKLOAD' writes one); `reader` what reads it, when not the workload ('resize')."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"--data {path}: no such file or folder; give the path of {layout} ('tbd data make {workload} --out DIR' writes one)")
    if not p.is_dir():
        raise bad_data(p, f"is a file, but {reader or workload} reads a folder", f"give the folder of {layout}")
    return p


def new_output_dir(out: str | Path) -> Path:
    """The folder `--out` names, created: it must be new or empty, and creatable here."""
    p = Path(out).expanduser()
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise UsageError(f"{p} is not an empty folder; give a new folder to --out")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {p} ({exc.strerror or exc}); give --out a folder you can write") from None
    return p


class Dataset(ABC):
    """A dataset on disk; subclasses give `__len__`, `load`, `name_of` and `collate` (and may
    replace `plan`)."""

    format = ""
    jpeg = False  # samples are JPEG files (GPU decoding applies)

    def __init__(self, path: str | Path, batch_size: int, seed: int = 0):
        self.path = str(path)
        self.batch_size = batch_size
        self.seed = seed
        self.facts: dict[str, Any] = {"format": self.format, "path": os.path.abspath(self.path)}
        self.notes: list[str] = []

    # -- what a format provides --------------------------------------------------------------
    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """Sample `index`, decoded and augmented; raises on a corrupt file."""

    @abstractmethod
    def name_of(self, index: int) -> str:
        """The file sample `index` comes from (named when it is skipped)."""

    def plan(self, epoch: int) -> list[list[int]]:
        """The batches of one epoch: shuffled, full batches only."""
        order = self.rng(epoch).permutation(len(self))
        return [order[i : i + self.batch_size].tolist() for i in range(0, len(order) - self.batch_size + 1, self.batch_size)]

    @abstractmethod
    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The host batch of `samples`: a dict of NumPy arrays (or lists of them)."""

    # -- shared ----------------------------------------------------------------------------
    def rng(self, *salt: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, *salt))

    def __getitem__(self, key: Key) -> dict[str, Any]:
        """One sample; a corrupt one is replaced by the next index and named in `_skipped`."""
        index, epoch = key
        skipped: list[str] = []
        for attempt in range(MAX_SKIPS):
            i = (index + attempt) % len(self)
            try:
                sample = self.load(i, self.rng(epoch, i))
            except Exception as exc:  # a file that does not decode: skip it, count it
                skipped.append(f"{self.name_of(i)}: {type(exc).__name__}: {exc}"[:300])
                continue
            sample["_skipped"] = skipped
            return sample
        raise DataBroken(f"{MAX_SKIPS} samples in a row failed to load; the last: {skipped[-1]}")

    def batch(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out = self.collate(samples)
        out["skipped"] = [s for sample in samples for s in sample.get("_skipped", ())]
        return out

    def describe(self) -> str:
        return f"{self.format} at {self.path}"


class BatchStream:
    """Lists of keys, one per batch, epoch after epoch without end: one loader iteration serves
    the whole run, so no epoch boundary drains the loader's prefetch. `shard` (rank, world)
    gives each rank of a distributed run every world-th batch."""

    def __init__(self, dataset: Dataset, shard: tuple[int, int] = (0, 1)):
        self.dataset = dataset
        self.rank, self.world = shard

    def __iter__(self) -> Iterator[list[Key]]:
        epoch = 0
        while True:
            batches = self.dataset.plan(epoch)[self.rank :: self.world]
            if not batches:
                raise UsageError(f"{self.dataset.path}: too few samples for one batch of {self.dataset.batch_size}; "
                                 "give a smaller --batch-size or more data")
            for b in batches:
                yield [(i, epoch) for i in b]
            epoch += 1


def pad_stack(rows: Sequence[np.ndarray], value: int = 0, dtype=np.int64) -> np.ndarray:
    """(B, longest) from 1-D rows, right-padded with `value`."""
    out = np.full((len(rows), max(len(r) for r in rows)), value, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
