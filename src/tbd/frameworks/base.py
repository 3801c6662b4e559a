"""What the rest of tbd needs from a framework, declared once and imported without any framework.

A framework is one plugin: a `FrameworkPlugin` object (in `tbd/frameworks/<name>/__init__.py`,
registered in `tbd.frameworks.PLUGINS`) that names the modules of its parts, imported only when
used, and says what it can do (`Capabilities`):
- session (`<name>/session.py`): `open_session(config, spec, impl, ctx) -> Session`, which owns
  the model, optimizer and synthetic data on the device and times steps the cheapest correct way
  (CUDA events without per-step host syncs in PyTorch, `block_until_ready` in JAX), and, where
  `Capabilities.ncu` is set, `profiler_range(on)` around the steps Nsight Compute profiles;
- distributed (`<name>/distributed.py`): `setup(config) -> Comm` inside a rank, and
  `profile_comm(session, steps)` (per-rank communication time and overlap from its trace);
- trace (`<name>/trace.py`): `capture(session, steps, path, host, meter)`, a kernel trace of a
  few steps in Chrome-trace JSON for `tbd analyze`;
- memory (`<name>/memory.py`): `profile(config, warmup, **kwargs)`, the memory profile of one step;
- custom (`<name>/custom.py`, optional): `step_clock(device)` and `count_flops(fn)` for a user's
  own step measured with `tbd.measure` (without it: a host clock, no FLOP counter);
- data (`<name>/data.py`, where `Capabilities.data_loader` is set): `open_feed(config, spec,
  from_host, ctx, device) -> (feed, method)`, the framework's loader over a `tbd.data` dataset
  that hands the session one device batch at a time (`next() -> (batch, skipped files)`,
  `samples`, `close()`), for `--data` runs; `open_loader(config, spec, impl, ctx) -> (feed,
  method, sync)`, the feed alone for `tbd data bench`.
`docs/architecture.md` says what adding a framework takes.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from tbd.errors import UsageError

# The host annotation a trace capture puts around the profiled steps (read by tbd.analysis).
WINDOW_NAME = "tbd.profiled_steps"


@dataclass
class StepTimes:
    seconds: list[float]  # wall time of each step, device-synchronized at the window's edges
    units: list[float]  # throughput units each step consumed (images, tokens, ...)
    samples: list[float]  # samples each step consumed
    # With a dataset on disk (RunConfig.data): host seconds each step waited for its batch, and
    # seconds the device sat idle for it (None where the framework cannot tell them apart).
    input_wait_s: list[float] | None = None
    input_stall_s: list[float] | None = None


@dataclass
class SessionInfo:
    device_name: str
    framework_version: str
    method: dict[str, Any] = field(default_factory=dict)  # how steps are timed, compiled, fed
    num_parameters: int | None = None
    # FLOPs of one training step per sample where the session counted them (workloads whose spec
    # has no analytic count, e.g. timm:/hf: models), with how they were counted.
    flops_per_sample: float | None = None
    flops_note: str = ""


class Session(Protocol):
    """A model, its optimizer and resident synthetic batches on one device, ready to train."""

    info: SessionInfo

    def run_steps(self, n: int) -> StepTimes:
        """Run n training steps; return their times after one synchronization at the end."""

    def step(self) -> None:
        """One training step on the next resident batch, not timed and not synchronized."""

    def last_loss(self) -> float:
        """Loss of the most recent step (synchronizes); NaN before the first step."""

    def forget_loss(self) -> None:
        """Drop the reference to the last step's loss (so it is not counted as live memory)."""

    def memory(self) -> dict[str, int | None]:
        """Peak and current device-memory readings of the framework's allocator, in bytes."""

    def close(self) -> None: ...


class Comm(Protocol):
    """The harness's control channel between the ranks of one run: small Python objects."""

    rank: int
    world_size: int
    local_rank: int
    node_rank: int
    backend: str

    def all_gather(self, obj: Any) -> list[Any]: ...

    def broadcast(self, obj: Any, src: int = 0) -> Any: ...

    def close(self) -> None: ...


class StepClock(Protocol):
    """Times the steps of a user's own callable (`tbd.measure`): `start()`, `lap(output)` after
    each step (the step's return value), `stop()` -> seconds of each step, device-synchronized."""

    def start(self) -> None: ...

    def lap(self, output: Any) -> None: ...

    def stop(self) -> list[float]: ...


class HostClock:
    """Host clock per step; `sync(output)` after each step waits for the device (a no-op where
    the framework's ops are synchronous)."""

    def __init__(self, sync: Callable[[Any], None] | None = None):
        self.sync = sync or (lambda output: None)
        self.times: list[float] = []

    def start(self) -> None:
        self.times = [time.perf_counter()]

    def lap(self, output: Any) -> None:
        self.sync(output)
        self.times.append(time.perf_counter())

    def stop(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])]


