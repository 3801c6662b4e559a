"""What the harness needs from a framework adapter (no framework imported here).

An adapter module exposes `open_session(config, spec, impl) -> Session`. The session owns the
model, optimizer and synthetic data on the device, and times steps the cheapest correct way for
its framework (CUDA events without per-step host syncs in PyTorch, `block_until_ready` in JAX).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class StepTimes:
    seconds: list[float]  # wall time of each step, device-synchronized at the window's edges
    units: list[float]  # throughput units each step consumed (images, tokens, ...)
    samples: list[float]  # samples each step consumed


@dataclass
class SessionInfo:
    device_name: str
    framework_version: str
    method: dict[str, Any] = field(default_factory=dict)  # how steps are timed, compiled, fed
    num_parameters: int | None = None


class Session(Protocol):
    info: SessionInfo

    def run_steps(self, n: int) -> StepTimes:
        """Run n training steps; return their times after one synchronization at the end."""

    def last_loss(self) -> float:
        """Loss of the most recent step (synchronizes)."""

    def memory(self) -> dict[str, int | None]:
        """Peak and current device-memory readings of the framework's allocator, in bytes."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class BuildContext:
    """What a workload implementation gets to build its model, optimizer and data."""

    hparams: dict[str, Any]  # the flavor's hyperparameters with the run's overrides
    batch_size: int
    device: str
    precision: str
    seed: int
    flavor: str

    @classmethod
    def for_run(cls, config, batch_size: int) -> "BuildContext":
        """The context of a run; `batch_size` is this process's share of the global batch."""
        return cls(hparams=config.resolved_hparams(), batch_size=batch_size, device=config.device,
                   precision=config.precision, seed=config.seed, flavor=config.flavor)
