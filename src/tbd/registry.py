"""Names to code: workloads and frameworks, imported only when asked for.

`tbd list` shows what is here and what each framework needs installed. A workload lives in
`tbd/workloads/<name>/` (its `spec.py` is framework-neutral and always importable); its
implementation for a framework is `<name>/<framework>_impl.py`.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from tbd.errors import UsageError, unknown
from tbd.workloads.base import WorkloadSpec

# Order is the order `tbd list` and the demo use.
WORKLOADS: dict[str, str] = {
    "resnet50": "tbd.workloads.resnet50",
    "inception_v3": "tbd.workloads.inception_v3",
    "seq2seq": "tbd.workloads.seq2seq",
    "transformer": "tbd.workloads.transformer",
    "faster_rcnn": "tbd.workloads.faster_rcnn",
    "deepspeech2": "tbd.workloads.deepspeech2",
    "wgan": "tbd.workloads.wgan",
    "a3c": "tbd.workloads.a3c",
    "gpt": "tbd.workloads.gpt",
}


@dataclass(frozen=True)
class FrameworkInfo:
    name: str
    adapter: str  # module with `open_session(config, spec, impl)`
    requires: tuple[str, ...]  # importable module names
    install: str  # the pip extra that brings them
    devices: tuple[str, ...]


FRAMEWORKS: dict[str, FrameworkInfo] = {
    "torch": FrameworkInfo("torch", "tbd.frameworks.torch_adapter", ("torch", "torchvision"), "pip install 'tbd[torch]'", ("cpu", "cuda")),
    "jax": FrameworkInfo("jax", "tbd.frameworks.jax_adapter", ("jax", "flax", "optax"), "pip install 'tbd[jax]'", ("cpu", "cuda")),
}


def workload_names() -> list[str]:
    return list(WORKLOADS)


def get_spec(name: str) -> WorkloadSpec:
    if name not in WORKLOADS:
        raise unknown("workload", name, WORKLOADS, "run 'tbd list' to see them all")
    return importlib.import_module(f"{WORKLOADS[name]}.spec").SPEC


def framework(name: str) -> FrameworkInfo:
    if name not in FRAMEWORKS:
        raise unknown("framework", name, FRAMEWORKS)
    return FRAMEWORKS[name]


def missing_modules(name: str) -> list[str]:
    """Required modules of a framework that are not importable (checked without importing)."""
    return [m for m in framework(name).requires if importlib.util.find_spec(m) is None]


def is_installed(name: str) -> bool:
    return not missing_modules(name)


def has_implementation(workload: str, framework_name: str) -> bool:
    return importlib.util.find_spec(f"{WORKLOADS[workload]}.{framework_name}_impl") is not None


def implementations(workload: str) -> list[str]:
    return [f for f in FRAMEWORKS if has_implementation(workload, f)]


def check_runnable(workload: str, framework_name: str) -> None:
    """Raise a UsageError naming the fix when this pair cannot run here."""
    get_spec(workload)
    info = framework(framework_name)
    if not has_implementation(workload, framework_name):
        have = ", ".join(implementations(workload)) or "none"
        raise UsageError(f"{workload} has no {framework_name} implementation yet; available: {have}")
    missing = missing_modules(framework_name)
    if missing:
        raise UsageError(f"framework '{framework_name}' is not installed (missing {', '.join(missing)}); install it with: {info.install}")
    spec = get_spec(workload)
    absent = [m for m in spec.requires if importlib.util.find_spec(m) is None]
    if absent:
        raise UsageError(f"workload '{workload}' needs {', '.join(absent)}, not installed here; install with: {spec.install}")


def load_implementation(workload: str, framework_name: str) -> ModuleType:
    check_runnable(workload, framework_name)
    return importlib.import_module(f"{WORKLOADS[workload]}.{framework_name}_impl")


def load_adapter(framework_name: str) -> ModuleType:
    return importlib.import_module(framework(framework_name).adapter)
