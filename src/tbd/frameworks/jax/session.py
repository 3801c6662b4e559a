"""JAX sessions: device placement, precision, one jitted train step, timed steps.

`tbd run resnet50 --framework jax` exercises it. A workload's `jax_impl.build(ctx)` returns a
`JaxTask`; `open_session` turns it into a `JaxSession`. The whole step (forward, backward,
optimizer update) is one XLA executable whose state arguments are donated, so parameters and
optimizer state are updated in place. JAX dispatches asynchronously; a step is timed with the
host clock from the previous step's completion to its own, and the next step is dispatched before
the host waits for it (one step in flight, as a plain training loop runs): waiting for each step
before dispatching the next left the GPU idle while the host dispatched, 9% of resnet50's batch-256
step on an H200 (a plain Flax loop, synced every step: 0.884x of the same loop not synced).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from tbd.errors import RunFailure
from tbd.frameworks.jax import distributed as jax_distributed
from tbd.frameworks.base import BuildContext, CompileTally, SessionInfo, StepTimes, synthetic_data_method
from tbd.results.environment import cpu_model

Batch = Any  # a pytree of arrays on the run's device

# jax.default_matmul_precision governs dots and convolutions alike. fp32 means true fp32 (XLA
# would otherwise use TF32 on Ampere and later); bf16 runs its matmuls in bf16 anyway.
MATMUL_PRECISION = {"fp32": "highest", "tf32": "tensorfloat32", "bf16": "default"}


def compute_dtype(precision: str):
    """The dtype a workload computes in: bf16 activations/matmuls for bf16, fp32 otherwise.
    Parameters and optimizer state stay fp32 in every case."""
    return jnp.bfloat16 if precision == "bf16" else jnp.float32


class TrainState(NamedTuple):
    """Everything a step updates; donated to the step so XLA reuses its buffers."""

    params: Any
    opt_state: Any
    model_state: Any  # non-trained variables, e.g. BatchNorm running statistics
    rng: jax.Array


@dataclass
class JaxTask:
    # (rng) -> (params, model_state): fp32 parameters and e.g. BatchNorm statistics ({} if none).
    init: Callable[[jax.Array], tuple[Any, Any]]
    # (params, model_state, batch, rng, train) -> (scalar loss, new model_state). Traced once
    # inside the jitted step; a bf16 workload casts to bf16 in here (see `compute_dtype`).
    loss: Callable[..., tuple[jax.Array, Any]]
    optimizer: optax.GradientTransformation
    # (key, device) -> one synthetic batch on `device`, reproducible from `key`.
    make_batch: Callable[[jax.Array, Any], Batch]
    # Throughput units and samples in a batch; default: batch size x units per sample.
    units: Callable[[Batch], float] | None = None
    samples: Callable[[Batch], float] | None = None
    # Workloads with their own update rule replace the whole step: a pure function
    # (TrainState, batch) -> (TrainState, loss), jitted by the adapter with the state donated.
    # `opt_state` starts as `optimizer.init(params)` (one transformation may hold several states).
    train_step: Callable[[TrainState, Batch], tuple[TrainState, jax.Array]] | None = None
    # A step that is more than one XLA program (a3c: a round with actor processes) is driven from
    # the host instead: (session, TrainState, batch) -> (TrainState, loss), not jitted, calling the
    # workload's own jitted functions. `lower(session)` then gives the main one, lowered, for the
    # tools that read the compiled step (memory, FLOPs); `close` stops what the step started.
    host_step: Callable[..., tuple[TrainState, jax.Array]] | None = None
    lower: Callable[[Any], Any] | None = None
    close: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _default_step(task: JaxTask) -> Callable[[TrainState, Batch], tuple[TrainState, jax.Array]]:
    def step(state: TrainState, batch: Batch):
        rng, step_rng = jax.random.split(state.rng)

        def loss_of(params):
            return task.loss(params, state.model_state, batch, step_rng, True)

        (loss, model_state), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = task.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, model_state, rng), loss

    return step


# Compilation events JAX reports through jax.monitoring: tracing to a jaxpr, lowering to MLIR,
# and XLA's backend compile. One listener for the process (JAX keeps its listeners forever);
# a session counts only what happens inside its own step calls.
_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
_LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compile_totals = {"seconds": 0.0, "compiles": 0}
_listening = False


def _on_compile_event(event: str, duration_secs: float, **_: Any) -> None:
    if event in (_TRACE_EVENT, _LOWER_EVENT, _BACKEND_COMPILE_EVENT):
        _compile_totals["seconds"] += duration_secs
    if event == _BACKEND_COMPILE_EVENT:
        _compile_totals["compiles"] += 1


def _listen_to_compilations() -> None:
    global _listening
    if not _listening:
        jax.monitoring.register_event_duration_secs_listener(_on_compile_event)
        _listening = True


def _device(kind: str):
    platform = "gpu" if kind == "cuda" else "cpu"
    try:
        return jax.local_devices(backend=platform)[0]  # this process's (one per process under torchrun)
    except RuntimeError:
        raise RunFailure(
            f"JAX sees no {platform.upper()} backend here (jax {jax.__version__}); "
            "install a CUDA build with: pip install 'jax[cuda12]', or use --device cpu"
        ) from None


def step_key_of(key: jax.Array, impl: str) -> jax.Array:
    """The key the train step splits for its random numbers (dropout masks, sampling), by
    `--option prng`: threefry, JAX's default, as split from the run's seed; or a typed key of
    XLA's RngBitGenerator (rbg, unsafe_rbg), whose random bits are cheaper on a GPU, seeded from
    it. Initial parameters and data keep their threefry keys, so only the step's draws differ."""
    if impl == "threefry":
        return key
    seed = int(jax.random.bits(key, dtype=jnp.uint32))
    return jax.random.key(seed, impl=impl)


