"""PyTorch parts for a user's own step (`tbd.measure`) and for counted FLOPs.

`step_clock(device)`: on CUDA, an event after each step and one host sync at `stop()`, as the
session times its own steps (no per-step stall); on the CPU, ops are synchronous and the host
clock is exact. `count_flops(fn)`: FLOPs of one call, by `torch.utils.flop_counter`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from tbd.frameworks.base import HostClock


class CudaEventClock:
    def __init__(self, device: torch.device):
        self.device = device
        self.events: list[torch.cuda.Event] = []

    def start(self) -> None:
        self.events = [torch.cuda.Event(enable_timing=True)]
        self.events[0].record()

    def lap(self, output: Any) -> None:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.events.append(event)

    def stop(self) -> list[float]:
        self.events[-1].synchronize()
        return [a.elapsed_time(b) / 1e3 for a, b in zip(self.events, self.events[1:])]


def step_clock(device: str):
    dev = torch.device(device)
    return CudaEventClock(dev) if dev.type == "cuda" else HostClock()


def count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of one call of `fn` (matrix products and convolutions, forward and backward as run)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())
