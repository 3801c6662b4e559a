"""A workload's dataset: its spec's `data_format` and its flavor's hyperparameters pick the format
and the preprocessing sizes (image size, vocabularies, context length).

`open_dataset` is what the check before a run and every framework's loader call; `make` writes
a small generated dataset of the format (`tbd data make`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tbd.data import images, speech, text, voc
from tbd.data.base import Dataset, new_output_dir
from tbd.errors import UsageError

DECODES = ("cpu", "gpu")


def _imagenet(path, spec, hp, batch, seed, decode):
    return images.ImageNetFolder(path, batch, seed, hp["image_size"], hp["num_classes"], decode, spec.name)


def _voc(path, spec, hp, batch, seed, decode):
    return voc.VOCDetection(path, batch, seed, hp["num_classes"], spec.name)


def _parallel(path, spec, hp, batch, seed, decode):
    src, tgt = (hp["src_vocab"], hp["tgt_vocab"]) if "src_vocab" in hp else (hp["vocab"], hp["vocab"])
    return text.ParallelText(path, batch, seed, src, tgt, hp["max_len"], by_tokens=spec.batch_counts == "tokens", workload=spec.name)


def _tokens(path, spec, hp, batch, seed, decode):
    return text.TokenFile(path, batch, seed, hp["block_size"], hp["vocab"], spec.name)


def _speech(path, spec, hp, batch, seed, decode):
    return speech.LibriSpeech(path, batch, seed, spec.name)


def _gan(path, spec, hp, batch, seed, decode):
    return images.ImageFolderGAN(path, batch, seed, hp["image_size"], hp.get("n_critic", 1), spec.name)


# data_format -> (opener, what users give)
FORMATS: dict[str, tuple[Callable[..., Dataset], str]] = {
    "imagenet": (_imagenet, "an ImageNet-style folder of JPEGs (DIR/CLASS/IMAGE.JPEG)"),
    "voc": (_voc, voc.LAYOUT),
    "parallel_text": (_parallel, text.LAYOUT),
    "tokens": (_tokens, "a token file of uint16 ids (nanoGPT's train.bin), or its folder; or a folder with train.txt and tokenizer.json"),
    "librispeech": (_speech, speech.LAYOUT),
    "images": (_gan, "a folder of images (any depth)"),
}


# Formats whose samples the device can decode (`--decode gpu`): JPEGs cut by a random resized crop.
GPU_DECODE_FORMATS = ("imagenet",)
_checked: dict[tuple, str] = {}


def gpu_decodable(spec) -> bool:
    return spec.data_format in GPU_DECODE_FORMATS


def supports(spec) -> bool:
    return spec.data_format in FORMATS


def readers() -> list[str]:
    """The workloads that read a dataset from disk."""
    from tbd import registry

    return [name for name in registry.workload_names() if supports(registry.get_spec(name))]


def layout(spec) -> str:
    return FORMATS[spec.data_format][1]


def require(spec, fix: str = "drop --data") -> None:
    """Refuse a workload without a dataset format; `fix` is what the caller's user should do."""
    if not supports(spec):
        why = spec.data_note or "it has no dataset format in tbd"
        raise UsageError(f"{spec.name} cannot read a dataset from disk ({why}); {fix}")


def open_dataset(spec, path: str | Path, hparams: dict[str, Any], batch_size: int, seed: int = 0, decode: str = "cpu") -> Dataset:
    """The dataset of `spec` at `path` (checked: bad data is a one-line UsageError naming the file)."""
    require(spec)
    if decode not in DECODES:
        raise UsageError(f"--decode takes {' or '.join(DECODES)}, got '{decode}'")
    dataset = FORMATS[spec.data_format][0](path, spec, hparams, batch_size, seed, decode)
    if not dataset.plan(0):
        raise UsageError(f"{dataset.path}: {len(dataset):,} samples make no batch of {dataset.batch_size} "
                         f"(what one {spec.name} step takes); give a smaller --batch-size or more data")
    return dataset


def checked(spec, path: str | Path, hparams: dict[str, Any], batch_size: int, seed: int = 0, decode: str = "cpu") -> str:
    """The absolute path of a dataset that passed its check (checked once per process: a sweep
    validates the same dataset for each of its lines)."""
    absolute = str(Path(path).expanduser().resolve())
    key = (spec.name, absolute, tuple(sorted((k, str(v)) for k, v in hparams.items())), batch_size, decode)
    if key not in _checked:
        open_dataset(spec, absolute, hparams, batch_size, seed, decode)
        _checked[key] = absolute
    return _checked[key]


def make(spec, out: str | Path, size: int, hparams: dict[str, Any], seed: int = 0, audio: str = "wav", text_format: str = "bin") -> dict[str, Any]:
    """Write `size` generated samples of `spec`'s format under `out`; what was written."""
    require(spec, f"there is none to make for it: pick a workload that reads one ({', '.join(readers())})")
    out = new_output_dir(out)
    rng = np.random.default_rng(seed)
    fmt = spec.data_format
    if fmt == "imagenet":
        big = hparams["image_size"] >= 160  # paper flavors: ImageNet-like sizes; tiny: small files for a CPU
        made = images.make_imagenet(out, size, rng, classes=min(4, hparams["num_classes"]), mean_size=(500, 375) if big else (96, 80))
    elif fmt == "voc":
        made = voc.make(out, size, rng, hparams["num_classes"], hparams["image_long"], tuple(hparams["image_short"]))
    elif fmt == "parallel_text":
        src, tgt = (hparams["src_vocab"], hparams["tgt_vocab"]) if "src_vocab" in hparams else (hparams["vocab"], hparams["vocab"])
        made = text.make_parallel(out, size, rng, src, tgt, mean_len=max(4.0, hparams["max_len"] / 3), max_len=hparams["max_len"])
    elif fmt == "tokens" and text_format == "txt":
        made = text.make_text(out, size * (hparams["block_size"] + 1), rng, min(hparams["vocab"], 50257))
    elif fmt == "tokens":
        made = text.make_tokens(out, size * (hparams["block_size"] + 1), rng, min(hparams["vocab"], 50257))
    elif fmt == "librispeech":
        made = speech.make(out, size, rng, (hparams["min_s"], hparams["max_s"]), audio)
    else:
        made = images.make_image_folder(out, size, rng, mean_size=(int(hparams["image_size"] * 1.5), int(hparams["image_size"] * 1.25)))
    return {"format": fmt, "path": str(out), **made}


# Each step of a synchronized session waits for its batch on the host, and the device as long.
SYNCHRONIZED_WAIT = "time blocked taking the next batch (host clock); each step is synchronized, so the device waits as long"


def feed_method(dataset, *, loader: str, decode: str, feed: str, input_wait: str = SYNCHRONIZED_WAIT) -> dict[str, Any]:
    """What a `--data` run's record says about its input (`method.data`): the dataset's facts and
    notes, and how the framework's loader reads, decodes and hands over its batches."""
    return {"source": "dataset on disk", **dataset.facts, "loader": loader, "decode": decode, "feed": feed,
            "input_wait": input_wait, "notes": dataset.notes}
