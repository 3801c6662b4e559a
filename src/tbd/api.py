"""The Python API: `tbd.run`, `tbd.measure`, `tbd.sweep`, `tbd.memory`, `tbd.results` (docs/api.md).

    import tbd
    r = tbd.run("timm:resnet18", device="cpu", max_time_s=20)
    print(r.throughput, r.unit, r.ci_pct, r.mfu_pct)
    r = tbd.measure(my_step, samples_per_step=64, flops_per_step=6 * n_params * 64)
    tbd.results(as_frame=True)

Every call stores its record like the CLI does (`store=False` keeps it out; `home=` picks the
store) and returns a `RunResult`. Runs start their child process as `python -m
tbd.harness.child_process`, which imports nothing of the caller: scripts without a main guard,
`python -c`, stdin and notebooks work. `tbd.measure` times the caller's own callable in the
caller's process with the harness's measurement loop. Importing this module imports no
framework.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbd import registry
from tbd.commands.options import key_values
from tbd.config import DEVICES, MIN_MAX_STEPS, PRECISIONS, RunConfig
from tbd.errors import RunFailure, UsageError, unknown
from tbd.frameworks.base import SessionInfo, StepTimes
from tbd.harness.child_process import run_in_fresh_interpreter
from tbd.harness.distributed import launch_distributed
from tbd.harness.measure import derive_metrics
from tbd.harness.measure import measure as measure_loop
from tbd.harness.runner import classify, execute
from tbd.metrics.devices import best_device, gpu_info
from tbd.metrics.sampling import Probe
from tbd.report.fmt import fmt_num
from tbd.results import environment
from tbd.results.record import RunRecord, has_result, headline
from tbd.results.store import Store
from tbd.topology import world_size
from tbd.workloads.custom.spec import FLAVOR as CUSTOM_FLAVOR
from tbd.workloads.custom.spec import spec_for as custom_spec

__all__ = ["RunResult", "run", "measure", "sweep", "memory", "results"]

Progress = Callable[[dict], None] | bool | None


# -- the result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """One run's outcome: the headline numbers as attributes, the whole record in `.record`."""

    record: RunRecord
    stored_in: Path | None = None  # the store's folder, None with store=False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def ok(self) -> bool:
        """Measured and converged: the throughput's 95% CI reached the target."""
        return self.record.status == "ok"

    @property
    def measured(self) -> bool:
        """A throughput was measured, converged or not (status ok, unconverged or insufficient)."""
        return has_result(self.record)

    @property
    def workload(self) -> str:
        return self.record.config["workload"]

    @property
    def config(self) -> dict[str, Any]:
        return self.record.config

    @property
    def unit(self) -> str:
        return self.record.workload.get("unit", "samples")

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record.metrics

    @property
    def memory(self) -> dict[str, Any]:
        return self.record.memory

    @property
    def error(self) -> dict[str, Any] | None:
        return self.record.error

    @property
    def throughput(self) -> float | None:
        """Median steady-state throughput in `unit` per second."""
        return self.metrics.get(f"{self.unit}_per_s")

    @property
    def throughput_ci95(self) -> tuple[float, float] | None:
        """95% confidence interval of the median throughput, (low, high) in `unit` per second."""
        low, high = self.metrics.get(f"{self.unit}_per_s_ci95_low"), self.metrics.get(f"{self.unit}_per_s_ci95_high")
        return (low, high) if low is not None and high is not None else None

    @property
    def ci_pct(self) -> float | None:
        """Half-width of that interval, in percent of the median."""
        return self.metrics.get("throughput_ci95_half_width_pct")

    @property
    def samples_per_s(self) -> float | None:
        return self.metrics.get("samples_per_s")

    @property
    def step_time_ms(self) -> float | None:
        """Median step time in milliseconds."""
        return self.metrics.get("step_time_ms_p50")

    @property
    def mfu_pct(self) -> float | None:
        return self.metrics.get("mfu_pct")

    def to_dict(self) -> dict[str, Any]:
        """The stored form of the record (what `tbd results show ID --json` prints)."""
        return self.record.to_dict()

    def __repr__(self) -> str:
        if not self.measured:
            return f"RunResult({self.workload}, {self.status}: {(self.error or {}).get('message')}, id={self.id})"
        if self.throughput is None:  # a memory profile, or a run with no timed step
            return f"RunResult({self.workload}, {self.record.kind} {self.status}, id={self.id})"
        ci = f" ±{self.ci_pct:.2g}%" if self.ci_pct is not None else " (no CI)"
        mfu = f", MFU {self.mfu_pct:.3g}%" if self.mfu_pct is not None else ""
        status = "" if self.ok else f", {self.status}"  # measured, but the CI missed its target or could not be computed
        return f"RunResult({self.workload}, {fmt_num(self.throughput)} {self.unit}/s{ci}{mfu}{status}, id={self.id})"