class CompileTally:
    """A session's compilations and their seconds: what a framework's process-wide compile
    listener added to `totals` ({"compiles": int, "seconds": float}) inside `counting()` blocks
    (the session's step calls). The harness reads `count` and `seconds` as the session's
    `compile_count` and `compile_s` (a step that keeps recompiling is a defect it reports)."""

    def __init__(self, totals: dict[str, float]):
        self.totals = totals
        self.count = 0
        self.seconds = 0.0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        compiles, seconds = self.totals["compiles"], self.totals["seconds"]
        try:
            yield
        finally:
            self.count += int(self.totals["compiles"] - compiles)
            self.seconds += self.totals["seconds"] - seconds


@dataclass(frozen=True)
class BuildContext:
    """What a workload implementation gets to build its model, optimizer and data."""

    hparams: dict[str, Any]  # the flavor's hyperparameters with the run's overrides
    batch_size: int  # this process's share of the global batch, in the spec's batch unit
    device: str
    precision: str
    seed: int
    flavor: str
    options: Mapping[str, Any] = field(default_factory=dict)  # the framework's settings (RunConfig.options)
    data_pool: int = 2  # how many synthetic batches the session keeps resident (RunConfig.data_pool)

    @classmethod
    def for_run(cls, config, batch_size: int) -> "BuildContext":
        """The context of a run; `batch_size` is this process's share of the global batch."""
        return cls(hparams=config.resolved_hparams(), batch_size=batch_size, device=config.device,
                   precision=config.precision, seed=config.seed, flavor=config.flavor, options=dict(config.options),
                   data_pool=config.data_pool)


def synthetic_data_method(config, spec) -> str:
    """The record's words for synthetic data: the resident pool, and how its lengths were drawn
    where they vary (the spec's `synthetic_lengths`)."""
    method = f"synthetic, {config.data_pool} batch(es) resident on the device, rotated"
    return f"{method}; {spec.synthetic_lengths}" if spec.synthetic_lengths else method


@dataclass(frozen=True)
class Tunable:
    """A framework setting `tbd tune` may try (`tbd.analysis.levers` reads these): a run option
    (`--option KEY=VALUE`, a key of `Capabilities.options`) and the values to try, most promising
    first. `values` is a tuple, or a function of the run's config giving one (a thread count from
    the cores); `applies(config, spec)` says where the setting can matter at all."""

    option: str
    values: tuple[str, ...] | Callable[[Any], tuple[str, ...]]
    title: str  # what users know it as: "torch.compile mode"
    devices: tuple[str, ...] = ("cpu", "cuda")
    needs_compile: bool = False  # only meaningful with --compile
    applies: Callable[[Any, Any], bool] | None = None

    def values_for(self, config) -> tuple[str, ...]:
        return tuple(self.values(config)) if callable(self.values) else self.values


@dataclass(frozen=True)
class Capabilities:
    """What a framework's plugin supports; config validation, the CLI, `tbd list` and the
    recommendations read these instead of asking which framework it is."""

    devices: tuple[str, ...] = ("cpu", "cuda")
    devices_note: str = ""  # why a device is missing
    precisions: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16")
    precisions_note: str = ""  # why a precision is missing, with the fix
    # What --compile does: a name ("torch.compile"), or "" where steps are always compiled.
    compile: str = ""
    always_compiled: str = ""  # e.g. "XLA jit of the whole step": --compile changes nothing
    # --channels-last changes the layout of convolutional workloads (else the layout is native).
    channels_last: bool = False
    native_layout: str = ""
    parallel: tuple[str, ...] = ("ddp",)  # data-parallel strategies for several processes
    trace: bool = False  # --profile: a kernel trace for tbd analyze
    comm_trace: bool = False  # per-rank communication time from a trace in distributed runs
    memory_profile: bool = False  # tbd memory
    ncu: bool = False  # --ncu: Nsight Compute pipe utilization
    # Settings of this framework a run may pass (RunConfig.options), name -> meaning.
    options: Mapping[str, str] = field(default_factory=dict)
    # The values an option accepts where they form a closed set (checked before a run starts).
    option_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Option values --compile needs (name -> value), e.g. a graph to compile; checked before a run starts.
    compile_needs: Mapping[str, str] = field(default_factory=dict)
    # Settings `tbd tune` tries beyond the framework-neutral levers (precision, compile, batch...).
    tunables: tuple[Tunable, ...] = ()
    # Levers the recommendations may suggest (tbd.analysis.recommend).
    fused_optimizer: str = ""  # how to fuse the optimizer update, "" if not applicable
    allocator_setting: str = ""  # an allocator setting against fragmentation retries
    # The run options (`--option KEY=VALUE`) that apply those two, so `tbd analyze --verify` and `tbd tune` can.
    fused_optimizer_option: Mapping[str, str] = field(default_factory=dict)
    allocator_option: Mapping[str, str] = field(default_factory=dict)
    # How FLOPs of a user's step are counted (tbd.measure(count_flops=True)), "" if they cannot be.
    flop_counter: str = ""
    # Datasets on disk (--data, docs/data.md): the loader that feeds tbd.data's datasets to the
    # session ("" if none), and how JPEGs are decoded on the device under --decode gpu ("" if not).
    data_loader: str = ""
    gpu_decode: str = ""


