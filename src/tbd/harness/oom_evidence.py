"""Was a killed run out of memory? Decided from evidence, and "unknown" when there is none.

A run's process that dies of SIGKILL may have met the kernel's OOM killer or a cgroup's memory
limit, but also a user, a job scheduler or a watchdog. Calling every SIGKILL an OOM makes a sweep
skip batches that would fit and keeps `--retry-failed` from retrying. The launcher reads what this
machine lets it read:
- the kernel log (/dev/kmsg; usually root only): an OOM kill names the pid ("Killed process
  1234" / "oom-kill:...,pid=1234,"); readable and silent about the pid means not an OOM;
- the memory cgroup's oom_kill counter (cgroup v2 memory.events, v1 memory.oom_control) before
  and after the run, up the cgroup tree: a rise means a process of the cgroup was OOM-killed.
With neither readable the answer is "unknown", and the record says so.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

KMSG = "/dev/kmsg"
CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory")


def oom_kill_counters() -> dict[str, int]:
    """{file: oom_kill count} of the memory cgroups of this process and their ancestors."""
    out: dict[str, int] = {}
    for path in _cgroup_files():
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        m = re.search(r"^oom_kill (\d+)$", text, re.M)
        if m:
            out[path] = int(m.group(1))
    return out


def _cgroup_files() -> list[str]:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    files = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers and "memory" not in controllers.split(","):
            continue
        name = "memory.events" if not controllers else "memory.oom_control"
        parts = [p for p in rel.split("/") if p]
        for depth in range(len(parts), -1, -1):  # own cgroup first, then each ancestor
            for root in CGROUP_ROOTS:
                files.append(os.path.join(root, *parts[:depth], name))
    return list(dict.fromkeys(files))


def kernel_log(limit: int = 200_000) -> list[str] | None:
    """The kernel's log lines still in its buffer, or None where it cannot be read."""
    try:
        fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    lines: list[str] = []
    try:
        while len(lines) < limit:
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break  # read to the end
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten while reading: go on
                    continue
                return None if not lines else lines
            if not chunk:
                break
            lines.append(chunk.decode("utf-8", "replace").split(";", 1)[-1].strip())
    finally:
        os.close(fd)
    return lines


def verdict(pid: int, before: dict[str, int], after: dict[str, int], log: list[str] | None) -> tuple[str, str]:
    """('oom' | 'not-oom' | 'unknown', the evidence in words) for a process killed by SIGKILL.
    The kernel log names pids as the host sees them, which a container may not: a rise of the
    cgroup's counter counts even when the log does not name this pid."""
    if log is not None:
        mine = re.compile(rf"(Killed process {pid}\b|oom-kill:.*[,:]pid={pid}\b)")
        hit = next((line for line in log if mine.search(line)), None)
        if hit:
            return "oom", f"kernel log: {hit[:160]}"
    rose = {f: after[f] - before[f] for f in after if f in before and after[f] > before[f]}
    if rose:
        path, n = next(iter(rose.items()))
        return "oom", f"the memory cgroup's oom_kill counter rose by {n} during the run ({path})"
    if log is not None:
        return "not-oom", f"the kernel log has no out-of-memory kill of pid {pid}"
    if after:
        return "not-oom", "the memory cgroup's oom_kill counter did not change during the run"
    return "unknown", "neither the kernel log nor a memory cgroup's counters can be read here"