class JaxSession:
    def __init__(self, config, spec, task: JaxTask, ctx: BuildContext, from_host: Callable | None = None):
        self.config = config
        self.device = _device(config.device)
        self.precision = MATMUL_PRECISION[config.precision]
        key = jax.random.PRNGKey(config.seed)
        init_key, data_key, step_key = jax.random.split(key, 3)
        step_key = step_key_of(step_key, config.options.get("prng", "threefry"))
        with jax.default_device(self.device), jax.default_matmul_precision(self.precision):
            params, model_state = jax.device_put(task.init(init_key), self.device)
            # Jitted: one small program instead of an eagerly compiled op per parameter shape.
            # Committed to the device like the rest: the step's outputs are, and an uncommitted
            # input on the first call would make XLA compile the step a second time.
            opt_state = jax.device_put(jax.jit(task.optimizer.init)(params), self.device)
            self.state: TrainState | None = TrainState(params, opt_state, model_state, jax.device_put(step_key, self.device))
            del params, model_state, opt_state
            self.feed = None  # a dataset on disk (--data): one batch from the loader per step
            self.data_skipped: list[str] = []
            if config.data:
                if jax.process_count() > 1:
                    raise RunFailure("--data with JAX runs in one process for now; drop --nproc-per-node/--nnodes")
                from tbd.frameworks.jax.data import open_feed

                self.feed, data_method = open_feed(config, spec, from_host, ctx, self.device)
                self.batches = []
            else:
                keys = jax.random.split(jax_distributed.data_key(data_key), config.data_pool)
                self.batches = [jax.device_put(task.make_batch(k, self.device), self.device) for k in keys]
                data_method = synthetic_data_method(config, spec)
        self.num_parameters = int(sum(x.size for x in jax.tree_util.tree_leaves(self.state.params)))
        per_sample = spec.units_per_sample(config.resolved_flavor())
        units_fn, samples_fn, n = task.units, task.samples, ctx.batch_size  # not `task`: it is dropped below
        self._units_of = (lambda b: float(units_fn(b))) if units_fn else (lambda b: n * per_sample)
        self._samples_of = (lambda b: float(samples_fn(b))) if samples_fn else (lambda b: float(n))
        self._units = [self._units_of(b) for b in self.batches]
        self._samples = [self._samples_of(b) for b in self.batches]
        # Several processes: replicated state, batches as shards of a global batch (no-op in one).
        self.state, self.batches = jax_distributed.globalize(self.state, self.batches)
        self._next = 0
        self._steps_run = 0  # steps dispatched on the resident batches (the first pass compiles)
        self._loss: jax.Array | None = None
        # Compilations of the train step (read by the harness: a step that keeps recompiling,
        # e.g. for every new sequence length, is a defect it reports).
        _listen_to_compilations()
        self._compiles = CompileTally(_compile_totals)
        # One executable for the whole step; the state is donated so it is updated in place.
        self.step_fn = (functools.partial(task.host_step, self) if task.host_step is not None
                        else jax.jit(task.train_step or _default_step(task), donate_argnums=0))
        self._lower, self._close, self.extra = task.lower, task.close, task.extra
        self.info = SessionInfo(
            device_name=self.device.device_kind if self.device.platform != "cpu" else cpu_model(),
            framework_version=jax.__version__,
            num_parameters=self.num_parameters,
            method={
                "timing": "host clock between consecutive steps' completions (jax.block_until_ready on each step's loss "
                          "after the next step is dispatched: one step in flight)",
                "data": data_method,
                "compile": "XLA jit of the whole train step (always; --compile changes nothing)",
                "compile_flag": bool(config.compile),
                "compile_count": "XLA backend compilations during the step calls (jax.monitoring events), with their "
                                 "tracing, lowering and compile seconds",
                "donation": "train state (params, optimizer state, model state) donated to the step",
                "precision": _precision_note(config.precision),
                "matmul_precision": self.precision,
                "memory_format": "native NHWC (Flax convolutions)",
                "channels_last_flag": bool(config.channels_last),
                "custom_train_step": task.train_step is not None or task.host_step is not None,
                "xla_preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "default (true)"),
                "xla_mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "default"),
                # XLA sizes its CPU thread pool itself at import; recorded, not set
                "intra_op_threads": os.environ.get("OMP_NUM_THREADS") or None,
                "xla_flags": os.environ.get("XLA_FLAGS") or None,
            },
        )
        del task  # the jitted step holds what it needs; keep no other reference to the build

    def run_steps(self, n: int) -> StepTimes:
        if self.feed is not None:
            return self._run_fed_steps(n)
        seconds, units, samples = [], [], []
        step, batches = self.step_fn, self.batches
        with self._compiles.counting(), jax.default_matmul_precision(self.precision):  # part of the jit cache key: traced once
            done = time.perf_counter()  # the device is idle: the last call ended with its last step complete
            in_flight = None

            def complete(loss) -> None:
                nonlocal done
                jax.block_until_ready(loss)
                now = time.perf_counter()
                seconds.append(now - done)
                done = now

            for _ in range(n):
                i = self._next
                units.append(self._units[i])
                samples.append(self._samples[i])
                self.state, self._loss = step(self.state, batches[i])  # queued behind the step in flight
                if in_flight is not None:
                    complete(in_flight)
                    in_flight = None
                if self._steps_run < len(batches):
                    # The first pass compiles each resident batch's shape when it is dispatched: a
                    # step waited for before the next is dispatched keeps that compile in its own time.
                    complete(self._loss)
                else:
                    in_flight = self._loss
                self._steps_run += 1
                self._next = (i + 1) % len(batches)
            if in_flight is not None:
                complete((self.state, in_flight))
        return StepTimes(seconds, units, samples)

    def _run_fed_steps(self, n: int) -> StepTimes:
        """Steps on batches from the loader; each step's time includes waiting for its batch."""
        seconds, units, samples, waits = [], [], [], []
        with self._compiles.counting(), jax.default_matmul_precision(self.precision):
            for _ in range(n):
                t0 = time.perf_counter()
                batch = self._take()
                waits.append(time.perf_counter() - t0)
                units.append(self._units_of(batch))
                samples.append(self._samples_of(batch))
                out = self.step_fn(self.state, batch)
                jax.block_until_ready(out)
                seconds.append(time.perf_counter() - t0)
                self.state, self._loss = out
        return StepTimes(seconds, units, samples, input_wait_s=waits, input_stall_s=list(waits))

    def _take(self) -> Batch:
        batch, skipped = self.feed.next()
        self.data_skipped += skipped
        return batch

    def step(self) -> None:
        """One training step on the next batch of the pool (dispatched, not waited for)."""
        if self.feed is not None:
            with self._compiles.counting(), jax.default_matmul_precision(self.precision):
                self.state, self._loss = self.step_fn(self.state, self._take())
            return
        with self._compiles.counting(), jax.default_matmul_precision(self.precision):
            self.state, self._loss = self.step_fn(self.state, self.batches[self._next])
        self._steps_run += 1
        self._next = (self._next + 1) % len(self.batches)

    @property
    def compile_count(self) -> int:
        return self._compiles.count

    @property
    def compile_s(self) -> float:
        return self._compiles.seconds

    def compiled_step(self):
        """The step as XLA compiled it for the first resident batch (its memory analysis)."""
        with jax.default_matmul_precision(self.precision):
            if self._lower is not None:
                return self._lower(self).compile()
            return self.step_fn.lower(self.state, self.batches[0]).compile()

    def last_loss(self) -> float:
        return float(self._loss) if self._loss is not None else float("nan")

    def forget_loss(self) -> None:
        self._loss = None

    def memory(self) -> dict[str, int | None]:
        try:
            stats = self.device.memory_stats()
        except Exception:  # some backends raise instead of returning None
            stats = None
        if not stats:
            return {}
        names = {
            "peak_bytes_in_use": "peak_allocated_bytes",
            "bytes_in_use": "allocated_bytes",
            "pool_bytes": "reserved_bytes",
            "peak_pool_bytes": "peak_reserved_bytes",
            "bytes_reserved": "bytes_reserved",
            "bytes_limit": "bytes_limit",
            "largest_alloc_size": "largest_alloc_bytes",
            "num_allocs": "num_allocs",
        }
        return {ours: int(stats[theirs]) for theirs, ours in names.items() if stats.get(theirs) is not None}

    def close(self) -> None:
        # Drop every device buffer and the compiled step so the memory really goes back.
        if self._close is not None:
            close, self._close = self._close, None
            close()
        if self.feed is not None:
            feed, self.feed = self.feed, None
            feed.close()
        self.state = None
        self._loss = None
        self.batches = []
        self.step_fn = None
        jax.clear_caches()


def _precision_note(precision: str) -> str:
    return {
        "fp32": "fp32 compute and parameters (matmul/conv precision 'highest', no TF32)",
        "tf32": "fp32 parameters, TF32 matmuls and convolutions ('tensorfloat32')",
        "bf16": "bf16 compute, fp32 parameters and optimizer state, no loss scaling",
    }[precision]


def open_session(config, spec, impl, ctx: BuildContext) -> JaxSession:
    return JaxSession(config, spec, impl.build(ctx), ctx, getattr(impl, "from_host", None))


def profiler_range(on: bool) -> None:
    """cuProfilerStart/Stop (driver API, on the device's primary context, which XLA uses) around
    the steps Nsight Compute profiles (tbd.analysis.ncu)."""
    import ctypes

    lib = ctypes.CDLL("libcuda.so.1")
    ctx = ctypes.c_void_p()
    if lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0) == 0:
        lib.cuCtxSetCurrent(ctx)
    (lib.cuProfilerStart if on else lib.cuProfilerStop)()
