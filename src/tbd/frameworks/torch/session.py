"""PyTorch sessions: device placement, precision, channels_last, torch.compile, timed steps.

A workload's `torch_impl.build(ctx)` returns a `TorchTask`; `open_session` turns it into a
`TorchSession` (the plugin's `Session`). On CUDA each step is bracketed by CUDA events and the host synchronizes once per
`run_steps` call, so timing adds no per-step host stall; on the CPU, ops are synchronous and a
host clock per step is exact.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tbd.frameworks.torch import distributed as torch_distributed
from tbd.errors import RunFailure, UsageError
from tbd.frameworks.base import BuildContext, SessionInfo, StepTimes, synthetic_data_method
from tbd.frameworks.torch.compiles import CompileCounter
from tbd.metrics.conditions import intra_op_threads
from tbd.results.environment import cpu_model

Batch = Sequence[Any]


@dataclass
class TorchTask:
    model: nn.Module
    # Called once the model is on its device, so fused/foreach kernels match the device.
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    # One synthetic batch on `device`, reproducible from `generator`.
    make_batch: Callable[[torch.Generator, torch.device], Batch]
    # Forward pass and loss of one batch (runs under autocast for bf16/fp16).
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    # Throughput units and samples in a batch; default: batch size x units per sample.
    units: Callable[[Batch], float] | None = None
    samples: Callable[[Batch], float] | None = None
    # Workloads with their own update rule (several optimizers, rollouts) replace the whole
    # step: called with (session, batch), returns the loss tensor to report.
    train_step: Callable[["TorchSession", Batch], torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Keyword arguments of torch.compile under --compile (mode, fullgraph), where a workload wants them.
    compile_options: dict[str, Any] = field(default_factory=dict)
    # Releases what build() started beyond tensors (a pool of actor processes); called once.
    close: Callable[[], None] | None = None
    # Count the step's FLOPs with torch.utils.flop_counter (one untimed step at session start),
    # for workloads without an analytic count (timm:/hf: models, plugins that ask for it).
    count_flops: bool = False


PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _set_precision_flags(precision: str, device: torch.device, autotune: bool = True) -> dict[str, Any]:
    """fp32 means true fp32 (no TF32); tf32 enables it for matmul and cuDNN; under autocast the
    library defaults stay, as in the public references."""
    if device.type == "cuda":
        if precision == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        elif precision == "tf32":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = autotune
    return {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def _set_cpu_threads(config) -> dict[str, Any]:
    """One intra-op thread per usable CPU, shared between the ranks of a run on this host: more
    threads than cores only adds contention (and torch counts cores the process may not use).
    The option threads=N sets the count (`tbd tune` tries fewer)."""
    threads = intra_op_threads(processes=int(getattr(config, "nproc_per_node", 1) or 1))
    asked = str(config.options.get("threads", "")).strip()
    if asked:
        if not asked.isdigit() or int(asked) < 1:
            raise UsageError(f"option threads={asked} must be a positive integer; e.g. --option threads=4")
        threads = {"intra_op": int(asked), "source": "option threads"}
    if torch.get_num_threads() != threads["intra_op"]:
        torch.set_num_threads(threads["intra_op"])
    return threads


def _cudnn_autotune(config, spec) -> bool:
    """cuDNN autotuning: on for fixed shapes (each new shape is benchmarked once), off where they
    vary (it would benchmark every step), unless the option cudnn_benchmark says otherwise."""
    asked = config.options.get("cudnn_benchmark", "auto")
    return (not spec.variable_shapes) if asked == "auto" else asked == "on"


def _set_allocator(config, device: torch.device) -> str:
    """The option allocator=expandable_segments: segments that grow in place, so a large batch
    fragments the cache less. Set before the session allocates; later segments follow it."""
    setting = config.options.get("allocator", "default")
    if setting == "expandable_segments" and device.type == "cuda":
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")
    return setting


def optimizers_of(optimizer: torch.optim.Optimizer, extra: dict[str, Any]) -> list[torch.optim.Optimizer]:
    """The session's optimizer and any other the workload built (kept in its `extra`, one level deep)."""
    found = [optimizer]
    for value in extra.values():
        for item in value.values() if isinstance(value, dict) else [value]:
            if isinstance(item, torch.optim.Optimizer) and all(item is not o for o in found):
                found.append(item)
    return found


def set_optimizer_kernels(optimizers: list[torch.optim.Optimizer], kind: str) -> str:
    """The option optimizer=fused|foreach|for-loop, set on each parameter group before the first
    step (the groups' `fused`/`foreach` flags are what the update reads; no state exists yet).
    An optimizer without such an implementation is an error naming it, not a silent no-op."""
    if kind == "auto":
        return "the workload's choice"
    for opt in optimizers:
        accepts = inspect.signature(type(opt).__init__).parameters
        if kind in ("fused", "foreach") and kind not in accepts:
            raise RunFailure(f"option optimizer={kind}: {type(opt).__name__} has no {kind} implementation; drop the option")
        for group in opt.param_groups:
            if "fused" in accepts:
                group["fused"] = kind == "fused"
            if "foreach" in accepts:
                group["foreach"] = kind == "foreach"
    return kind


