"""Launchers: run a config in this process, or in a child process (the default) so that a
crash, an abort or an OOM that poisons the framework becomes a failed run with its reason.

The child is started with 'spawn' (no inherited framework state) and sends progress messages
and, last, its record through a queue. A child that sends nothing for too long is asked for its
Python stacks (faulthandler, SIGUSR1, written into a pipe: no file to leave behind) before it is
killed, so a hang says where it hung. The child ends with its parent (`tbd.harness.lifeline`):
killing `tbd`, even with SIGKILL, leaves no training process running. A child killed by SIGKILL is
called out of memory only on evidence (`tbd.harness.oom_evidence`).
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import multiprocessing as mp
import os
import queue
import signal
from collections.abc import Callable

from tbd.config import RunConfig
from tbd.harness import lifeline, oom_evidence
from tbd.harness.distributed import launch_distributed
from tbd.harness.runner import execute, hang_for_tests
from tbd.topology import world_size
from tbd.results.record import RunRecord, new_run_id


_stacks_pipe = None  # the child's end of the stacks pipe, kept open for faulthandler


def _child(config_dict: dict, run_id: str, out: "mp.Queue", stacks=None, parent_pid: int | None = None) -> None:
    global _stacks_pipe
    if parent_pid is not None:  # a process of its own (not a test calling this): Ctrl-C is the parent's until it exits
        lifeline.end_with_parent(parent_pid)
        lifeline.ignore_interrupts()
    with lifeline.interrupts_left_to_parent():
        if stacks is not None and hasattr(signal, "SIGUSR1"):
            _stacks_pipe = stacks
            faulthandler.register(signal.SIGUSR1, file=stacks.fileno(), all_threads=True)
        if os.environ.get("TBD_INJECT_FAULT") == "hang":
            hang_for_tests()
        config = RunConfig(**config_dict)
        record = execute(config, progress=lambda p: out.put(("progress", p)), run_id=run_id)
        out.put(("record", record))


def _warm_child(framework_module: str, out: "mp.Queue", stacks, parent_pid: int, jobs) -> None:
    """A child started ahead of its run: it imports the framework (seconds of a trial's build)
    while the run before it goes on, then takes one job and runs it as `_child` does."""
    import importlib

    lifeline.end_with_parent(parent_pid)
    # Ctrl-C is the parent's for this process's whole life: while it imports, while it waits for a
    # job (the parent closes the pipe on its way out: EOFError below), during the run and at exit.
    lifeline.ignore_interrupts()
    with contextlib.suppress(ImportError):
        importlib.import_module(framework_module)  # a failure shows again, in the run, where it is reported
    if ready := os.environ.get("TBD_TEST_WARM_READY_FILE"):  # test hook: a line per child now waiting for its job
        with open(ready, "a") as f:
            f.write(f"{os.getpid()}\n")
    try:
        config_dict, run_id = jobs.recv()
    except EOFError:  # closed unused
        return
    _child(config_dict, run_id, out, stacks, None)


class _Warm:
    """One started child waiting for a run of its framework, with the queue and pipes it was
    given at start (multiprocessing hands them over only then)."""

    def __init__(self, framework: str, module: str):
        ctx = mp.get_context("spawn")
        self.framework, self.module, self.env = framework, module, dict(os.environ)
        self.out = ctx.Queue()
        self.stacks, stacks_writer = ctx.Pipe(duplex=False)
        jobs_reader, self.jobs = ctx.Pipe(duplex=False)
        # Not a daemon: a run may start processes of its own (loader workers, a3c's actors).
        self.process = ctx.Process(target=_warm_child, args=(module, self.out, stacks_writer, os.getpid(), jobs_reader),
                                   name=f"tbd-warm-{framework}")
        with lifeline.interrupts_held():
            self.process.start()
        stacks_writer.close()
        jobs_reader.close()

    def usable_for(self, config: RunConfig) -> bool:
        """Only for a run of its framework under the environment it was started in (a variable a
        framework reads at import must not differ from what the run would have seen)."""
        return self.framework == config.framework and self.env == dict(os.environ) and self.process.is_alive()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.jobs.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.out.close()
        self.stacks.close()


_warm: dict[str, _Warm] = {}  # framework -> the child started ahead for its next run (only inside `warm_children`)


@atexit.register
def _close_warm() -> None:
    """No started child outlives its parent's interpreter waiting for a job (multiprocessing would
    wait for it at exit)."""
    while _warm:
        _warm.popitem()[1].close()


@contextlib.contextmanager
def warm_children(framework: str):
    """Within this block, each isolated run of `framework` takes a child started ahead of it (the
    framework already imported) and starts the next one as it begins: a series of short runs
    (tbd tune's trials, max-batch probes) saves the framework's import per run. Each run is still
    a fresh process of its own; a run whose environment differs from the child's gets a new one."""
    from tbd import registry

    _warm[framework] = _Warm(framework, f"{registry.framework(framework).package}.session")
    try:
        yield
    finally:
        held = _warm.pop(framework, None)
        if held is not None:
            held.close()


def _take_warm(config: RunConfig) -> _Warm | None:
    """The child started ahead for this run (inside `warm_children`), None where there is none or
    it does not fit; the next one is started at once, while this run builds."""
    held = _warm.pop(config.framework, None)
    if held is None:
        return None
    _warm[config.framework] = _Warm(config.framework, held.module)
    if not held.usable_for(config):
        held.close()
        return None
    return held


def run_in_process(config: RunConfig, progress: Callable[[dict], None] | None = None) -> RunRecord:
    return execute(config, progress)


def run_isolated(config: RunConfig, progress: Callable[[dict], None] | None = None, timeout_s: float | None = None) -> RunRecord:
    run_id = new_run_id(config.workload, config.framework)
    oom_before = oom_evidence.oom_kill_counters()
    warm = _take_warm(config)
    if warm is not None:  # started ahead (inside `warm_children`): send it the job
        child, out, stacks = warm.process, warm.out, warm.stacks
        warm.jobs.send((config.to_dict(), run_id))
        warm.jobs.close()
    else:
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        stacks, stacks_writer = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_child, args=(config.to_dict(), run_id, out, stacks_writer, os.getpid()), name=f"tbd-{run_id}")
        with lifeline.interrupts_held():
            child.start()
        stacks_writer.close()
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
                    return _died(config, run_id, child.exitcode, child.pid, oom_before)
                if waited > deadline:
                    stack = _stacks_of(child, stacks)
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
        stacks.close()


