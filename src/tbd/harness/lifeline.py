"""Processes that end with the `tbd` that started them.

A run's child process, and the torchrun launcher and workers of a distributed run, must not
outlive `tbd`: killed with SIGKILL, `tbd` cannot stop them, so each watches its parent. On Linux
the kernel does it (prctl PR_SET_PDEATHSIG: a signal when the parent exits); everywhere, a
daemon thread also checks twice a second that the parent (and the `tbd` process named in
$TBD_LAUNCHER_PID, for torchrun's workers) is still there and ends the process when it is not.

`python -m tbd.harness.lifeline PARENT_PID SIGNAL -- CMD...` arms the signal and then execs CMD
(it survives exec): that is how torchrun is started.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
CHECK_S = 0.5
ORPHAN_EXIT = 128 + signal.SIGTERM  # how an orphan ends: as if terminated
LAUNCHER_ENV = "TBD_LAUNCHER_PID"
PARENT_ENV = "TBD_PARENT_PID"  # the process a `python -m tbd.harness.child_process` child ends with


@contextlib.contextmanager
def interrupts_left_to_parent():
    """SIGINT ignored while a run's child works: Ctrl-C reaches the whole process group, and the
    parent decides what it means (it stops the child and keeps the store consistent). The previous
    handler comes back on the way out, so running a child's entry point in a process of its own
    (a test, a tool) does not leave that process deaf to Ctrl-C, or its own children, which inherit
    an ignored SIGINT."""
    previous = signal.getsignal(signal.SIGINT)
    ignore_interrupts()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def ignore_interrupts() -> None:
    """SIGINT ignored from now on, and let go of where `interrupts_held` blocked it: a Ctrl-C
    that arrived while this process started is dropped, not raised."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def interrupts_held():
    """SIGINT blocked in this thread while a child process is started: a Ctrl-C meanwhile waits and
    reaches this process on the way out (not lost). The child inherits the block through its exec,
    so its interpreter's start-up, before the child can ignore SIGINT (`ignore_interrupts`), cannot
    turn a Ctrl-C into a KeyboardInterrupt traceback."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send `sig` to this process when its parent exits; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def end_with_parent(parent_pid: int, launcher_pid: int | None = None, sig: int | None = signal.SIGKILL) -> None:
    """Call first thing in a child: it ends (within CHECK_S) once `parent_pid` is no longer its
    parent, or once `launcher_pid` (a grandparent) has gone. `sig=None` leaves the kernel out:
    Linux sends the signal when the parent's *thread* that started the child exits, which is only
    safe when that thread lives as long as the child (true of tbd's launchers, not known of
    torchrun's)."""
    if sig is not None:
        set_parent_death_signal(sig)
    if _orphaned(parent_pid, launcher_pid):  # the parent went before the signal was armed
        os._exit(ORPHAN_EXIT)
    threading.Thread(target=_watch, args=(parent_pid, launcher_pid), name="tbd-lifeline", daemon=True).start()


def launcher_pid_from_env() -> int | None:
    value = os.environ.get(LAUNCHER_ENV, "")
    return int(value) if value.isdigit() else None


def _orphaned(parent_pid: int, launcher_pid: int | None) -> bool:
    if os.getppid() != parent_pid:
        return True
    if launcher_pid is None:
        return False
    import psutil

    return not psutil.pid_exists(launcher_pid)


def _watch(parent_pid: int, launcher_pid: int | None) -> None:
    if hasattr(signal, "pthread_sigmask"):  # signals go to the main thread (a stack dump on SIGUSR1 shows the run, not this)
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    while True:
        time.sleep(CHECK_S)
        if _orphaned(parent_pid, launcher_pid):
            os._exit(ORPHAN_EXIT)  # from this thread too: the whole process ends at once


def exec_command(argv: list[str]) -> None:
    """PARENT_PID SIGNAL -- CMD...: arm the parent-death signal, then become CMD."""
    parent, sig, sep, *cmd = argv
    if sep != "--" or not cmd:
        raise SystemExit("usage: python -m tbd.harness.lifeline PARENT_PID SIGNAL -- CMD...")
    set_parent_death_signal(getattr(signal, sig))
    if os.getppid() != int(parent):
        os._exit(ORPHAN_EXIT)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    exec_command(sys.argv[1:])
