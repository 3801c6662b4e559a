"""bench/children.py: a child past its time is stopped with the processes it started."""

from __future__ import annotations

import os
import sys
import time


def test_a_child_past_its_time_is_stopped_with_its_own_children(load_bench, tmp_path):
    children = load_bench("children")
    pid_file = tmp_path / "grandchild.pid"
    # the child starts a grandchild that would outlive it, writes its pid, then waits forever
    script = ("import subprocess, sys, time; "
              "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pid_file)!r}, 'w').write(str(g.pid)); time.sleep(60)")
    child = children.start([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started its grandchild"
        time.sleep(0.05)
    assert children.wait_or_stop(child, timeout=0.2) is None
    grandchild = int(pid_file.read_text())
    for _ in range(100):  # SIGKILL is delivered at once; the reaping by init may take a moment
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        with open(f"/proc/{grandchild}/stat") as stat:  # a zombie is gone too, only not yet reaped
            assert stat.read().split()[2] == "Z"


def test_a_child_that_ends_in_time_gives_its_exit_code(load_bench):
    children = load_bench("children")
    assert children.wait_or_stop(children.start([sys.executable, "-c", "raise SystemExit(3)"]), timeout=30) == 3