def _stacks_of(child, stacks) -> str:
    """Ask a stalled child for the Python stacks of all its threads (faulthandler writes them
    into the pipe); read until the dump has been quiet for a moment."""
    if not hasattr(signal, "SIGUSR1") or child.pid is None:
        return ""
    chunks: list[bytes] = []
    with contextlib.suppress(OSError):
        os.kill(child.pid, signal.SIGUSR1)
        wait = 2.0  # for the first bytes
        while stacks.poll(wait):
            data = os.read(stacks.fileno(), 65536)
            if not data:
                break
            chunks.append(data)
            wait = 0.3  # the rest of the dump
    return b"".join(chunks).decode("utf-8", "replace")


def _innermost(stacks: str) -> str:
    """`file:line in function` of the innermost frame of the thread that was running tbd's step:
    the one faulthandler marks "Current thread" (the signal's thread; other threads, such as the
    lifeline's watcher, are listed too), innermost frame first."""
    lines = [line.strip() for line in stacks.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("Current thread")), 0)
    for line in lines[start:]:
        if line.startswith("File "):
            return line.replace("File ", "", 1).replace('", line ', ":").replace('"', "")
    return "unknown"


def _died(config: RunConfig, run_id: str, exitcode: int | None, pid: int | None = None, oom_before: dict | None = None) -> RunRecord:
    if exitcode is None or exitcode >= 0:
        return RunRecord.failed(config, "crash", f"the run's process exited with code {exitcode} before reporting a result", run_id)
    name = signal.Signals(-exitcode).name if -exitcode in signal.Signals._value2member_map_ else str(-exitcode)
    if -exitcode != getattr(signal, "SIGKILL", 9):
        return RunRecord.failed(config, "crash", f"the run's process was killed by {name}", run_id)
    # SIGKILL: the OOM killer's signal, but also a user's or a scheduler's. Decide from evidence.
    found, evidence = oom_evidence.verdict(pid or -1, oom_before or {}, oom_evidence.oom_kill_counters(), oom_evidence.kernel_log())
    if found == "oom":
        message = f"out of memory at batch size {config.batch_size}: the run's process was killed by the kernel ({evidence}); try a smaller --batch-size"
        return RunRecord.oom(config, message, run_id, oom_evidence=evidence)
    if found == "not-oom":
        message = f"the run's process was killed by SIGKILL, not for lack of memory ({evidence}): stopped by a user, a job scheduler or a watchdog?"
    else:
        message = f"the run's process was killed by SIGKILL; whether it ran out of memory is unknown ({evidence})"
    return RunRecord.failed(config, "crash", message, run_id, oom_evidence=evidence, oom=found)


def launch(config: RunConfig, progress: Callable[[dict], None] | None = None) -> RunRecord:
    """Run a validated config the way it asks: several ranks through torchrun, a child in another
    interpreter (config.python), else a child process (or this process with isolate=False).
    Returns its record, failed runs included."""
    if config.python is not None:  # another environment (tbd run --python/--env)
        from tbd.harness.child_process import run_in_fresh_interpreter

        return run_in_fresh_interpreter(config, progress)
    if world_size(config) > 1:  # several ranks: torchrun (tbd.harness.distributed)
        return launch_distributed(config, progress)
    return run_isolated(config, progress) if config.isolate else run_in_process(config, progress)
