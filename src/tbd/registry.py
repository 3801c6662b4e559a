"""Names to code: workloads and framework plugins, imported only when asked for.

A workload lives in `tbd/workloads/<name>/`: its `spec.py` is framework-neutral and always
importable; its implementation for a framework is `<name>/<framework>_impl.py`. A framework is
one plugin, `tbd/frameworks/<name>/` (see `tbd.frameworks.base`); reading its `PLUGIN` imports
no framework. `tbd list` shows both and what each framework needs installed.
"""

from __future__ import annotations

import importlib
import importlib.util

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


def workload_names() -> list[str]:
    return list(WORKLOADS)


def get_spec(name: str) -> WorkloadSpec:
    if name not in WORKLOADS:
        raise unknown("workload", name, WORKLOADS, "run 'tbd list' to see them all")
    return importlib.import_module(f"{WORKLOADS[name]}.spec").SPEC


def workload_package(name: str) -> str:
    """The package of a workload: `spec.py` and one `<framework>_impl.py` per framework."""
    get_spec(name)
    return WORKLOADS[name]


# Framework name -> the package holding its `PLUGIN` (tbd.frameworks.base.FrameworkPlugin);
# order is the order of `tbd list` and the demo.
FRAMEWORKS: dict[str, str] = {
    "torch": "tbd.frameworks.torch",
    "jax": "tbd.frameworks.jax",
}


def framework_names() -> list[str]:
    return list(FRAMEWORKS)


def framework(name: str):
    """The `FrameworkPlugin` of a framework name (its package is imported, not the framework)."""
    if name not in FRAMEWORKS:
        raise unknown("framework", name, FRAMEWORKS)
    return importlib.import_module(FRAMEWORKS[name]).PLUGIN


def missing_modules(name: str) -> list[str]:
    """Required modules of a framework that are not importable (checked without importing)."""
    return [m for m in framework(name).requires if importlib.util.find_spec(m) is None]


def is_installed(name: str) -> bool:
    return not missing_modules(name)


def has_implementation(workload: str, framework: str) -> bool:
    return importlib.util.find_spec(f"{workload_package(workload)}.{framework}_impl") is not None


def implementations(workload: str) -> list[str]:
    return [f for f in FRAMEWORKS if has_implementation(workload, f)]


def check_runnable(workload: str, framework_name: str) -> None:
    """Raise a UsageError naming the fix when this pair cannot run here."""
    spec = get_spec(workload)
    plugin = framework(framework_name)
    if not has_implementation(workload, framework_name):
        have = ", ".join(implementations(workload)) or "none"
        raise UsageError(f"{workload} has no {framework_name} implementation yet; available: {have}")
    missing = missing_modules(framework_name)
    if missing:
        raise UsageError(f"framework '{framework_name}' is not installed (missing {', '.join(missing)}); install it with: {plugin.install}")
    absent = [m for m in spec.requires if importlib.util.find_spec(m) is None]
    if absent:
        raise UsageError(f"workload '{workload}' needs {', '.join(absent)}, not installed here; install with: {spec.install}")


def load_implementation(workload: str, framework: str):
    check_runnable(workload, framework)
    return importlib.import_module(f"{workload_package(workload)}.{framework}_impl")
