"""Errors users can act on: each carries one line that names the fix.

`UsageError` is bad input (exit code 2, nothing written); `RunFailure` is a run that started
and failed (OOM, crash, NaN), which is stored as a failed record.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TbdError(Exception):
    """Base class; `str(err)` is the one line printed to the user."""

    exit_code = 1


class UsageError(TbdError):
    """Bad input: unknown name, impossible size, missing framework or device."""

    exit_code = 2


class StoreError(TbdError):
    """A finished run the results store could not take (disk full, store damaged meanwhile); the
    message says where its record was saved instead. Exit code 1: the measurement happened."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the `tbd` command's handler. A KeyboardInterrupt, so
    every cleanup written for Ctrl-C (stopping children, keeping the store consistent) runs for
    it too; `tbd` then exits with 143 (128 + SIGTERM)."""


class RunFailure(TbdError):
    """A run that started and failed; `kind` is 'oom', 'crash', 'nan', 'timeout' or 'error'."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind


def closest(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.5) -> str:
    """' (did you mean: a, b?)' for the nearest valid names, or '' when none is near."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)
    return f" (did you mean: {', '.join(matches)}?)" if matches else ""


def unknown(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UsageError:
    choices = sorted(choices)
    near = closest(name, choices)
    tail = hint or f"valid: {', '.join(choices)}"
    return UsageError(f"unknown {kind} '{name}'{near}; {tail}")
