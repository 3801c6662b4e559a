"""Launchers: run a config in this process, or in a child process (the default) so that a
crash, an abort or an OOM that poisons the framework becomes a failed run with its reason.

The child is started with 'spawn' (no inherited framework state) and sends progress messages
and, last, its record through a queue. A child that sends nothing for too long is asked for its
Python stacks (faulthandler, SIGUSR1) before it is killed, so a hang says where it hung.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing as mp
import os
import queue
import signal
import tempfile
import time
from collections.abc import Callable

from tbd.config import RunConfig
from tbd.harness.distributed import launch_distributed
from tbd.harness.runner import execute
from tbd.topology import world_size
from tbd.results.record import RunRecord, new_run_id


def _child(config_dict: dict, run_id: str, out: "mp.Queue", stack_path: str | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    if stack_path and hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, file=open(stack_path, "w"), all_threads=True)
    if os.environ.get("TBD_INJECT_FAULT") == "hang":  # test hook: a run that never reports
        time.sleep(3600)
    config = RunConfig(**config_dict)
    record = execute(config, progress=lambda p: out.put(("progress", p)), run_id=run_id)
    out.put(("record", record))


def run_in_process(config: RunConfig, progress: Callable[[dict], None] | None = None) -> RunRecord:
    return execute(config, progress)


def run_isolated(config: RunConfig, progress: Callable[[dict], None] | None = None, timeout_s: float | None = None) -> RunRecord:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    run_id = new_run_id(config.workload, config.framework)
    stacks = tempfile.NamedTemporaryFile(prefix="tbd-stacks-", suffix=".txt", delete=False)
    stacks.close()
    child = ctx.Process(target=_child, args=(config.to_dict(), run_id, out, stacks.name), name=f"tbd-{run_id}")
    child.start()
    # Compilation can be slow; allow generous time beyond the measurement budget.
    deadline = timeout_s if timeout_s is not None else config.max_time_s * 3 + 600
    waited = 0.0
    try:
        while True:
            try:
                kind, payload = out.get(timeout=0.5)
            except queue.Empty:
                waited += 0.5
                if not child.is_alive():
                    return _died(config, run_id, child.exitcode)
                if waited > deadline:
                    stack = _stacks_of(child, stacks.name)
                    child.kill()
                    where = f" (stalled in {_innermost(stack)})" if stack else ""
                    message = f"run sent nothing for {deadline:.0f} s{where}; raise --max-time or check for a hang"
                    return RunRecord.failed(config, "timeout", message, run_id, **({"stacks": stack} if stack else {}))
                continue
            if kind == "progress":
                waited = 0.0
                if progress:
                    progress(payload)
            else:
                child.join(timeout=60)
                return payload
    except KeyboardInterrupt:
        child.terminate()
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
        raise
    finally:
        out.close()
        with contextlib.suppress(OSError):
            os.unlink(stacks.name)


def _stacks_of(child, path: str) -> str:
    """Ask a stalled child for the Python stacks of all its threads (faulthandler writes them)."""
    if not hasattr(signal, "SIGUSR1") or child.pid is None:
        return ""
    with contextlib.suppress(OSError):
        os.kill(child.pid, signal.SIGUSR1)
        for _ in range(20):
            time.sleep(0.1)
            text = open(path).read()
            if text.strip():
                time.sleep(0.2)  # let the dump finish
                return open(path).read()
    return ""


def _innermost(stacks: str) -> str:
    """`file:line in function` of the innermost frame of the thread that was running tbd's step
    (faulthandler lists the current thread first, innermost frame first)."""
    for line in stacks.splitlines():
        line = line.strip()
        if line.startswith("File "):
            return line.replace("File ", "", 1).replace('", line ', ":").replace('"', "")
    return "unknown"


def _died(config: RunConfig, run_id: str, exitcode: int | None) -> RunRecord:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.Signals._value2member_map_ else str(-exitcode)
        reason = f"the run's process was killed by {name}"
        if name == "SIGKILL":
            reason += " (often the host running out of memory; try a smaller --batch-size)"
    else:
        reason = f"the run's process exited with code {exitcode} before reporting a result"
    return RunRecord.failed(config, "crash", reason, run_id)


def launch(config: RunConfig, progress: Callable[[dict], None] | None = None) -> RunRecord:
    """Run a validated config the way it asks: several ranks through torchrun, else a child
    process (or this process with isolate=False). Returns its record, failed runs included."""
    if world_size(config) > 1:  # several ranks: torchrun (tbd.harness.distributed)
        return launch_distributed(config, progress)
    return run_isolated(config, progress) if config.isolate else run_in_process(config, progress)
