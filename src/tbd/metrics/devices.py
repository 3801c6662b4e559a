"""What GPUs are here, asked through NVML so that no framework needs importing."""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def _nvml():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no driver, no library, no GPU: all mean "no NVIDIA GPU"
        return None


def nvml():
    """The initialised pynvml module, or None where NVML is not usable."""
    return _nvml()


def cuda_available() -> bool:
    lib = _nvml()
    try:
        return bool(lib and lib.nvmlDeviceGetCount() > 0)
    except Exception:
        return False


def best_device() -> str:
    return "cuda" if cuda_available() else "cpu"


def gpu_info(index: int = 0) -> dict[str, Any]:
    lib = _nvml()
    if lib is None:
        return {}
    try:
        handle = lib.nvmlDeviceGetHandleByIndex(index)
        name = lib.nvmlDeviceGetName(handle)
        info: dict[str, Any] = {
            "name": name.decode() if isinstance(name, bytes) else name,
            "driver": _text(lib.nvmlSystemGetDriverVersion()),
            "memory_total_bytes": int(lib.nvmlDeviceGetMemoryInfo(handle).total),
            "count": int(lib.nvmlDeviceGetCount()),
        }
        for key, call in (
            ("power_limit_w", lambda: lib.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0),
            ("sm_clock_max_mhz", lambda: lib.nvmlDeviceGetMaxClockInfo(handle, lib.NVML_CLOCK_SM)),
            ("cuda_driver_version", lambda: lib.nvmlSystemGetCudaDriverVersion_v2()),
        ):
            try:
                info[key] = call()
            except Exception:
                pass
        return info
    except Exception:
        return {}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
