"""Child processes of the GPU benches, each in a process group of its own: a child that runs past
its time is stopped with everything it started (a `tbd run` and its probes or workers), which
would otherwise hold GPU memory under the next row or point."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def start(argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """`argv` in a new session (its own process group), as subprocess.Popen takes it."""
    return subprocess.Popen(argv, start_new_session=True, **popen_kwargs)


def wait_or_stop(child: subprocess.Popen, timeout: float | None) -> int | None:
    """The child's exit code, or None where it ran past `timeout` seconds and its whole process
    group was killed."""
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return None