def _to_memory_format(batch: Batch, fmt: torch.memory_format) -> Batch:
    return type(batch)(t.contiguous(memory_format=fmt) if isinstance(t, torch.Tensor) and t.dim() == 4 else t for t in batch)


def compile_mode(options: dict[str, Any]) -> dict[str, Any]:
    """torch.compile's `mode` from the run's torch options (compile_mode), if not the default."""
    mode = options.get("compile_mode", "default")
    return {} if mode == "default" else {"mode": mode}


class TorchSession:
    def __init__(self, config, spec, task: TorchTask, ctx: BuildContext, from_host: Callable | None = None):
        self.config = config
        self.device = torch.device(config.device)
        self.task = task
        self.threads = _set_cpu_threads(config) if self.device.type == "cpu" else {"intra_op": torch.get_num_threads(), "source": "torch default"}
        flags = _set_precision_flags(config.precision, self.device, autotune=_cudnn_autotune(config, spec))
        allocator = _set_allocator(config, self.device)
        self.model = task.model.to(self.device)
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # Under torchrun: DDP or FSDP2 (a no-op in a single process); before the optimizer.
        self.model = torch_distributed.wrap_model(self.model, config)
        self.optimizer = task.make_optimizer(self.model)
        optimizer_kernels = set_optimizer_kernels(optimizers_of(self.optimizer, task.extra), config.options.get("optimizer", "auto"))
        compile_options = {**task.compile_options, **compile_mode(config.options)}
        self.train_model = torch.compile(self.model, **compile_options) if config.compile else self.model
        # Under --compile, compilations during the steps (the harness flags a step that keeps recompiling).
        self._compiles = CompileCounter() if config.compile else None
        dtype = PRECISION_DTYPES.get(config.precision)
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler(self.device.type) if config.precision == "fp16" else None

        # A dataset on disk (--data): batches come from a loader feed, one per step; else
        # synthetic batches made once and kept on the device.
        self.feed = None
        self.data_skipped: list[str] = []  # corrupt files the loader skipped (and replaced)
        self._per_sample = spec.units_per_sample(config.resolved_flavor())
        self._batch_size = ctx.batch_size
        if config.data:
            from tbd.frameworks.torch.data import open_feed

            self.feed, data_method = open_feed(config, spec, from_host, ctx, self.device, lambda b: _to_memory_format(b, memory_format))
            self.batches = []
        else:
            generator = torch.Generator(device=self.device).manual_seed(torch_distributed.data_seed(config))
            self.batches = [_to_memory_format(task.make_batch(generator, self.device), memory_format) for _ in range(config.data_pool)]
            data_method = synthetic_data_method(config, spec)
        self._units = [self._units_of(b) for b in self.batches]
        self._samples = [self._samples_of(b) for b in self.batches]
        self._next = 0
        self._loss: torch.Tensor | None = None
        flops_per_sample = self._count_flops() if task.count_flops else None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.info = SessionInfo(
            device_name=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else cpu_model(),
            framework_version=torch.__version__,
            num_parameters=self.num_parameters,
            flops_per_sample=flops_per_sample,
            flops_note="counted with torch.utils.flop_counter on one training step (forward + backward, eager), not analytic"
                       if flops_per_sample is not None else "",
            method={
                "timing": ("CUDA events around each step, one host sync per chunk" if self.device.type == "cuda"
                           else "host clock per step (CPU ops are synchronous)"),
                "data": data_method,
                "compile": f"torch.compile ({compile_options or 'default mode'})" if config.compile else "eager",
                **({"compile_count": "torch.compile compilations during the step calls (Dynamo's compile callbacks: frames "
                                     "traced or retraced, lazy backward graphs, CUDA graph recordings), with their seconds"}
                   if config.compile else {}),
                "autocast": str(dtype).replace("torch.", "") if dtype else None,
                "grad_scaler": self.scaler is not None,
                "memory_format": "channels_last" if config.channels_last else "contiguous",
                "precision_flags": flags,
                "optimizer": type(self.optimizer).__name__,
                "optimizer_kernels": optimizer_kernels,
                "allocator": allocator,
                "intra_op_threads": self.threads["intra_op"],
                "threads": {**self.threads, "inter_op": torch.get_num_interop_threads()},
            },
        )

    def _units_of(self, batch: Batch) -> float:
        return float(self.task.units(batch)) if self.task.units else self._batch_size * self._per_sample

    def _samples_of(self, batch: Batch) -> float:
        return float(self.task.samples(batch)) if self.task.samples else float(self._batch_size)

    def _take(self) -> Batch:
        """The next batch from the loader feed; counts the files it skipped."""
        batch, skipped = self.feed.next()
        self.data_skipped += skipped
        return batch

    def step(self) -> None:
        """One training step on the next batch (of the pool, or from the loader), not timed and
        not synchronized."""
        if self.feed is not None:
            self._train(self._take())
            return
        batch = self.batches[self._next]
        self._next = (self._next + 1) % len(self.batches)
        self._train(batch)

    @property
    def compile_count(self) -> int | None:
        """Compilations so far under --compile (None in eager mode: nothing compiles)."""
        return self._compiles.count if self._compiles is not None else None

    @property
    def compile_s(self) -> float | None:
        return self._compiles.seconds if self._compiles is not None else None

    def _train(self, batch: Batch) -> None:
        with self._compiles.counting() if self._compiles is not None else contextlib.nullcontext():
            self._train_step(batch)

    def _train_step(self, batch: Batch) -> None:
        if self.task.train_step is not None:
            self._loss = self.task.train_step(self, batch).detach()
            return
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.task.loss(self.train_model, batch)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self._loss = loss.detach()

    def _count_flops(self) -> float:
        """FLOPs per sample of forward + backward on the first batch, counted in eager mode
        (the optimizer update is left out, as in the analytic counts); gradients are dropped."""
        from tbd.frameworks.torch.custom import count_flops

        batch = self.batches[0]

        def forward_backward():
            with self.autocast():
                loss = self.task.loss(self.model, batch)
            loss.backward()

        flops = count_flops(forward_backward)
        self.optimizer.zero_grad(set_to_none=True)
        return flops / self._samples[0]

    def run_steps(self, n: int) -> StepTimes:
        if self.feed is not None:
            return self._run_fed_steps(n)
        units, samples = [], []
        if self.device.type == "cuda":
            events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
            events[0].record()
            for i in range(n):
                units.append(self._units[self._next])
                samples.append(self._samples[self._next])
                self.step()
                events[i + 1].record()
            events[-1].synchronize()
            seconds = [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(n)]
        else:
            seconds = []
            for _ in range(n):
                units.append(self._units[self._next])
                samples.append(self._samples[self._next])
                t0 = time.perf_counter()
                self.step()
                seconds.append(time.perf_counter() - t0)
        return StepTimes(seconds, units, samples)

    def _run_fed_steps(self, n: int) -> StepTimes:
        """Steps on batches from the loader, with the time each waited for its batch: on the host
        (blocked in the feed) and, on a GPU, on the device (idle from the previous step's last
        kernel until the batch was ready: CUDA events, read after the one sync at the end)."""
        units, samples, waits = [], [], []
        cuda = self.device.type == "cuda"
        if cuda:
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
            ready = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            ends[0].record()
        seconds = []
        for i in range(n):
            t0 = time.perf_counter()
            batch = self._take()
            t1 = time.perf_counter()
            waits.append(t1 - t0)
            units.append(self._units_of(batch))
            samples.append(self._samples_of(batch))
            if cuda:
                ready[i].record()
                self._train(batch)
                ends[i + 1].record()
            else:
                self._train(batch)
                seconds.append(time.perf_counter() - t0)  # the wait is part of the step's time
        if not cuda:
            return StepTimes(seconds, units, samples, input_wait_s=waits, input_stall_s=list(waits))
        ends[-1].synchronize()
        seconds = [ends[i].elapsed_time(ends[i + 1]) / 1e3 for i in range(n)]
        stalls = [ends[i].elapsed_time(ready[i]) / 1e3 for i in range(n)]
        return StepTimes(seconds, units, samples, input_wait_s=waits, input_stall_s=stalls)

    def last_loss(self) -> float:
        return float(self._loss) if self._loss is not None else float("nan")

    def forget_loss(self) -> None:
        self._loss = None

    @property
    def extras(self) -> dict[str, Any]:
        """What the workload built beyond model and optimizer (more optimizers, actor pools)."""
        return self.task.extra

    def memory(self) -> dict[str, int | None]:
        if self.device.type != "cuda":
            return {}
        stats = torch.cuda.memory_stats(self.device)
        return {
            "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(self.device)),
            "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(self.device)),
            "allocated_bytes": int(torch.cuda.memory_allocated(self.device)),
            "reserved_bytes": int(torch.cuda.memory_reserved(self.device)),
            "alloc_retries": int(stats.get("num_alloc_retries", 0)),
            "ooms": int(stats.get("num_ooms", 0)),
        }

    def reset_peak_memory(self) -> bool:
        """Restart the allocator's peak counters (the harness does it after the warm-up pass)."""
        if self.device.type != "cuda":
            return False
        torch.cuda.reset_peak_memory_stats(self.device)
        return True

    def close(self) -> None:
        if self.feed is not None:
            feed, self.feed = self.feed, None
            feed.close()
        self.batches.clear()
        if self.task.close is not None:
            close, self.task.close = self.task.close, None
            close()


def open_session(config, spec, impl, ctx: BuildContext) -> TorchSession:
    torch.manual_seed(config.seed)
    return TorchSession(config, spec, impl.build(ctx), ctx, getattr(impl, "from_host", None))


def profiler_range(on: bool) -> None:
    """cudaProfilerStart/Stop around the steps Nsight Compute profiles (tbd.analysis.ncu)."""
    torch.cuda.synchronize()
    (torch.cuda.profiler.start if on else torch.cuda.profiler.stop)()
