"""JAX part for a user's own step (`tbd.measure`): a host clock that waits for the step's output
(`jax.block_until_ready`) after each step, since JAX dispatches asynchronously."""

from __future__ import annotations

import jax

from tbd.frameworks.base import HostClock


def step_clock(device: str):
    return HostClock(lambda output: jax.block_until_ready(output) if output is not None else None)
