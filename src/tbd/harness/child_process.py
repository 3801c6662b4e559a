"""A run in a fresh interpreter: `python -m tbd.harness.child_process`, for the Python API.

multiprocessing's 'spawn' (the CLI's child, `launcher.run_isolated`) starts the child by
re-importing the caller's `__main__`: from a user's script without `if __name__ == "__main__"`
that runs the script again inside the child, which then fails while bootstrapping. Here the child
is a plain subprocess running this module, so nothing of the caller is imported: scripts without
a main guard, `python -c`, stdin and notebooks all work.

The parent writes the config as JSON to the child's stdin; the child sends JSON lines ({"progress":
...} while it runs, {"record": ...} last) through a pipe of its own (its stdout stays the
user's). A child that dies or goes silent becomes a failed record, as with `run_isolated`.

The child may be another interpreter (`RunConfig.python`, `tbd run --python/--env`): then it runs
its own environment's tbd and framework (`tbd.results.interpreters` checked both beforehand), and
this tbd's source is not put on its path. Either way the child ends with its parent
(`tbd.harness.lifeline`).
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tbd.config import RunConfig
from tbd.harness import lifeline, oom_evidence
from tbd.harness.launcher import _died, _innermost, _stacks_of
from tbd.harness.runner import execute
from tbd.results.record import RunRecord, new_run_id

POLL_S = 0.5


def run_in_fresh_interpreter(config: RunConfig, progress: Callable[[dict], None] | None = None, timeout_s: float | None = None) -> RunRecord:
    """Run a validated config in a new `python -m tbd.harness.child_process` (with `config.python`
    where set); its record, failed runs included."""
    run_id = new_run_id(config.workload, config.framework)
    stacks = tempfile.NamedTemporaryFile(prefix="tbd-stacks-", suffix=".txt", delete=False)
    stacks.close()
    read_fd, write_fd = os.pipe()
    if config.python is None:
        # The child imports this tbd, whatever the child's working directory or sys.path would say.
        src = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    else:  # another environment: its own tbd and framework
        env = dict(os.environ)
    env[lifeline.PARENT_ENV] = str(os.getpid())
    oom_before = oom_evidence.oom_kill_counters()
    child = subprocess.Popen([config.python or sys.executable, "-m", "tbd.harness.child_process", str(write_fd), run_id, stacks.name],
                             stdin=subprocess.PIPE, pass_fds=(write_fd,), env=env)
    os.close(write_fd)
    messages: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(read_fd, messages), daemon=True)
    reader.start()
    try:
        child.stdin.write(json.dumps(config.to_dict()).encode())
        child.stdin.close()
    except BrokenPipeError:  # the child died at once; its exit code says why below
        pass
    deadline = timeout_s if timeout_s is not None else config.max_time_s * 3 + 600
    waited = 0.0
    try:
        while True:
            try:
                message = messages.get(timeout=POLL_S)
            except queue.Empty:
                waited += POLL_S
                if waited > deadline:
                    stack = _stacks_of(child, stacks.name)
                    child.kill()
                    child.wait()
                    where = f" (stalled in {_innermost(stack)})" if stack else ""
                    message = f"run sent nothing for {deadline:.0f} s{where}; raise max_time_s or check for a hang"
                    return RunRecord.failed(config, "timeout", message, run_id, **({"stacks": stack} if stack else {}))
                continue
            if message is None:  # the pipe closed without a record: the child died
                return _died(config, run_id, child.wait(), child.pid, oom_before)
            if "progress" in message:
                waited = 0.0
                if progress:
                    progress(message["progress"])
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=60)
                return RunRecord.from_dict(message["record"])
    except KeyboardInterrupt:
        child.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)
        if child.poll() is None:
            child.kill()
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(stacks.name)


def _read_lines(fd: int, messages: queue.Queue) -> None:
    with os.fdopen(fd, "r") as pipe:
        for line in pipe:
            with contextlib.suppress(json.JSONDecodeError):
                messages.put(json.loads(line))
    messages.put(None)


def _jsonable(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def main(argv: list[str]) -> int:
    fd, run_id, stack_path = argv
    if os.environ.get(lifeline.PARENT_ENV, "").isdigit():  # ends with the process that started it
        lifeline.end_with_parent(int(os.environ[lifeline.PARENT_ENV]))
    with lifeline.interrupts_left_to_parent():
        if hasattr(signal, "SIGUSR1"):
            faulthandler.register(signal.SIGUSR1, file=open(stack_path, "w"), all_threads=True)
        out = os.fdopen(int(fd), "w", buffering=1)

        def send(kind: str, payload: Any) -> None:
            out.write(json.dumps({kind: payload}, default=_jsonable) + "\n")

        config = RunConfig(**json.load(sys.stdin))
        record = execute(config, progress=lambda p: send("progress", p), run_id=run_id)
        send("record", record.to_dict())
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
