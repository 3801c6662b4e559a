"""Datasets on disk for TensorFlow sessions (`tbd run WORKLOAD --framework tf --data PATH`).

The loader is tf.data: a dataset of the batches' sample keys (`tbd.data.BatchStream`, one endless
stream, so no epoch end drains the prefetch), mapped by `tf.numpy_function` to the dataset's own
loading and collation (`dataset[key]`, `dataset.batch`), `--workers` batches at a time
(`num_parallel_calls`, in order: `deterministic=True`), `--prefetch` batches ahead. tf.data's
parallelism is threads, not processes: decoding (PIL) and NumPy release the GIL, the Python
around them does not. `--workers 0` maps in the thread that asks for the batch, without prefetch
(as PyTorch's DataLoader loads in the training process).

`tf.numpy_function` returns a flat list of arrays of fixed dtypes, so `Layout` takes the
structure from the first batch (keys in sorted order, dtypes, ranks): a list of arrays of
different shapes (faster_rcnn's images, boxes, labels) travels as one zero-padded array plus each
array's shape, the skipped files as a string array; the training thread rebuilds the host batch
and hands it to the workload's `from_host` (its tf_impl), which makes the device batch its step
takes. JPEG decoding is on the CPU: `--decode gpu` is PyTorch's (nvJPEG).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tbd.data import recipes
from tbd.data.base import BatchStream, samples_in

SKIPPED = "skipped"  # Dataset.batch's list of the corrupt files replaced in the batch


@dataclass(frozen=True)
class Field:
    key: str
    kind: str  # "array", "list" (arrays of one rank, shapes differing), "strings"
    dtype: np.dtype
    rank: int  # of the array, or of each array of a list


class Layout:
    """How a collated host batch crosses `tf.numpy_function`: flat arrays of fixed dtypes."""

    def __init__(self, host: dict[str, Any]):
        fields = []
        for key in sorted(host):
            value = host[key]
            if key == SKIPPED:
                fields.append(Field(key, "strings", np.dtype(object), 1))
            elif isinstance(value, list):
                if not value:
                    raise RuntimeError(f"the dataset's batch has an empty list '{key}'; its arrays' dtype is unknown")
                first = np.asarray(value[0])
                fields.append(Field(key, "list", first.dtype, first.ndim))
            else:
                array = np.asarray(value)
                fields.append(Field(key, "array", array.dtype, array.ndim))
        self.fields = tuple(fields)

    @property
    def dtypes(self) -> list[tf.DType]:
        out = []
        for f in self.fields:
            if f.kind == "strings":
                out.append(tf.string)
            elif f.kind == "list":
                out += [tf.as_dtype(f.dtype), tf.int64]  # padded arrays, their shapes
            else:
                out.append(tf.as_dtype(f.dtype))
        return out

    def flatten(self, host: dict[str, Any]) -> list[np.ndarray]:
        out = []
        for f in self.fields:
            value = host[f.key]
            if f.kind == "strings":
                out.append(np.array([str(s).encode() for s in value], dtype=object))
            elif f.kind == "list":
                out += _pad(f, value)
            else:
                out.append(_fixed(f, np.asarray(value)))
        return out

    def unflatten(self, arrays: list[np.ndarray]) -> dict[str, Any]:
        host, i = {}, 0
        for f in self.fields:
            if f.kind == "strings":
                host[f.key] = [s.decode() for s in arrays[i]]
                i += 1
            elif f.kind == "list":
                padded, shapes = arrays[i], arrays[i + 1]
                host[f.key] = [padded[(j, *(slice(0, int(n)) for n in shape))] for j, shape in enumerate(shapes)]
                i += 2
            else:
                host[f.key] = arrays[i]
                i += 1
        return host


def _fixed(f: Field, array: np.ndarray) -> np.ndarray:
    if array.ndim != f.rank:
        raise RuntimeError(f"the dataset's '{f.key}' changed rank between batches ({f.rank} then {array.ndim})")
    return array.astype(f.dtype, copy=False)


def _pad(f: Field, arrays: list) -> list[np.ndarray]:
    """A list of arrays of one rank as (len, *largest shape) zero-padded, and (len, rank) shapes."""
    arrays = [_fixed(f, np.asarray(a)) for a in arrays]
    shapes = np.array([a.shape for a in arrays], np.int64).reshape(len(arrays), f.rank)
    padded = np.zeros((len(arrays), *shapes.max(axis=0, initial=0)), f.dtype)
    for j, a in enumerate(arrays):
        padded[(j, *(slice(0, n) for n in a.shape))] = a
    return [padded, shapes]


class Feed:
    """Device batches, one per `next()`, with the files skipped in them."""

    def __init__(self, dataset, shard: tuple[int, int], workers: int, prefetch: int, convert):
        self.convert = convert
        self.samples = 0  # samples taken from the loader so far (tbd data bench counts them)
        self.last: Any = None  # the last batch handed out
        self.error: BaseException | None = None  # a Python error inside the pipeline, raised as itself
        stream = iter(BatchStream(dataset, shard))
        first_keys = np.array(next(stream), np.int64)
        first = dataset.batch([dataset[(int(i), int(e))] for i, e in first_keys])
        self.layout = layout = Layout(first)
        # The first batch is loaded above for its structure; the pipeline's first call takes it from here.
        ready = {first_keys.tobytes(): layout.flatten(first)}
        lock = threading.Lock()

        def keys():
            yield first_keys
            for batch in stream:
                yield np.array(batch, np.int64)

        def load(batch_keys: np.ndarray) -> list[np.ndarray]:
            try:
                with lock:
                    cached = ready.pop(batch_keys.tobytes(), None)
                if cached is not None:
                    return cached
                return layout.flatten(dataset.batch([dataset[(int(i), int(e))] for i, e in batch_keys]))
            except BaseException as exc:  # tf.data would turn it into an opaque op error
                self.error = self.error or exc
                raise

        with tf.device("/CPU:0"):
            pipeline = tf.data.Dataset.from_generator(keys, output_signature=tf.TensorSpec((None, 2), tf.int64))
            load_batch = lambda k: tf.numpy_function(load, [k], layout.dtypes, stateful=True)  # noqa: E731
            if workers > 0:
                pipeline = pipeline.map(load_batch, num_parallel_calls=workers, deterministic=True).prefetch(prefetch)
            else:
                pipeline = pipeline.map(load_batch)
            options = tf.data.Options()
            options.autotune.enabled = False  # the buffers are --prefetch, the parallelism --workers, nothing tuned behind them
            options.experimental_optimization.inject_prefetch = False
            options.experimental_optimization.map_parallelization = False
            self.iterator = iter(pipeline.with_options(options))

    def next(self) -> tuple[Any, list[str]]:
        try:
            arrays = next(self.iterator)
        except tf.errors.OpError:
            if self.error is not None:
                raise self.error from None
            raise
        host = self.layout.unflatten([a.numpy() for a in arrays])
        skipped = host.pop(SKIPPED, [])
        self.samples += samples_in(host)
        self.last = self.convert(host)
        return self.last, skipped

    def close(self) -> None:
        self.iterator = None  # deleting the iterator stops tf.data's threads
        self.last = None


def open_feed(config, spec, from_host, ctx, device: str) -> tuple[Feed, dict[str, Any]]:
    """The feed of a `--data` run and what the record says about it (`method.data`)."""
    from tbd.frameworks.tf import distributed as tf_distributed

    dataset = recipes.open_dataset(spec, config.data, ctx.hparams, ctx.batch_size, config.seed, config.decode)
    shard = (tf_distributed.rank(), tf_distributed.strategy().num_replicas_in_sync)  # one replica per process
    feed = Feed(dataset, shard, config.workers, config.prefetch, lambda host: from_host(host, ctx, device))
    parallel = (f"tf.data: map(tf.numpy_function(load and collate a batch), num_parallel_calls={config.workers}, deterministic), "
                f"prefetch {config.prefetch}" if config.workers else
                "tf.data: map(tf.numpy_function(load and collate a batch)) in the thread taking the batch, no prefetch")
    method = recipes.feed_method(
        dataset,
        loader=f"{parallel}; {config.workers} loading thread(s), one endless batch stream",
        decode="CPU: in tf.data's loading threads (PIL)" if config.workers else "CPU: in the training thread, as it takes the batch (PIL)",
        feed="batches taken from the tf.data iterator in the training thread and put on the device by the workload's from_host")
    return feed, method


def open_loader(config, spec, impl, ctx):
    """The feed alone (tbd data bench): batches on the device, no model."""
    from tbd.frameworks.tf.session import _device_name

    device = _device_name(config.device)
    feed, method = open_feed(config, spec, impl.from_host, ctx, device)
    sync = (lambda: tf.test.experimental.sync_devices()) if config.device == "cuda" else (lambda: None)
    return feed, method, sync
