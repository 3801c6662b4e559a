"""torch.compile's compilations, counted for the harness (`compile_count`, `compile_s`).

Dynamo calls its compilation callbacks (torch._dynamo.callback) around every compilation: a
frame traced for the first time or again after a guard failed (a recompilation), a backward
graph compiled at the first backward, a CUDA graph recorded (mode reduce-overhead). The
callbacks are process-wide, so a session counts only what happens inside its own step calls,
as the JAX plugin does with jax.monitoring. `tbd.harness.measure.recompilations` reads the
count after each chunk of steps: a compilation after every resident batch has been stepped once
is a step recompiled for a shape it has already seen (`recompilation_defect` in the record).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

_totals = {"compiles": 0, "seconds": 0.0}
_started: list[float] = []  # perf_counter of the compilation in progress (nested ones are not reported)
_listening = False


def _on_start(*_args) -> None:
    _started.append(time.perf_counter())


def _on_end(*_args) -> None:
    _totals["compiles"] += 1
    if _started:
        _totals["seconds"] += time.perf_counter() - _started.pop()


def listen() -> None:
    """Register the counting callbacks once per process."""
    global _listening
    if not _listening:
        from torch._dynamo.callback import on_compile_end, on_compile_start

        on_compile_start(_on_start)
        on_compile_end(_on_end)
        _listening = True


class CompileCounter:
    """Compilations and their seconds inside `counting()` blocks (a session's step calls)."""

    def __init__(self) -> None:
        listen()
        self.count = 0
        self.seconds = 0.0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        compiles, seconds = _totals["compiles"], _totals["seconds"]
        try:
            yield
        finally:
            self.count += _totals["compiles"] - compiles
            self.seconds += _totals["seconds"] - seconds
