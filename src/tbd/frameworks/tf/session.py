"""TensorFlow sessions: device placement, precision policy, one tf.function step, timed steps.

`tbd run resnet50 --framework tf --flavor tiny` exercises it. A workload's `tf_impl.build(ctx)`
returns a `TfTask` (Keras 3 layers on the TensorFlow backend, a Keras optimizer, synthetic
batches drawn on the host); `open_session` turns it into a `TfSession`:
- graph mode by default: forward, backward and optimizer update are one `tf.function`; with
  `--compile` that function is compiled whole by XLA (`jit_compile=True`); the option
  `execution=eager` runs the same step op by op (the record says which);
- precision: fp32 turns TensorFloat-32 off (TensorFlow enables it by default on Ampere and
  later), tf32 on; bf16 and fp16 build the model under Keras' mixed-precision policy
  (`mixed_bfloat16`, `mixed_float16`: variables fp32, compute in 16 bits), fp16 with dynamic
  loss scaling (`keras.optimizers.LossScaleOptimizer`);
- layout: TensorFlow's convolutions are NHWC, its native layout and the only one its CPU
  kernels have: `--channels-last` changes nothing;
- timing: host clock per step up to a device synchronization (`tf.test.experimental.sync_devices`
  on a GPU; CPU kernels have finished when the step's call returns): one sync per step;
- data: `data_pool` batches drawn on the host with NumPy from the run's seed, copied to the
  device once, rotated; or, with `--data`, one batch per step from a tf.data pipeline over the
  dataset on disk (`data.py`), made the workload's device batch by its `from_host`, the wait
  for it timed inside the step (`input_wait_s`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tbd.errors import RunFailure, UsageError
from tbd.frameworks.base import BuildContext, SessionInfo, StepTimes, synthetic_data_method
from tbd.frameworks.tf import EXECUTION_MODES
from tbd.frameworks.tf import distributed as tf_distributed
from tbd.metrics.conditions import intra_op_threads
from tbd.results.environment import cpu_model

Batch = tuple[Any, ...]

# Keras dtype policies of the precisions: variables stay fp32, layers compute in 16 bits.
POLICIES = {"fp32": "float32", "tf32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def compute_dtype(precision: str) -> str:
    """The dtype a workload's own ops (outside Keras layers) compute in under `precision`."""
    return keras.mixed_precision.Policy(POLICIES[precision]).compute_dtype


@dataclass
class TfTask:
    # Every trainable variable of the workload, built (variables created) inside `build`.
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    # One synthetic batch as NumPy arrays, reproducible from `rng`; the session copies it to the device.
    make_batch: Callable[[np.random.Generator], Batch]
    # (model, batch, training) -> the scalar fp32 loss of one batch (traced into the step).
    loss: Callable[[keras.Model, Batch, bool], tf.Tensor]
    # Throughput units and samples in a batch; default: batch size x units per sample.
    units: Callable[[Batch], float] | None = None
    samples: Callable[[Batch], float] | None = None
    # The variables `optimizer` trains (default: all of the model's trainable ones); a workload
    # with several optimizers (wgan) names the main one's and builds the others itself.
    variables: list | None = None
    # torch.optim.SGD's weight decay: `coupled_weight_decay x variable` added to every gradient
    # before the optimizer (Keras' own `weight_decay` is the decoupled, AdamW-style one).
    coupled_weight_decay: float = 0.0
    # Workloads with their own update rule (several optimizers) replace the whole step:
    # (session, batch) -> loss, traced into the session's tf.function like the default step.
    train_step: Callable[["TfSession", Batch], tf.Tensor] | None = None
    # A step driven from the host (a3c: a round with actor processes), not traced: (session, batch) -> loss.
    host_step: Callable[["TfSession", Batch], Any] | None = None
    # False where the step has data-dependent shapes (NMS, sampling) XLA cannot compile: --compile is refused.
    xla_compatible: bool = True
    # Releases what build() started beyond tensors (actor processes); called once.
    close: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _device_name(kind: str) -> str:
    if kind == "cuda":
        gpus = tf.config.list_logical_devices("GPU")
        if not gpus:
            raise RunFailure(f"TensorFlow {tf.__version__} sees no GPU here (tensorflow-cpu, or a CUDA mismatch); "
                             "install the GPU build with: pip install 'tensorflow[and-cuda]', or use --device cpu")
        return gpus[0].name  # one GPU per process: distributed runs make only the rank's GPU visible
    return "/CPU:0"


