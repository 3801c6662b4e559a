"""What GPUs are here, asked through NVML so that no framework needs importing."""

from __future__ import annotations

import functools
import os
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
    """A GPU this process may use: NVML sees one and CUDA_VISIBLE_DEVICES does not hide them all."""
    lib = _nvml()
    try:
        return bool(lib and visible_count(lib) > 0)
    except Exception:
        return False


def best_device() -> str:
    return "cuda" if cuda_available() else "cpu"


def _visible_list() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list (empty: no GPU visible), or None where it is not set."""
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        return None
    return [v.strip() for v in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if v.strip()]


def visible_nvml_index(cuda_index: int) -> int | str:
    """The NVML device behind CUDA device `cuda_index`: NVML numbers every GPU of the machine,
    CUDA only those CUDA_VISIBLE_DEVICES lists (by index or UUID), so the two differ whenever it
    is set. Returns an NVML index, or a UUID (prefix) string."""
    visible = _visible_list()
    if not visible or cuda_index >= len(visible):
        return cuda_index
    entry = visible[cuda_index]
    return int(entry) if entry.isdigit() else entry


def device_handle(lib, cuda_index: int = 0):
    """NVML handle of CUDA device `cuda_index` (see visible_nvml_index)."""
    target = visible_nvml_index(cuda_index)
    if isinstance(target, int):
        return lib.nvmlDeviceGetHandleByIndex(target)
    for i in range(lib.nvmlDeviceGetCount()):  # UUIDs may be given by unique prefix
        handle = lib.nvmlDeviceGetHandleByIndex(i)
        if _text(lib.nvmlDeviceGetUUID(handle)).startswith(target):
            return handle
    raise LookupError(f"no GPU with UUID {target}")


def visible_count(lib) -> int:
    """How many GPUs CUDA will see here (CUDA_VISIBLE_DEVICES narrows NVML's count)."""
    total, visible = int(lib.nvmlDeviceGetCount()), _visible_list()
    return total if visible is None else min(total, len(visible))


def gpu_info(index: int = 0) -> dict[str, Any]:
    lib = _nvml()
    if lib is None:
        return {}
    try:
        handle = device_handle(lib, index)
        name = lib.nvmlDeviceGetName(handle)
        info: dict[str, Any] = {
            "name": name.decode() if isinstance(name, bytes) else name,
            "driver": _text(lib.nvmlSystemGetDriverVersion()),
            "memory_total_bytes": int(lib.nvmlDeviceGetMemoryInfo(handle).total),
            "count": visible_count(lib),
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
