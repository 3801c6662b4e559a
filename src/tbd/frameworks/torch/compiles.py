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

from tbd.frameworks.base import CompileTally

_totals = {"compiles": 0, "seconds": 0.0}
_started: list[float] = []  # perf_counter of the compilation in progress (nested ones are not reported)


def _on_start(*_args) -> None:
    _started.append(time.perf_counter())


def _on_end(*_args) -> None:
    _totals["compiles"] += 1
    if _started:
        _totals["seconds"] += time.perf_counter() - _started.pop()


def listen() -> None:
    """Register the counting callbacks, once (torch._dynamo.reset() drops them, so checked anew)."""
    from torch._dynamo.callback import callback_handler

    if _on_end not in callback_handler.end_callbacks:
        _started.clear()
        callback_handler.register_start_callback(_on_start)
        callback_handler.register_end_callback(_on_end)


class CompileCounter(CompileTally):
    """Compilations and their seconds inside `counting()` blocks (a session's step calls)."""

    def __init__(self) -> None:
        listen()
        super().__init__(_totals)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        listen()
        with super().counting():
            yield