def configure_runtime(config) -> dict[str, Any]:
    """Settings TensorFlow takes only before its runtime starts (threads, GPU memory growth);
    a later session in the same process keeps the first one's and records what is in force."""
    threads = intra_op_threads(processes=int(getattr(config, "nproc_per_node", 1) or 1))
    try:
        if config.device == "cpu":
            tf.config.threading.set_intra_op_parallelism_threads(threads["intra_op"])
        for gpu in tf.config.list_physical_devices("GPU"):
            # Grow the allocator's pool on demand (TensorFlow takes nearly all GPU memory at start
            # otherwise), so the peak it reports is what the step needed and other processes fit.
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # the runtime is already initialized in this process
        threads = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads() or None,
                   "source": "set by an earlier session in this process (TensorFlow fixes it at start)"}
    tf.config.experimental.enable_tensor_float_32_execution(config.precision == "tf32")
    return threads


def to_device(batch: Batch, device: str) -> Batch:
    """Host arrays (a workload's batch) as tensors on `device`."""
    with tf.device(device):
        return tuple(tf.identity(tf.convert_to_tensor(x)) for x in batch)


class TfSession:
    def __init__(self, config, spec, impl, ctx: BuildContext):
        self.config = config
        from_host = getattr(impl, "from_host", None)  # a dataset on disk's host batch -> this workload's device batch
        if keras.backend.backend() != "tensorflow":  # Keras 3 picks its backend at import (KERAS_BACKEND, ~/.keras/keras.json)
            raise UsageError(f"Keras runs on its {keras.backend.backend()} backend here; tbd's TensorFlow workloads need "
                             "KERAS_BACKEND=tensorflow")
        self.execution = config.options.get("execution", "graph")
        if self.execution not in EXECUTION_MODES:
            raise RunFailure(f"unknown TensorFlow option execution={self.execution}; use graph or eager")
        if self.execution == "eager" and config.compile:
            raise RunFailure("--compile (XLA) compiles a tf.function; drop --compile or use --option execution=graph")
        self.threads = configure_runtime(config)
        self.strategy = tf_distributed.strategy()
        self.device = _device_name(config.device)
        keras.utils.set_random_seed(config.seed)  # weights: the same on every rank
        previous = keras.mixed_precision.dtype_policy()
        keras.mixed_precision.set_dtype_policy(POLICIES[config.precision])
        try:
            with tf.device(self.device), self.strategy.scope():
                task: TfTask = impl.build(ctx)
                if config.precision == "fp16":
                    task.optimizer = keras.optimizers.LossScaleOptimizer(task.optimizer)
                self.model, self.optimizer = task.model, task.optimizer
                # Slots (momentum, Adam moments) now, not inside the first traced step.
                self.optimizer.build(task.variables if task.variables is not None else self.model.trainable_variables)
        finally:
            keras.mixed_precision.set_dtype_policy(previous)
        self.task = task
        if config.compile and not task.xla_compatible:
            if task.close is not None:
                task.close()
            raise UsageError(f"{config.workload} in TensorFlow has data-dependent shapes that XLA cannot compile; drop --compile")
        self.variables = list(task.variables if task.variables is not None else self.model.trainable_variables)
        self.num_parameters = int(sum(int(np.prod(v.shape)) for v in self.model.trainable_variables))
        per_sample = spec.units_per_sample(config.resolved_flavor())
        units_fn, samples_fn, n = task.units, task.samples, ctx.batch_size
        self._units_of = (lambda b: float(units_fn(b))) if units_fn else (lambda b: n * per_sample)
        self._samples_of = (lambda b: float(samples_fn(b))) if samples_fn else (lambda b: float(n))
        self.feed = None  # a dataset on disk (--data): one batch from the tf.data feed per step
        self.data_skipped: list[str] = []
        if config.data:
            if from_host is None:
                raise UsageError(f"{config.workload} in TensorFlow has no dataset reader yet (only synthetic data); drop --data")
            from tbd.frameworks.tf.data import open_feed

            self.feed, data_method = open_feed(config, spec, from_host, ctx, self.device)
            host_batches = []
        else:
            rng = np.random.default_rng([config.seed, tf_distributed.rank()])  # each rank draws its own data
            host_batches = [task.make_batch(rng) for _ in range(config.data_pool)]
            data_method = synthetic_data_method(config, spec)
        self._units = [self._units_of(b) for b in host_batches]
        self._samples = [self._samples_of(b) for b in host_batches]
        self.batches = [to_device(b, self.device) for b in host_batches]
        del host_batches
        self._next = 0
        self._loss = None
        self._xla_gradients = None  # set by _make_step where XLA compiles only the gradients
        self.step_fn = self._make_step()
        self.trace_count = 0  # tf.function traces of the step (a step that retraces per shape is a defect)
        self.trace_s = 0.0
        if config.device == "cuda":
            tf.config.experimental.reset_memory_stats(self._memory_device())
        self.info = SessionInfo(
            device_name=self._gpu_name() if config.device == "cuda" else cpu_model(),
            framework_version=tf.__version__,
            num_parameters=self.num_parameters,
            method={
                "timing": ("host clock per step up to tf.test.experimental.sync_devices (one device sync per step)"
                           if config.device == "cuda" else "host clock per step (CPU kernels finish before the step's call returns)"),
                "data": data_method,
                "execution": ("eager (op by op)" if self.execution == "eager" else
                              "graph: the whole train step is one tf.function" + (
                                  "" if not config.compile else ", compiled by XLA (jit_compile=True)" if self._xla_gradients is None
                                  else "; XLA (jit_compile=True) compiles each replica's forward and backward, the all-reduce and "
                                       "update run outside it (XLA has no kernels for the strategy's collectives)")),
                "compile": "XLA (tf.function jit_compile=True)" if config.compile else ("none" if self.execution == "eager" else "tf.function graph (no XLA)"),
                "compile_flag": bool(config.compile),
                "compile_count": "traces of the step's tf.function (each a new graph, XLA-compiled under --compile); compile_s: wall "
                                 "time of the step calls that traced (tracing, graph optimization or XLA, and that step itself)",
                "precision": _precision_note(config.precision),
                "dtype_policy": POLICIES[config.precision],
                "loss_scaling": "dynamic (keras.optimizers.LossScaleOptimizer)" if config.precision == "fp16" else None,
                "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
                "memory_format": "native NHWC (channels_last)",
                "channels_last_flag": bool(config.channels_last),
                "optimizer": type(self.optimizer).__name__,
                "custom_train_step": task.train_step is not None or task.host_step is not None,
                "distribution": tf_distributed.describe(),
                "intra_op_threads": self.threads["intra_op"],
                "threads": {**self.threads, "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or None},
                "keras_version": keras.__version__,
            },
        )

    # -- the step -------------------------------------------------------------------------------
    def _replica_step(self, batch: Batch):
        """Forward, backward and update on this replica's batch; returns the batch's loss."""
        if self.task.train_step is not None:
            return self.task.train_step(self, batch)
        loss, grads = (self._xla_gradients or self._gradients)(batch)
        self.apply(self.optimizer, grads, self.variables)
        return loss

    def _gradients(self, batch: Batch):
        """The batch's loss and the gradients of the global mean (the strategy sums them)."""
        with tf.GradientTape() as tape:
            loss = self.task.loss(self.model, batch, True)
            scaled = self.optimizer.scale_loss(loss / self.strategy.num_replicas_in_sync)
        return loss, tape.gradient(scaled, self.variables)

    def apply(self, optimizer, grads, variables) -> None:
        """The optimizer's update, with torch's coupled weight decay where the task asks for it.
        The gradients are of the loss divided by the replicas and, under fp16, multiplied by the
        loss scale: the decay term is scaled the same way (the optimizer unscales and sums)."""
        wd = self.task.coupled_weight_decay
        if wd:
            factor = self.optimizer.scale_loss(tf.constant(wd / self.strategy.num_replicas_in_sync, tf.float32))
            grads = [g + tf.cast(factor, g.dtype) * tf.cast(v, g.dtype) for g, v in zip(grads, variables)]
        optimizer.apply_gradients(zip(grads, variables))

    def _make_step(self):
        if self.task.host_step is not None:
            return lambda batch: self.task.host_step(self, batch)
        strategy = self.strategy
        # XLA has no kernels for the strategy's collectives: over several processes it compiles
        # each replica's forward and backward, and the all-reduce and the update run around it.
        self._xla_gradients = (tf.function(self._gradients, jit_compile=True)
                               if self.config.compile and strategy.num_replicas_in_sync > 1 else None)
        whole_step_xla = bool(self.config.compile) and self._xla_gradients is None

        def step(*batch):
            self.trace_count += 1 if not tf.executing_eagerly() else 0  # Python runs only while tracing
            return strategy.run(self._replica_step, args=(batch,))

        if self.execution == "eager":
            return lambda batch: step(*batch)
        compiled = tf.function(step, jit_compile=whole_step_xla, reduce_retracing=True)
        return lambda batch: compiled(*batch)

    def step(self) -> None:
        """One training step on the next batch of the pool, or of the feed (dispatched, not waited for)."""
        if self.feed is not None:
            self._step_on(self._take())
            return
        batch = self.batches[self._next]
        self._next = (self._next + 1) % len(self.batches)
        self._step_on(batch)

    def _step_on(self, batch: Batch) -> None:
        traces, t0 = self.trace_count, time.perf_counter()
        with tf.device(self.device):
            self._loss = self.step_fn(batch)
        if self.trace_count > traces:  # this call traced (and compiled) the step: its whole time counts as compilation
            self.trace_s += time.perf_counter() - t0

    # Read by the harness after each chunk: a step traced again for shapes it has seen is a defect.
    @property
    def compile_count(self) -> int | None:
        return self.trace_count if self.execution == "graph" and self.task.host_step is None else None

    @property
    def compile_s(self) -> float | None:
        return self.trace_s if self.compile_count is not None else None

    def _sync(self) -> None:
        if self.config.device == "cuda":
            tf.test.experimental.sync_devices()

    def _take(self) -> Batch:
        batch, skipped = self.feed.next()
        self.data_skipped += skipped
        return batch

    def run_steps(self, n: int) -> StepTimes:
        if self.feed is not None:
            return self._run_fed_steps(n)
        seconds, units, samples = [], [], []
        for _ in range(n):
            units.append(self._units[self._next])
            samples.append(self._samples[self._next])
            t0 = time.perf_counter()
            self.step()
            self._sync()
            seconds.append(time.perf_counter() - t0)
        return StepTimes(seconds, units, samples)

    def _run_fed_steps(self, n: int) -> StepTimes:
        """Steps on batches from the feed; each step's time includes waiting for its batch."""
        seconds, units, samples, waits = [], [], [], []
        for _ in range(n):
            t0 = time.perf_counter()
            batch = self._take()
            waits.append(time.perf_counter() - t0)
            self._step_on(batch)
            self._sync()
            seconds.append(time.perf_counter() - t0)
            # After the clock: a workload's count may read its batch's lengths back from the device.
            units.append(self._units_of(batch))
            samples.append(self._samples_of(batch))
        return StepTimes(seconds, units, samples, input_wait_s=waits, input_stall_s=list(waits))

    def last_loss(self) -> float:
        return float(self._loss) if self._loss is not None else float("nan")

    def forget_loss(self) -> None:
        self._loss = None

    @property
    def extras(self) -> dict[str, Any]:
        return self.task.extra

    # -- memory ---------------------------------------------------------------------------------
    def _memory_device(self) -> str:
        return self.device.replace("/device:", "").lstrip("/")  # 'GPU:0'

    def _gpu_name(self) -> str:
        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
        return str(details.get("device_name", "GPU"))

    def memory(self) -> dict[str, int | None]:
        """The GPU allocator's peak and current bytes in use (TensorFlow reports none for the CPU)."""
        if self.config.device != "cuda":
            return {}
        info = tf.config.experimental.get_memory_info(self._memory_device())
        return {"peak_allocated_bytes": int(info["peak"]), "allocated_bytes": int(info["current"])}

    def close(self) -> None:
        if self.feed is not None:
            feed, self.feed = self.feed, None
            feed.close()
        self.batches = []
        self._loss = None
        self.step_fn = None
        if self.task.close is not None:
            close, self.task.close = self.task.close, None
            close()
        keras.backend.clear_session(free_memory=True)


def _precision_note(precision: str) -> str:
    return {
        "fp32": "fp32 compute and variables (TensorFloat-32 off)",
        "tf32": "fp32 variables, TensorFloat-32 matmuls and convolutions",
        "bf16": "Keras policy mixed_bfloat16: bf16 compute, fp32 variables and optimizer state, no loss scaling",
        "fp16": "Keras policy mixed_float16: fp16 compute, fp32 variables, dynamic loss scaling",
    }[precision]


def open_session(config, spec, impl, ctx: BuildContext) -> TfSession:
    return TfSession(config, spec, impl, ctx)
