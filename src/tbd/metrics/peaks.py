"""Peak dense FLOP rates by device and precision, each with its source.

MFU divides achieved model FLOP/s by these numbers. A device that is not in the table gets no
MFU (None), never a guess: `tbd` says 'unknown peak' instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    tflops: dict[str, float]  # precision -> dense TFLOP/s
    source: str


_HOPPER_SXM = {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0}

# Keys are matched as whole words of the device name NVML or the framework reports (see lookup),
# so the order of this list does not matter: "h20" never catches "H200".
PEAKS: list[tuple[str, Peak]] = [
    ("h100 pcie", Peak({"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0}, "NVIDIA H100 datasheet (PCIe, dense)")),
    ("h100 nvl", Peak({"bf16": 835.0, "fp16": 835.0, "tf32": 418.0, "fp32": 60.0}, "NVIDIA H100 datasheet (NVL, dense, per GPU)")),
    ("h100", Peak(_HOPPER_SXM, "NVIDIA H100 datasheet (SXM5, dense)")),
    ("h200", Peak(_HOPPER_SXM, "NVIDIA H200 datasheet (SXM, dense)")),
    ("h20", Peak({"bf16": 148.0, "fp16": 148.0, "tf32": 74.0, "fp32": 44.0}, "NVIDIA H20 datasheet (dense)")),
    ("a100", Peak({"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, "NVIDIA A100 datasheet (dense)")),
    ("l40s", Peak({"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6}, "NVIDIA L40S datasheet (dense)")),
    ("a10g", Peak({"bf16": 70.0, "fp16": 70.0, "tf32": 35.0, "fp32": 31.2}, "NVIDIA A10G datasheet (dense)")),
    ("v100", Peak({"fp16": 125.0, "fp32": 15.7}, "NVIDIA V100 SXM2 datasheet")),
    ("t4", Peak({"fp16": 65.0, "fp32": 8.1}, "NVIDIA T4 datasheet")),
]


def _key_pattern(key: str) -> re.Pattern[str]:
    """Whole-word pattern for a key; the words of a multi-word key may be split by space, '-' or '_'."""
    words = (re.escape(word) for word in key.lower().split())
    return re.compile(r"\b" + r"[\s_-]+".join(words) + r"\b")


def lookup(device_name: str | None) -> Peak | None:
    """The entry whose key matches the device name as whole words; the longest such key wins.

    Whole words keep "h20" off "NVIDIA H200"; longest-wins lets "h100 pcie" beat "h100" for
    "NVIDIA H100 PCIe" whatever the order of PEAKS.
    """
    if not device_name:
        return None
    lowered = device_name.lower()
    matches = [(len(key), key, peak) for key, peak in PEAKS if _key_pattern(key).search(lowered)]
    if not matches:
        return None
    return max(matches, key=lambda m: (m[0], m[1]))[2]


def peak_flops(device_name: str | None, precision: str) -> tuple[float | None, str]:
    """(peak FLOP/s or None, source or the reason it is missing)."""
    peak = lookup(device_name)
    if peak is None:
        return None, f"unknown peak for device {device_name!r}"
    if precision not in peak.tflops:
        return None, f"{device_name} has no {precision} entry"
    return peak.tflops[precision] * 1e12, peak.source