@dataclass(frozen=True)
class FrameworkPlugin:
    name: str  # the --framework value
    title: str  # the name users know ("PyTorch")
    requires: tuple[str, ...]  # importable modules it needs
    install: str  # the pip command that brings them
    package: str  # tbd.frameworks.<name>: holds session, distributed, trace, memory modules
    capabilities: Capabilities = Capabilities()
    libraries: tuple[str, ...] = ()  # distributions whose versions a run's record carries
    # Pins an environment of this framework needs beside it (`tbd env create` adds them).
    env_requirements: tuple[str, ...] = ()

    # -- parts, imported on first use ---------------------------------------------------------
    def part(self, name: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.{name}")

    def open_session(self, config, spec, impl, batch_size: int):
        """A session for `config`; `batch_size` is this process's share of the global batch."""
        return self.part("session").open_session(config, spec, impl, BuildContext.for_run(config, batch_size))

    def open_loader(self, config, spec, impl, batch_size: int):
        """The loader feed of a `--data` config alone, without a model (`tbd data bench`):
        (feed, what the record would say about it, a function that waits for the device)."""
        if not self.capabilities.data_loader:
            raise UsageError(f"{self.title} has no loader for datasets on disk yet; use another --framework")
        return self.part("data").open_loader(config, spec, impl, BuildContext.for_run(config, batch_size))

    def profiler_range(self, on: bool) -> None:
        if not self.capabilities.ncu:
            raise UsageError(f"--ncu is not available for {self.title}; drop --ncu")
        self.part("session").profiler_range(on)

    def setup_distributed(self, config) -> Comm:
        return self.part("distributed").setup(config)

    def profile_comm(self, session, steps: int) -> dict[str, Any] | None:
        return self.part("distributed").profile_comm(session, steps) if self.capabilities.comm_trace else None

    def capture_trace(self, session, steps: int, path, host: bool = True, meter=None) -> dict[str, Any]:
        if not self.capabilities.trace:
            raise UsageError(f"--profile has no trace capture for {self.title} yet; drop --profile")
        return self.part("trace").capture(session, steps, path, host, meter)

    def profile_memory(self, config, warmup: int, **kwargs: Any) -> dict[str, Any]:
        if not self.capabilities.memory_profile:
            raise UsageError(f"tbd memory has no profiler for {self.title} yet; use another --framework")
        return self.part("memory").profile(config, warmup, **kwargs)

    def _optional_part(self, name: str) -> ModuleType | None:
        return self.part(name) if importlib.util.find_spec(f"{self.package}.{name}") is not None else None

    def step_clock(self, device: str) -> StepClock:
        """The cheapest exact clock for a user's own step on `device` (tbd.measure)."""
        custom = self._optional_part("custom")
        return custom.step_clock(device) if custom is not None else HostClock()

    def count_flops(self, fn: Callable[[], Any]) -> float:
        """FLOPs of one call of `fn`, counted by the framework (`Capabilities.flop_counter`)."""
        if not self.capabilities.flop_counter:
            raise UsageError(f"{self.title} has no FLOP counter in tbd; pass flops_per_step instead of count_flops=True")
        return self.part("custom").count_flops(fn)

    # -- rules ---------------------------------------------------------------------------------
    def check(self, config, spec) -> None:
        """Raise a one-line UsageError naming the fix when this framework cannot honour `config`."""
        caps = self.capabilities
        if config.device not in caps.devices:
            note = f" ({caps.devices_note})" if caps.devices_note else ""
            raise UsageError(f"{self.title} runs here on {' or '.join(caps.devices)}, not {config.device}{note}; use --device {caps.devices[0]}")
        if config.precision not in caps.precisions:
            note = f" ({caps.precisions_note})" if caps.precisions_note else ""
            raise UsageError(f"precision {config.precision} is not supported for {self.title}{note}; use --precision {' or '.join(caps.precisions)}")
        if config.parallel not in caps.parallel:
            raise UsageError(f"--parallel {config.parallel} is not available for {self.title}; use --parallel {' or '.join(caps.parallel)}")
        if config.compile and not caps.compile:  # a run labelled "+c" would be the same configuration as without
            how = caps.always_compiled or "it has no optional compiler in tbd"
            raise UsageError(f"--compile has nothing to switch on for {self.title}: {how}; drop --compile")
        if config.profile and not caps.trace:
            raise UsageError(f"--profile has no trace capture for {self.title} yet; drop --profile")
        if config.ncu and not caps.ncu:
            raise UsageError(f"--ncu is not available for {self.title}; drop --ncu")
        bad = [k for k in config.options if k not in caps.options]
        if bad:
            valid = ", ".join(caps.options) or "none"
            raise UsageError(f"unknown {self.title} option '{bad[0]}'; valid: {valid}")
        for key, value in config.options.items():
            allowed = caps.option_values.get(key)
            if allowed and str(value) not in allowed:
                raise UsageError(f"{self.title} option {key}={value} is not one of {', '.join(allowed)}; e.g. --option {key}={allowed[0]}")
        for key, needed in caps.compile_needs.items() if config.compile else ():
            if key in config.options and str(config.options[key]) != needed:
                raise UsageError(f"--compile needs {self.title} option {key}={needed}; drop --compile or use --option {key}={needed}")
