"""Names to code: workloads and framework plugins, imported only when asked for.

A workload lives in `tbd/workloads/<name>/`: its `spec.py` is framework-neutral and always
importable; its implementation for a framework is `<name>/<framework>_impl.py`. A framework is
one plugin, `tbd/frameworks/<name>/` (see `tbd.frameworks.base`); reading its `PLUGIN` imports
no framework. `tbd list` shows both and what each framework needs installed.

Beyond the built-in suite, a workload name can be:
- `FAMILY:MODEL`, a model of a library (`timm:resnet18`, `hf:gpt2`, FAMILIES below): the family's
  `spec.py` makes the spec (`spec_for(model)`), its `<framework>_impl.py` builds it;
- a plugin registered by an installed package under the entry point group `tbd.workloads`;
- a file and an attribute, `./my_workloads.py:MyNet` (stored with its absolute path, so the
  run's child process finds it).
A plugin is either a package laid out like a built-in workload (`spec.py` with `SPEC`, one
`<framework>_impl.py` with `build(ctx)` per framework) or an object (class, instance or module)
with a `spec` (a `WorkloadSpec`) and one `build_<framework>(ctx)` per framework.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

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

# Families of workloads named PREFIX:MODEL. `custom` names the records of `tbd.measure` (a
# user's own step, measured in the user's process): it has a spec but no implementation.
FAMILIES: dict[str, str] = {
    "timm": "tbd.workloads.timm",
    "hf": "tbd.workloads.hf",
    "custom": "tbd.workloads.custom",
}

ENTRY_POINT_GROUP = "tbd.workloads"


@dataclass(frozen=True)
class Workload:
    """A resolved workload name: its spec, where it comes from, and how to find its implementations."""

    name: str
    spec: WorkloadSpec
    source: str  # "built-in", "timm (family)", "plugin from my-dist", "/abs/path.py"
    package: str | None = None  # a package laid out like the built-ins (spec.py, <framework>_impl.py)
    obj: Any = None  # or an object with build_<framework>(ctx)

    def has(self, framework: str) -> bool:
        if self.package is not None:
            return importlib.util.find_spec(f"{self.package}.{framework}_impl") is not None
        return callable(getattr(self.obj, f"build_{framework}", None))

    def implementation(self, framework: str):
        """The module (or module-like object) whose `build(ctx)` builds this workload."""
        if self.package is not None:
            return importlib.import_module(f"{self.package}.{framework}_impl")
        return SimpleNamespace(build=getattr(self.obj, f"build_{framework}"), __name__=f"{self.name}.build_{framework}")


_resolved: dict[str, Workload] = {}


def workload_names() -> list[str]:
    """The built-in suite (what `--workloads '*'` and the demo run)."""
    return list(WORKLOADS)


def plugin_names() -> list[str]:
    """Workloads that installed packages register under the `tbd.workloads` entry point group."""
    return sorted({ep.name for ep in _entry_points()})


def _entry_points():
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def is_family_name(name: str) -> bool:
    return name.partition(":")[0] in FAMILIES and ":" in name


def is_path_name(name: str) -> bool:
    path = name.rpartition(":")[0] if ":" in name else name
    return path.endswith(".py")


def resolve(name: str) -> Workload:
    """The workload a name stands for; an unknown name is one UsageError listing what there is."""
    if name not in _resolved:
        _resolved[name] = _resolve(name)
    return _resolved[name]


def _resolve(name: str) -> Workload:
    if name in WORKLOADS:
        package = WORKLOADS[name]
        return Workload(name, importlib.import_module(f"{package}.spec").SPEC, "built-in", package=package)
    if is_family_name(name):
        family, _, model = name.partition(":")
        if not model:
            raise UsageError(f"'{name}' names no model; e.g. {family}:{_family_module(family).EXAMPLE}")
        return Workload(name, _family_module(family).spec_for(model), f"{family} family", package=FAMILIES[family])
    if is_path_name(name):
        return _from_path(name)
    matches = [ep for ep in _entry_points() if ep.name == name]
    if matches:
        ep = matches[0]
        dist = ep.dist.name if getattr(ep, "dist", None) else "?"
        try:
            obj = ep.load()
        except Exception as exc:
            raise UsageError(f"workload plugin '{name}' (package {dist}, {ep.value}) does not load: {type(exc).__name__}: {exc}; "
                             f"fix or uninstall that package") from None
        return _from_object(name, obj, f"plugin from {dist} ({ep.value})")
    hint = "run 'tbd list' to see them all; or name timm:MODEL, hf:MODEL or ./file.py:Object"
    raise unknown("workload", name, [*WORKLOADS, *plugin_names()], hint)


def family_example(family: str) -> str:
    """A model name of a family, for help texts ("resnet18" for timm)."""
    return _family_module(family).EXAMPLE


def _family_module(family: str) -> ModuleType:
    return importlib.import_module(f"{FAMILIES[family]}.spec")


def _from_path(name: str) -> Workload:
    path, _, attr = name.rpartition(":") if not name.endswith(".py") else (name, "", "")
    if not os.path.isfile(path):
        raise UsageError(f"workload file {path} not found; give a path to a .py file and an object in it, like ./my_workloads.py:MyNet")
    given, path = path, os.path.abspath(path)
    module_name = "tbd_workload_file_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    module = sys.modules.get(module_name)
    if module is None:
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise UsageError(f"workload file {path} fails to import: {type(exc).__name__}: {exc}") from None
    if not attr:
        if _spec_of(module) is not None:  # the file itself is the plugin: a module-level `spec`
            return _from_object(path, module, path)
        raise _name_the_object(given, module)
    if not hasattr(module, attr):
        names = [n for n in vars(module) if not n.startswith("_")]
        raise unknown(f"object in {path}", attr, names)
    return _from_object(f"{path}:{attr}", getattr(module, attr), path)


def _spec_of(obj: Any) -> WorkloadSpec | None:
    spec = getattr(obj, "spec", None) or getattr(obj, "SPEC", None)
    return spec if isinstance(spec, WorkloadSpec) else None


def _name_the_object(path: str, module: ModuleType) -> UsageError:
    """A file given without `:OBJECT`: which of its objects are workloads, or that none is."""
    workloads = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and not isinstance(obj, ModuleType) and _spec_of(obj) is not None]
    if not workloads:
        return UsageError(f"workload file {path} has no workload object (one with a `spec`, a tbd.workloads.base.WorkloadSpec); "
                          f"docs/api.md shows the shape of a plugin")
    return UsageError(f"name the workload object in the file: {path}:OBJECT (objects here: {', '.join(workloads)})")


def _from_object(name: str, obj: Any, source: str) -> Workload:
    # Only a package (a module with __path__) can hold a `spec` submodule; a module loaded from a file cannot.
    is_package = isinstance(obj, ModuleType) and hasattr(obj, "__path__")
    if is_package and importlib.util.find_spec(f"{obj.__name__}.spec") is not None:
        return Workload(name, importlib.import_module(f"{obj.__name__}.spec").SPEC, source, package=obj.__name__)
    spec = _spec_of(obj)
    if spec is None:
        raise UsageError(f"workload '{name}' ({source}) has no `spec` (a tbd.workloads.base.WorkloadSpec); docs/api.md shows the shape of a plugin")
    return Workload(name, spec, source, obj=obj)


def is_workload(name: str) -> bool:
    try:
        resolve(name)
    except UsageError:
        return False
    return True


def get_spec(name: str) -> WorkloadSpec:
    return resolve(name).spec


def source(name: str) -> str:
    """Where a workload comes from, as `tbd list` shows it."""
    return resolve(name).source


def workload_package(name: str) -> str:
    """The package of a built-in workload: `spec.py` and one `<framework>_impl.py` per framework."""
    package = resolve(name).package
    if package is None:
        raise UsageError(f"workload '{name}' is an object, not a package")
    return package


# Framework name -> the package holding its `PLUGIN` (tbd.frameworks.base.FrameworkPlugin);
# order is the order of `tbd list` and the demo.
FRAMEWORKS: dict[str, str] = {
    "torch": "tbd.frameworks.torch",
    "jax": "tbd.frameworks.jax",
    "tf": "tbd.frameworks.tf",
    "mxnet": "tbd.frameworks.mxnet",
}

# Frameworks of the TBD paper that no environment tbd can run in has: name -> why (`tbd list`).
UNAVAILABLE_FRAMEWORKS: dict[str, str] = {
    "cntk": "CNTK (a framework of the TBD paper) cannot be installed beside tbd: its last release, 2.7.post2 (2020), "
            "has wheels for CPython 3.5 and 3.6 only, and tbd's core needs Python 3.11 or newer",
}


def framework_names() -> list[str]:
    return list(FRAMEWORKS)


def framework(name: str):
    """The `FrameworkPlugin` of a framework name (its package is imported, not the framework)."""
    if name in UNAVAILABLE_FRAMEWORKS:
        raise UsageError(f"{UNAVAILABLE_FRAMEWORKS[name]}; choose one of: {', '.join(FRAMEWORKS)}")
    if name not in FRAMEWORKS:
        raise unknown("framework", name, FRAMEWORKS)
    return importlib.import_module(FRAMEWORKS[name]).PLUGIN


def missing_modules(name: str) -> list[str]:
    """Required modules of a framework that are not importable (checked without importing)."""
    return [m for m in framework(name).requires if importlib.util.find_spec(m) is None]


def is_installed(name: str) -> bool:
    return not missing_modules(name)


def has_implementation(workload: str, framework: str) -> bool:
    return resolve(workload).has(framework)


def implementations(workload: str) -> list[str]:
    return [f for f in FRAMEWORKS if has_implementation(workload, f)]


def check_runnable(workload: str, framework_name: str) -> None:
    """Raise a UsageError naming the fix when this pair cannot run here."""
    spec = get_spec(workload)
    plugin = framework(framework_name)
    if not has_implementation(workload, framework_name):
        have = ", ".join(implementations(workload)) or "none"
        if workload.startswith("custom:"):
            raise UsageError(f"{workload} is a step measured with tbd.measure(...) in its own process; it cannot be run by name")
        raise UsageError(f"{workload} has no {framework_name} implementation yet; available: {have}")
    missing = missing_modules(framework_name)
    if missing:
        raise UsageError(f"framework '{framework_name}' is not installed (missing {', '.join(missing)}); install it with: {plugin.install}")
    absent = [m for m in spec.requires if importlib.util.find_spec(m) is None]
    if absent:
        raise UsageError(f"workload '{workload}' needs {', '.join(absent)}, not installed here; install with: {spec.install}")


def check_model(config) -> None:
    """A family's deeper check of its model name and settings (timm: the model exists; hf: the
    config keys are known), in the family's implementation: it imports the library, so only
    family workloads are checked this way."""
    if is_family_name(config.workload):
        check = getattr(load_implementation(config.workload, config.framework), "check", None)
        if check is not None:
            check(config)


def check_data(workload: str, framework: str) -> None:
    """A workload trains from a dataset on disk in a framework when its implementation turns a
    loader's host batch into its own batch (`from_host(host, ctx, device)`); it is imported here."""
    if getattr(load_implementation(workload, framework), "from_host", None) is None:
        raise UsageError(f"{workload} in {framework} has no dataset reader yet (only synthetic data); drop --data or use another --framework")


def load_implementation(workload: str, framework: str):
    check_runnable(workload, framework)
    return resolve(workload).implementation(framework)
