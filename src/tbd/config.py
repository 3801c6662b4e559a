"""Typed run configuration and its validation.

`RunConfig` is what one measured run needs; everything that reaches it from flags or TOML goes
through `RunConfig.validated()`, which turns bad input into one-line `UsageError`s.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from tbd import registry, topology
from tbd.workloads.base import MAX_HOST_PROCESSES_PER_CORE
from tbd.errors import UsageError, unknown

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
DEVICES = ("cpu", "cuda")
MAX_BATCH = 2**31 - 1  # beyond any device's memory; stops overflowing sizes before a run starts
MAX_SEED = 2**32 - 1  # what every framework's and NumPy's generators take
MIN_MAX_STEPS = 2  # step 0 compiles and is never timed: one step measures nothing


@dataclass
class RunConfig:
    workload: str
    framework: str = "torch"
    flavor: str = "tiny"
    device: str = "cpu"
    batch_size: int | None = None  # None: the flavor's batch size
    precision: str = "fp32"
    compile: bool = False  # torch.compile for PyTorch; JAX steps are always jit-compiled
    channels_last: bool = False
    seed: int = 0
    # Measurement budget: stop when the throughput CI is tight enough or a budget runs out.
    max_steps: int = 300
    max_time_s: float = 60.0
    min_timed_steps: int = 20
    min_window_s: float = 3.0  # at least this long steady, so NVML and energy readings mean something
    target_ci_pct: float = 1.0  # half-width of the 95% CI of the throughput, in percent
    data_pool: int = 2  # synthetic batches kept on the device and rotated (1 = one fixed batch)
    isolate: bool = True  # run in a child process so a crash or OOM becomes a failed run
    # The interpreter of the run's child: another environment's python (`--python`, `--env`), whose
    # tbd and framework run the workload; None: the interpreter running tbd.
    python: str | None = None
    # Analysis (tbd.analysis): a kernel trace of a few steady steps after the timed ones.
    profile: bool = False
    profile_steps: int | None = None  # steps to trace (--profile-steps, tbd tune); None: enough for NVML's window on a GPU, a few on a CPU
    # tbd tune's trials: with profile_steps, fewer (at least 2) where they would take longer than
    # profile_max_s; no trace at all where the throughput (units/s) stays below profile_min_rate.
    profile_max_s: float | None = None
    profile_min_rate: float | None = None
    ncu: bool = False
    # Scale-out (tbd.harness.distributed): processes per node, nodes, this node's rank, rendezvous.
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    parallel: str = "ddp"  # ddp or fsdp2 (PyTorch)
    ddp_bucket_mb: float = 25.0  # DDP gradient bucket size, MiB (PyTorch's default: 25)
    hparams: dict[str, Any] = field(default_factory=dict)  # overrides of the flavor's hparams
    # Settings of the framework's plugin that change speed, not the model (e.g. PyTorch's
    # compile_mode, sdpa_backend); the plugin's Capabilities.options names the valid keys.
    options: dict[str, Any] = field(default_factory=dict)
    # A dataset on disk instead of synthetic batches (docs/data.md): its path, the loader's
    # worker processes (None: a default for the machine, filled in by validated()), batches
    # prepared ahead, and where JPEGs are decoded (cpu in the workers, gpu on the device).
    data: str | None = None
    workers: int | None = None
    prefetch: int = 2
    decode: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        bad = [k for k in data if k not in names]
        if bad:
            raise unknown("run option", bad[0], names)
        return cls(**data)

    def validated(self) -> "RunConfig":
        """Check every field, filling the flavor's batch size; bad input is one UsageError.
        The framework's own rules (precisions, parallel strategies, options) are its plugin's."""
        # A file workload is stored by its absolute path, so a child process or a later report finds it.
        self.workload = registry.resolve(self.workload).name
        spec = registry.get_spec(self.workload)
        plugin = registry.framework(self.framework)
        flavor = spec.flavor(self.flavor)
        if self.batch_size is None:
            self.batch_size = flavor.batch_size
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= MAX_BATCH:
            raise UsageError(f"batch size must be a positive integer up to {MAX_BATCH:,} ({spec.batch_counts}), got {self.batch_size}; "
                             f"try --batch-size {flavor.batch_size}")
        if (limit := spec.host_batch_limit()) is not None and self.batch_size > limit:
            raise UsageError(f"{self.workload}'s batch counts {spec.batch_counts} on this host's {os.cpu_count() or 1} cores: {self.batch_size:,} is more "
                             f"than {MAX_HOST_PROCESSES_PER_CORE} a core, where they only take turns; use --batch-size {limit} or less")
        if self.batch_size < flavor.min_batch:
            raise UsageError(f"{self.workload} {self.flavor} trains at batch {flavor.min_batch} or more ({flavor.min_batch_note}); "
                             f"use --batch-size {flavor.min_batch} or a larger flavor")
        if self.precision not in PRECISIONS:
            raise unknown("precision", self.precision, PRECISIONS)
        if self.device not in DEVICES:
            raise unknown("device", self.device, DEVICES)
        if self.device == "cpu" and self.precision in ("tf32", "fp16"):
            raise UsageError(f"precision {self.precision} needs a GPU; on the CPU use fp32 or bf16")
        if self.channels_last and not spec.convolutional:
            raise UsageError(f"--channels-last applies to convolutional workloads, not {self.workload}; drop the flag")
        if spec.precisions is not None and self.precision not in spec.precisions:
            raise UsageError(f"{self.workload} runs in {' or '.join(spec.precisions)} only ({spec.precisions_note}); drop --precision {self.precision}")
        for name, low in (("max_steps", MIN_MAX_STEPS), ("min_timed_steps", 1), ("data_pool", 1)):
            if getattr(self, name) < low:
                why = " (step 0 compiles and is never timed)" if name == "max_steps" else ""
                raise UsageError(f"{name.replace('_', '-')} must be at least {low}{why}, got {getattr(self, name)}")
        if self.profile_steps is not None and (isinstance(self.profile_steps, bool) or not isinstance(self.profile_steps, int) or self.profile_steps < 1):
            raise UsageError(f"profile-steps must be a positive integer, got {self.profile_steps!r}; e.g. --profile-steps 5")
        for name in ("profile_max_s", "profile_min_rate"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) or value <= 0):
                raise UsageError(f"{name} must be a finite positive number or None, got {value!r}")
        # nan and inf pass `> 0`; they would fail the run and reach the record (not strict JSON).
        for name, what in (("max_time_s", "max-time"), ("target_ci_pct", "target-ci"), ("ddp_bucket_mb", "ddp-bucket-mb"), ("min_window_s", "min-window")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) or value < 0 or (value == 0 and name != "min_window_s"):
                raise UsageError(f"{what} must be a finite positive number, got {value}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed}; e.g. --seed 0")
        if "seq_len" in self.hparams and "seq_len" not in flavor.hparams:
            if not spec.sequence_hparam:
                with_one = "hf:MODEL and gpt (its context, block_size)"
                raise UsageError(f"{self.workload} has no sequence length to set; --seq-len (seq_len) goes with {with_one}")
            self.hparams = {spec.sequence_hparam if k == "seq_len" else k: v for k, v in self.hparams.items()}
        if "hf_config" in self.hparams and "hf_config" not in flavor.hparams:
            raise UsageError(f"{self.workload} has no Hugging Face config to set; --hf-config (hf_config) goes with hf:MODEL workloads, "
                             f"e.g. hf:gpt2 --hf-config n_layer=2")
        unknown_hp = [k for k in self.hparams if k not in flavor.hparams]
        if unknown_hp:
            raise unknown(f"hyperparameter of {self.workload}", unknown_hp[0], flavor.hparams)
        for name, value in self.hparams.items():
            check_hparam(self.workload, name, value, flavor.hparams[name])
        plugin.check(self, spec)
        if self.python is not None:  # the other interpreter has the framework, not necessarily this one
            self._check_other_interpreter()
        else:
            registry.check_runnable(self.workload, self.framework)
        if self.device == "cuda":  # before check_model: no GPU is said at once, without importing timm or transformers
            from tbd.metrics.devices import cuda_available

            if not cuda_available():
                raise UsageError("device cuda was asked for but no NVIDIA GPU is visible here; use --device cpu")
        if self.python is None:
            registry.check_model(self)  # timm:/hf: models: the name and config exist (imports the library)
        topology.validate_topology(self)
        self._validate_data(spec, plugin)
        return self

    def _check_other_interpreter(self) -> None:
        from tbd.results import interpreters

        self.python = interpreters.resolve_path(self.python)
        if not registry.has_implementation(self.workload, self.framework):
            have = ", ".join(registry.implementations(self.workload)) or "none"
            raise UsageError(f"{self.workload} has no {self.framework} implementation yet; available: {have}")
        if not self.isolate:
            raise UsageError("--in-process runs in this interpreter; drop --in-process to run in --python/--env")
        if topology.world_size(self) > 1:
            raise UsageError("--python/--env runs one process; runs of several ranks use the interpreter running tbd (drop --nproc-per-node/--nnodes)")
        interpreters.check_config(self)

    def _validate_data(self, spec, plugin) -> None:
        """Loader settings, and the dataset's fast check (layout, named files, a sample decoded)
        before anything runs: bad data is one line naming the file."""
        if self.data is None:
            if self.decode != "cpu" or self.workers is not None:
                raise UsageError("--workers and --decode set how a dataset on disk is read; add --data PATH (or drop them)")
            return
        from tbd.data import recipes
        from tbd.data.base import default_workers

        recipes.require(spec)
        caps = plugin.capabilities
        if not caps.data_loader:
            raise UsageError(f"--data is not available for {plugin.title} yet; use another --framework")
        registry.check_data(self.workload, self.framework)
        if self.workers is None:
            self.workers = default_workers(self.device, self.nproc_per_node)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise UsageError(f"--workers must be 0 (load in the training process) or more, got {self.workers}")
        if isinstance(self.prefetch, bool) or not isinstance(self.prefetch, int) or self.prefetch < 1:
            raise UsageError(f"--prefetch must be at least 1 batch, got {self.prefetch}")
        if self.decode not in recipes.DECODES:
            raise unknown("--decode", self.decode, recipes.DECODES)
        if self.decode == "gpu":
            if not recipes.gpu_decodable(spec):
                raise UsageError(f"--decode gpu applies to ImageNet-style JPEG folders (resnet50, inception_v3); {self.workload} "
                                 f"reads {recipes.layout(spec)}: drop --decode gpu")
            if not caps.gpu_decode:
                able = [name for name in registry.framework_names()
                        if name not in registry.UNAVAILABLE_FRAMEWORKS and registry.framework(name).capabilities.gpu_decode]
                raise UsageError(f"--decode gpu is not available for {plugin.title} (its loader decodes on the CPU); drop --decode gpu"
                                 + (f", or use --framework {' or '.join(able)}" if able else ""))
            if self.device != "cuda":
                raise UsageError("--decode gpu decodes on the GPU; use --device cuda, or --decode cpu")
        self.data = recipes.checked(spec, self.data, self.resolved_hparams(), self.batch_size, self.seed, self.decode)

    def resolved_hparams(self) -> dict[str, Any]:
        flavor = registry.get_spec(self.workload).flavor(self.flavor)
        return {**flavor.hparams, **self.hparams}

    def resolved_flavor(self):
        """The flavor with this run's hyperparameter overrides (--seq-len, an API's hparams, the
        longest inputs of a max-batch probe): what its units and FLOPs per sample are counted on."""
        flavor = registry.get_spec(self.workload).flavor(self.flavor)
        return dataclasses.replace(flavor, hparams=self.resolved_hparams())


# Counts that may be 0 where their default is not (no warm-up; a frozen backbone).
ZERO_COUNT_HPARAMS = ("warmup_steps", "trainable_layers")


def check_hparam(workload: str, name: str, value: Any, default: Any) -> None:
    """An override has its default's type, and a size or count stays positive: a number the
    model cannot be built with is one line here, not a failed run (tbd.run, sweep files)."""
    if isinstance(default, bool) or isinstance(default, str):
        if type(value) is not type(default):
            raise UsageError(f"{workload} hyperparameter {name} takes a {type(default).__name__} (default {default!r}), got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{workload} hyperparameter {name} takes an integer (default {default}), got {value!r}")
        low = 0 if default < 1 or name in ZERO_COUNT_HPARAMS else 1
        if value < low:
            raise UsageError(f"{workload} hyperparameter {name} must be at least {low} (default {default}), got {value}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) or (default >= 0 and value < 0):
            raise UsageError(f"{workload} hyperparameter {name} takes a finite number{' of 0 or more' if default >= 0 else ''} "
                             f"(default {default:g}), got {value!r}")


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False