def _result(record: RunRecord | dict, store: bool, home: str | Path | None) -> RunResult:
    record = record if isinstance(record, RunRecord) else RunRecord.from_dict(record)
    if not store:
        return RunResult(record)
    target = Store(home)
    target.save(record)
    return RunResult(record, target.home)


def _progress(progress: Progress) -> Callable[[dict], None] | None:
    """True: one updating line on stderr; a callable gets the harness's progress dicts."""
    if progress is True:
        def show(p: dict) -> None:
            ci = f"CI ±{p['ci_pct']:.1f}%" if p["ci_pct"] != float("inf") else "warming up"
            sys.stderr.write(f"\r  step {p['steps']}/{p['max_steps']}  {p['elapsed_s']:.0f} s  {ci}   ")
            sys.stderr.flush()
        return show
    return progress or None


# -- tbd.run ------------------------------------------------------------------------------------


def run_config(workload: str, *, framework: str = "torch", flavor: str = "tiny", device: str = "auto", batch_size: int | None = None,
               precision: str = "fp32", seq_len: int | None = None, hf_config: dict[str, Any] | str | None = None,
               hparams: dict[str, Any] | None = None, options: dict[str, Any] | None = None, **settings: Any) -> RunConfig:
    """The validated RunConfig of `run`'s arguments (bad input: one UsageError naming the fix)."""
    hp = dict(hparams or {})
    if seq_len is not None:
        hp["seq_len"] = seq_len
    if hf_config:
        hp["hf_config"] = key_values(hf_config, "hf_config") if isinstance(hf_config, str) else dict(hf_config)
    fields = dict(workload=workload, framework=framework, flavor=flavor, device=best_device() if device == "auto" else device,
                  batch_size=batch_size, precision=precision, hparams=hp, options=dict(options or {}), **settings)
    return RunConfig.from_dict(fields).validated()


def launch(config: RunConfig, progress: Callable[[dict], None] | None = None, timeout_s: float | None = None) -> RunRecord:
    """Run a validated config: several ranks through torchrun, else a fresh interpreter (isolate)
    or this process."""
    if world_size(config) > 1:
        return launch_distributed(config, progress)
    if not config.isolate:
        return execute(config, progress)
    return run_in_fresh_interpreter(config, progress, timeout_s)


def run(workload: str, *, framework: str = "torch", flavor: str = "tiny", device: str = "auto", batch_size: int | None = None,
        precision: str = "fp32", seq_len: int | None = None, hf_config: dict[str, Any] | str | None = None,
        hparams: dict[str, Any] | None = None, options: dict[str, Any] | None = None, store: bool = True,
        home: str | Path | None = None, progress: Progress = None, timeout_s: float | None = None, **settings: Any) -> RunResult:
    """Measure one workload, as `tbd run` does, and return its result.

    `workload`: a built-in name, `timm:MODEL`, `hf:MODEL`, a plugin's name or `path.py:Object`.
    `settings`: any other RunConfig field (compile, channels_last, seed, max_steps, max_time_s,
    target_ci_pct, isolate, nproc_per_node, ...). `isolate=False` runs in this process.
    """
    config = run_config(workload, framework=framework, flavor=flavor, device=device, batch_size=batch_size, precision=precision,
                        seq_len=seq_len, hf_config=hf_config, hparams=hparams, options=options, **settings)
    return _result(launch(config, _progress(progress), timeout_s), store, home)


