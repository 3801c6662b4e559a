"""tbd: a training benchmark and analysis toolkit.

The public Python API (docs/api.md), loaded on first use so `import tbd` stays light:

    import tbd
    result = tbd.run("resnet50", device="cpu")            # a built-in, timm:NAME, hf:NAME, a plugin
    result = tbd.measure(step, samples_per_step=64)         # your own training step
    tbd.sweep(["resnet50"], batch_sizes=[8, 16]); tbd.memory("gpt"); tbd.results()

The package root imports no deep-learning framework; framework plugins import theirs only when
a run asks for them (see `tbd.frameworks`).
"""

import importlib as _importlib
import types as _types

from tbd.version import __version__

__all__ = ["__version__", "RunResult", "run", "measure", "sweep", "memory", "results"]
_API = frozenset(__all__) - {"__version__"}


class _CallablePackage(_types.ModuleType):
    """`tbd.sweep`, `tbd.memory` and `tbd.results` are subpackages and API functions at once:
    `tbd.results()` calls `tbd.api.results`, `tbd.results.store` is still the module."""

    def __call__(self, *args, **kwargs):
        from tbd import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


for _name in ("sweep", "memory", "results"):  # their __init__ files import nothing
    _importlib.import_module(f"tbd.{_name}").__class__ = _CallablePackage


def __getattr__(name: str):
    # The API pulls in the harness and the store: import it when a name of it is first used.
    if name in _API:
        from tbd import api

        return getattr(api, name)
    raise AttributeError(f"module 'tbd' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)