# -- tbd.measure --------------------------------------------------------------------------------


class StepSession:
    """The harness's `Session` around a caller's step: `step()` runs it once, `run_steps(n)` times
    n calls with the framework plugin's clock (CUDA events for PyTorch on a GPU)."""

    def __init__(self, step: Callable[[], Any], plugin, device: str, samples: float, units: float, device_name: str):
        self.fn, self.plugin, self.device = step, plugin, device
        self.samples, self.units = samples, units
        self.last_output: Any = None
        self.info = SessionInfo(device_name=device_name, framework_version=_version(plugin),
                                method={"timing": f"{type(plugin.step_clock(device)).__name__} around each call of the step",
                                        "step": "the caller's callable, run in the caller's process (tbd.measure)"})

    def run_steps(self, n: int) -> StepTimes:
        clock = self.plugin.step_clock(self.device)
        clock.start()
        for _ in range(n):
            self.last_output = self.fn()
            clock.lap(self.last_output)
        return StepTimes(clock.stop(), [self.units] * n, [self.samples] * n)

    def step(self) -> None:
        self.last_output = self.fn()

    def last_loss(self) -> float | None:
        """The step's return value as a number (a loss), or None when it returns none."""
        if self.last_output is None:
            return None
        try:
            with warnings.catch_warnings():  # a loss that still requires grad converts fine
                warnings.simplefilter("ignore")
                return float(self.last_output)
        except (TypeError, ValueError, RuntimeError):
            return None

    def forget_loss(self) -> None:
        self.last_output = None

    def memory(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.last_output = None


def _version(plugin) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(plugin.libraries[0]) if plugin.libraries else ""
    except PackageNotFoundError:
        return ""


def framework_of_step(framework: str | None):
    """The plugin of the step's framework: the one named, else the first whose modules the caller
    has imported (a step that trains something has imported its framework)."""
    if framework is not None:
        return registry.framework(framework)
    for name in registry.framework_names():
        plugin = registry.framework(name)
        if any(module in sys.modules for module in plugin.requires):
            return plugin
    names = " or ".join(repr(n) for n in registry.framework_names())
    raise UsageError(f"tbd.measure cannot tell the step's framework (none is imported here); pass framework={names}")


def measure(step: Callable[[], Any], *, samples_per_step: int, unit: str = "samples", units_per_step: float | None = None,
            flops_per_step: float | None = None, count_flops: bool = False, device: str | None = None, framework: str | None = None,
            precision: str = "fp32", name: str | None = None, peak_tflops: float | None = None, max_steps: int = 300,
            max_time_s: float = 60.0, min_timed_steps: int = 20, min_window_s: float = 3.0, target_ci_pct: float = 1.0,
            store: bool = True, home: str | Path | None = None, progress: Progress = None) -> RunResult:
    """Measure the caller's training step (one call of `step()` = one optimizer step) in this process.

    The harness's loop: warm-up detected and excluded, device synchronized by the framework
    plugin's clock, stopped once the 95% CI of the median throughput is within +-target_ci_pct
    (or a budget ends), CPU/NVML sampled over the steady window. `step` may return its loss
    (checked to stay finite). MFU needs FLOPs: `flops_per_step`, or `count_flops=True` to count
    one call with the framework's counter (PyTorch: torch.utils.flop_counter), and the device's
    peak (from tbd's table on known GPUs, or `peak_tflops`). Stored as `custom:<name>`.
    """
    if not callable(step):
        raise UsageError(f"tbd.measure needs a callable that runs one training step, got {type(step).__name__}")
    if isinstance(samples_per_step, bool) or not isinstance(samples_per_step, int) or samples_per_step < 1:
        raise UsageError(f"samples_per_step must be a positive integer (samples one call of the step trains on), got {samples_per_step!r}")
    if flops_per_step is not None and count_flops:
        raise UsageError("give flops_per_step or count_flops=True, not both")
    for label, value in (("flops_per_step", flops_per_step), ("units_per_step", units_per_step), ("peak_tflops", peak_tflops)):
        if value is not None and not value > 0:
            raise UsageError(f"{label} must be a positive number, got {value!r}")
    if unit == "samples" and units_per_step is not None and units_per_step != samples_per_step:
        raise UsageError("units_per_step counts another unit than samples: name it, e.g. unit='tokens'")
    plugin = framework_of_step(framework)
    device = device or best_device()
    check_device_and_precision(device, precision)
    name = name or getattr(step, "__name__", "step").strip("<>") or "step"
    units = float(units_per_step if units_per_step is not None else samples_per_step)
    config = RunConfig(workload=f"custom:{name}", framework=plugin.name, flavor=CUSTOM_FLAVOR, device=device, batch_size=samples_per_step,
                       precision=precision, max_steps=max_steps, max_time_s=max_time_s, min_timed_steps=min_timed_steps,
                       min_window_s=min_window_s, target_ci_pct=target_ci_pct, isolate=False)
    _check_budget(config)
    counted: tuple[float, str] | None = None
    flops_per_sample = flops_per_step / samples_per_step if flops_per_step is not None else None
    spec = custom_spec(name, unit, samples_per_step, units / samples_per_step, flops_per_sample)
    record = RunRecord.for_run(config, spec)
    record.environment = environment.capture(device, plugin.libraries)
    device_name = (gpu_info(0).get("name") or "GPU") if device == "cuda" else environment.cpu_model()
    probe = None
    try:
        if count_flops:  # one call under the counter, before the timed ones (it also warms up)
            counted = (plugin.count_flops(step) / samples_per_step, f"counted with {plugin.capabilities.flop_counter} on one call of the step")
        session = StepSession(step, plugin, device, float(samples_per_step), units, device_name)
        probe = Probe(0 if device == "cuda" else None)
        m = measure_loop(session, config, _progress(progress), probe)
        peak = (peak_tflops * 1e12, "given by the caller (peak_tflops)") if peak_tflops else None
        metrics, method = derive_metrics(m, config, spec, device_name, os.cpu_count() or 1, counted_flops=counted, peak=peak)
        record.metrics, record.method = metrics, {**method, **session.info.method}
        record.environment.update(device_name=device_name, framework_version=session.info.framework_version)
        record.samples = {"step_s": m.step_s, "units": m.units, "samples": m.samples, "chunk_ends": m.chunk_ends}
        record.succeed()
    except RunFailure as exc:
        record.fail(exc.kind, str(exc))
    except UsageError:
        raise
    except Exception as exc:  # the caller's step failed: a failed record with its traceback
        record.fail(**classify(exc, config))
    finally:
        if probe is not None:
            record.memory = probe.close()
    return _result(record, store, home)


def check_device_and_precision(device: str, precision: str) -> None:
    """The checks `tbd.run` makes through RunConfig.validated, for a step tbd does not build."""
    if device not in DEVICES:
        raise unknown("device", device, DEVICES)
    if precision not in PRECISIONS:
        raise unknown("precision", precision, PRECISIONS)
    if device == "cpu" and precision in ("tf32", "fp16"):
        raise UsageError(f"precision {precision} needs a GPU; on the CPU use fp32 or bf16")
    if device == "cuda":
        from tbd.metrics.devices import cuda_available

        if not cuda_available():
            raise UsageError("device cuda was asked for but no NVIDIA GPU is visible here; use device='cpu'")


def _check_budget(config: RunConfig) -> None:
    for label, low in (("max_steps", MIN_MAX_STEPS), ("min_timed_steps", 1)):
        if getattr(config, label) < low:
            raise UsageError(f"{label} must be at least {low}, got {getattr(config, label)}")
    for label in ("max_time_s", "target_ci_pct"):
        if not getattr(config, label) > 0:
            raise UsageError(f"{label} must be a positive number, got {getattr(config, label)}")


# -- tbd.sweep, tbd.memory, tbd.results ---------------------------------------------------------


def sweep(workloads: list[str] | str, *, frameworks: list[str] | str = "*", flavors: list[str] | str = "tiny",
          devices: list[str] | str = "auto", precisions: list[str] | str = "fp32", batch_sizes: list[int] | None = None,
          compile: list[bool] | bool = False, channels_last: bool = False, max_batch: int | None = None, name: str | None = None,
          max_steps: int = 300, max_time_s: float = 60.0, target_ci_pct: float = 1.0, isolate: bool = True,
          home: str | Path | None = None, progress: Progress = None) -> list[RunResult]:
    """Every combination of the axes over the batch sizes, as `tbd sweep` (resumable: points
    stored under the same sweep are not run again). Returns every point's result."""
    from tbd.sweep.engine import SweepRunner
    from tbd.sweep.spec import DEFAULT_BUDGET, SweepSpec, plan

    def names(value):
        return [value] if isinstance(value, str) else list(value)

    spec = SweepSpec(name=name, workloads=names(workloads), frameworks=names(frameworks), flavors=names(flavors), devices=names(devices),
                     precisions=names(precisions), batch_sizes=list(batch_sizes) if batch_sizes else None,
                     compile=[compile] if isinstance(compile, bool) else list(compile), channels_last=channels_last, max_batch=max_batch,
                     budget={**DEFAULT_BUDGET, "max_steps": max_steps, "max_time": max_time_s, "target_ci": target_ci_pct}, isolate=isolate,
                     source="python")
    store = Store(home)

    def point_launch(config: RunConfig, progress_fn=None) -> RunRecord:
        return launch(config.validated(), progress_fn)

    runner = SweepRunner(plan(spec), store, launch=point_launch, on_step=_progress(progress))
    return [RunResult(r if isinstance(r, RunRecord) else RunRecord.from_dict(r), store.home) for r in runner.run().records]


def memory(workload: str, *, framework: str = "torch", flavor: str = "tiny", device: str = "auto", batch_size: int | None = None,
           precision: str = "fp32", warmup: int = 1, store: bool = True, home: str | Path | None = None, **settings: Any) -> dict[str, Any]:
    """Where one training step's memory goes (`tbd memory`): the profile, by category, layer and
    over time; also stored as a run of kind 'memory' unless store=False."""
    from tbd.memory import profiler

    config = run_config(workload, framework=framework, flavor=flavor, device=device, batch_size=batch_size, precision=precision,
                        data_pool=1, isolate=False, **settings)
    plugin = registry.framework(config.framework)
    if not plugin.capabilities.memory_profile:
        raise UsageError(f"tbd memory has no profiler for {plugin.title} yet; use another framework")
    prof = profiler.profile(config, warmup)
    if store:
        record = profiler.memory_record(config, prof)
        record.memory_profile = prof
        Store(home).save(record)
    return prof


RESULT_FILTERS = ("workload", "framework", "flavor", "device", "batch_size", "precision", "status")


def results(limit: int | None = None, *, as_frame: bool = False, home: str | Path | None = None, **filters: Any):
    """Stored runs, newest first: a list of RunResult, or with as_frame=True a pandas DataFrame of
    their headline numbers (pandas must be installed). `filters`: workload, framework, flavor,
    device, precision, status (equality)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"limit must be a positive integer (runs to return) or None for all, got {limit!r}")
    bad = [k for k in filters if k not in RESULT_FILTERS]
    if bad:
        raise UsageError(f"unknown results filter '{bad[0]}'; valid: {', '.join(RESULT_FILTERS)}")
    store = Store(home)
    records = [RunRecord.from_dict(r) for r in store.list(limit, **filters)]
    if not as_frame:
        return [RunResult(r, store.home) for r in records]
    try:
        import pandas
    except ImportError:
        raise UsageError("as_frame=True needs pandas; install it with: pip install pandas") from None
    return pandas.DataFrame([headline(r) for r in records])
